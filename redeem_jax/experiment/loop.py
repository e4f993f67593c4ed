"""The one host loop of ``rj.run`` and ``rj.sweep``: chunks of scanned rounds, evaluation,
metric rows, progress, ε, checkpoints of the whole state pytree, resume.

A run is the loop over one point; a sweep is the same loop over G points whose state and
hyper-parameters carry a leading ``[G]`` axis (the step vmapped, the node data shared).
Between chunks of ``eval_every`` rounds the host evaluates ``models(state)``, logs one row
per point, updates the progress bar and every ``checkpoint_every`` rounds saves the state.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax import metrics as _metrics
from redeem_jax import round as _round
from redeem_jax.experiment import config as _config

__all__ = ["Loop", "checkpoint_manager", "save_state", "restore_state", "read_rows", "columns", "epsilon_spent",
           "resume_and_run"]

_FORMAT = 1  # checkpoint layout: the state's leaves in tree order, and its structure beside them


# --------------------------------------------------------------------------- #
# checkpoints of the whole state pytree
# --------------------------------------------------------------------------- #
def checkpoint_manager(workdir: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(workdir.absolute() / "checkpoints", options=options)


def _structure(state) -> str:
    return str(jax.tree.structure(state))


def save_state(mgr, step: int, state) -> None:
    """Save ``state`` (any pytree) as its leaves in tree order, with its structure beside them."""
    import orbax.checkpoint as ocp

    leaves = jax.tree.leaves(state)
    mgr.save(step, args=ocp.args.StandardSave({f"{i:05d}": v for i, v in enumerate(leaves)}), force=True)
    (Path(mgr.directory) / "structure.json").write_text(json.dumps({"format": _FORMAT, "tree": _structure(state)}))


def restore_state(mgr, template, where: str, algorithm: str):
    """The latest checkpoint, restored into the shapes and dtypes of ``template`` (a state or its
    ``jax.eval_shape``), or None. A checkpoint of another structure is refused in one line."""
    import orbax.checkpoint as ocp

    step = mgr.latest_step()
    if step is None:
        return None
    meta = Path(mgr.directory) / "structure.json"
    saved = json.loads(meta.read_text()) if meta.exists() else {}
    if saved.get("format") != _FORMAT or saved.get("tree") != _structure(template):
        raise _config.ConfigError(
            f"config.algorithm.name: the checkpoint in {where} holds the state of another algorithm or layout than "
            f"{algorithm!r} with this config; use a new --workdir or set config.resume=False (which clears it)")
    leaves, treedef = jax.tree.flatten(template)
    abstract = {f"{i:05d}": ocp.utils.to_shape_dtype_struct(v) for i, v in enumerate(leaves)}
    for i, (v, a) in enumerate(zip(leaves, abstract.values())):
        if tuple(v.shape) != tuple(a.shape):
            raise _config.ConfigError(f"config: the checkpoint in {where} has other shapes; use a new workdir")
    restored = mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    return jax.tree.unflatten(treedef, [restored[f"{i:05d}"] for i in range(len(leaves))])


# --------------------------------------------------------------------------- #
# rows
# --------------------------------------------------------------------------- #
def read_rows(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["round"] <= upto]


def columns(rows: list[dict]) -> dict[str, np.ndarray]:
    keys = sorted({k for r in rows for k in r if not isinstance(r[k], str)})
    return {k: np.array([r.get(k, np.nan) for r in rows], dtype=np.float64) for k in keys}


def epsilon_spent(privacy: dict | None, sigma: float, steps: int, cache: dict) -> float | None:
    """ε after ``steps`` DP steps at noise multiplier ``sigma`` (dp-accounting, cached)."""
    if privacy is None:
        return None
    key = (float(sigma), int(steps))
    if key not in cache:
        if sigma <= 0:
            cache[key] = float("inf")
        else:
            from redeem_jax.privacy.analysis import accounting

            cache[key] = float(accounting.epsilon(sigma, privacy["sample_rate"], steps, privacy["delta"],
                                                  accountant=privacy["accountant"], sampling=privacy["sampling"]))
    return cache[key]


# --------------------------------------------------------------------------- #
# the loop
# --------------------------------------------------------------------------- #
class Loop:
    """One compiled program for one run (``points=None``) or for G points of a sweep.

    ``hp``: the step's hyper-parameters (scalars, or ``[G]`` arrays for a sweep); ``sigma``:
    each point's DP noise multiplier (for ε), or None. ``mesh``: node axis (or points)
    sharded over devices.
    """

    def __init__(self, exp, *, points: list[dict] | None = None, hp: dict | None = None, seeds=None,
                 sigma=None, mesh=None, by_point: bool = False, label: str = "", show: bool = True):
        self.exp, self.points, self.label, self.show = exp, points, label, show
        c = exp.config
        self.batched = points is not None
        self.G = len(points) if self.batched else 1
        self.hp = exp.hp_values() if hp is None else hp
        self.sigma = sigma
        data = exp.node_data
        honest = jnp.asarray(exp.honest)
        step = exp.step
        L = c.eval_every

        def chunk(state, hp, limit, data):
            return _round.scan_rounds(step, state, data, hp, limit, L)

        if self.batched:
            seeds = jnp.asarray(np.asarray(seeds, np.int64), jnp.uint32)
            self.state = jax.jit(jax.vmap(lambda s, h: exp.init_state(s, h)))(seeds, self.hp)
            vchunk = jax.vmap(chunk, in_axes=(0, 0, None, None), spmd_axis_name="sweep" if by_point else None)
            self._chunk = jax.jit(vchunk, donate_argnums=(0,) if c.perf.donate else ())
            self._models = jax.jit(jax.vmap(exp.models))
            self._evaluate = jax.jit(jax.vmap(exp.evaluate, in_axes=(0, None)))
            self._consensus = jax.jit(jax.vmap(_metrics.consensus_distance, in_axes=(0, None)))
        else:
            self.state = exp.init_state(hp=self.hp)
            self._chunk = jax.jit(chunk, donate_argnums=(0,) if c.perf.donate else ())
            self._models = exp.models  # a host-side view of the state's arrays
            self._evaluate = exp.evaluate  # jitted
            self._consensus = jax.jit(_metrics.consensus_distance)
        if mesh is not None:
            from redeem_jax.network import sharding

            if self.batched:
                self.state = sharding.shard_sweep(self.state, mesh, num_nodes=c.num_nodes)
                if by_point:
                    self.hp = sharding.shard_sweep(self.hp, mesh, num_nodes=c.num_nodes)
            else:
                self.state = sharding.shard_nodes(self.state, mesh, num_nodes=c.num_nodes)
            data = sharding.shard_nodes(data, mesh, num_nodes=c.num_nodes)
            honest = sharding.replicate(honest, mesh)
        self._data = data
        self._honest = honest

    def _eval(self, state):
        return self._evaluate(self._models(state), self._honest)

    def _consensus_now(self):
        """The honest consensus distance of the current models (once per evaluation, not per round)."""
        out = jax.device_get(self._consensus(self._models(self.state), self._honest))
        return np.asarray(out) if self.batched else float(out)

    # -- state ----------------------------------------------------------------------------
    def round(self) -> int:
        r = self.state.round
        return int(r[0] if self.batched else r)

    def restore(self, mgr, where: str):
        restored = restore_state(mgr, jax.eval_shape(lambda: self.state), where, self.exp.config.algorithm.name)
        if restored is not None:
            self.state = restored
        return restored is not None

    # -- rows -----------------------------------------------------------------------------
    def _rows(self, r: int, ev: dict, extra: dict) -> list[dict]:
        if not self.batched:
            return [{"round": r, **{k: float(v) for k, v in ev.items()}, **{k: float(v) for k, v in extra.items()}}]
        out = []
        for i, p in enumerate(self.points):
            out.append({**p, "point": i, "round": r, **{k: float(v[i]) for k, v in ev.items()},
                        **{k: float(np.asarray(v)[i]) for k, v in extra.items()}})
        return out

    def run(self, rows: list[dict], log: Callable, mgr=None, wall_offset: float = 0.0) -> list[dict]:
        """Run to ``num_rounds``, appending rows (``log(new_rows)``); returns all rows."""
        exp, c = self.exp, self.exp.config
        t0 = time.perf_counter() - wall_offset
        G = self.G
        bytes_total = np.array([r.get("bytes_sent", 0.0) for r in rows[-G:]]) if rows else np.zeros(G)
        if not self.batched:
            bytes_total = float(bytes_total[0])
        if self.round() == 0:
            ev = jax.device_get(self._eval(self.state))
            new = self._rows(0, ev, {"consensus_distance": self._consensus_now(),
                                     "wall_time": np.zeros(G) if self.batched else 0.0,
                                     "bytes_sent": np.zeros(G) if self.batched else 0.0})
            rows.extend(new)
            log(new)
        from tqdm.auto import tqdm

        desc = (f"sweep of {G} runs" + (f" [{self.label}]" if self.label else "")) if self.batched else "rounds"
        bar = tqdm(total=c.num_rounds, initial=self.round(), unit="round", desc=desc, disable=not self.show,
                   file=sys.stderr, dynamic_ncols=True, leave=True)
        limit = jnp.asarray(c.num_rounds, jnp.int32)
        eps_cache: dict = {}
        steps_per_round = exp.privacy["steps_per_round"] if exp.privacy else 1
        while self.round() < c.num_rounds:
            before = self.round()
            self.state, per_round = self._chunk(self.state, self.hp, limit, self._data)
            r = self.round()
            done = r - before
            per_round = jax.device_get(per_round)
            ev = jax.device_get(self._eval(self.state))
            cut = (slice(None), slice(0, done)) if self.batched else slice(0, done)
            axis = 1 if self.batched else 0
            sent = np.sum(np.asarray(per_round["bytes_sent"])[cut], axis=axis)
            bytes_total = bytes_total + (sent if self.batched else float(sent))
            extra = {"train_loss": np.mean(np.asarray(per_round["train_loss"])[cut], axis=axis),
                     "consensus_distance": self._consensus_now(),
                     "bytes_per_round": sent / max(done, 1), "bytes_sent": bytes_total,
                     "wall_time": np.full(G, time.perf_counter() - t0) if self.batched else time.perf_counter() - t0}
            extra.update({k: np.mean(np.asarray(v)[cut], axis=axis) for k, v in per_round.items()
                          if k not in ("train_loss", "bytes_sent", "consensus_distance")})
            if exp.privacy is not None:
                sig = self.sigma if self.sigma is not None else np.full(G, exp.privacy["noise_multiplier"])
                eps = np.array([epsilon_spent(exp.privacy, s, r * steps_per_round, eps_cache) for s in np.atleast_1d(sig)])
                extra["epsilon"] = eps if self.batched else float(eps[0])
                if self.batched:
                    extra["noise_multiplier"] = np.asarray(sig, np.float64)
            new = self._rows(r, ev, extra)
            rows.extend(new)
            log(new)
            bar.update(done)
            bar.set_postfix_str(_postfix(ev, self.batched))
            if mgr is not None and (r % c.checkpoint_every == 0 or r == c.num_rounds):
                save_state(mgr, r, self.state)
        bar.close()
        if mgr is not None:
            mgr.wait_until_finished()
            mgr.close()
        return rows


def _postfix(ev: dict, batched: bool) -> str:
    if batched:
        if "test_accuracy" in ev:
            acc = np.asarray(ev["test_accuracy"])
            return f"acc min/mean/max={acc.min():.3f}/{acc.mean():.3f}/{acc.max():.3f}"
        return ""
    acc = ev.get("test_accuracy")
    return (f"acc={float(acc):.3f} " if acc is not None else "") + f"loss={float(ev.get('test_loss', np.nan)):.4f}"


def resume_and_run(lp: Loop, wd: Path | None, rows_file: str, mgr, resume: bool, say: Callable | None = None):
    """Run ``lp`` to the end, in ``wd`` if given: resume from its latest checkpoint (keeping the rows
    logged up to it in ``rows_file``, ``say(round)`` printed), then append one row per point and
    evaluation. Returns all rows."""
    rows: list[dict] = []
    wall = 0.0
    if wd is not None:
        if mgr is not None and resume and lp.restore(mgr, str(wd)):
            rows = read_rows(wd / rows_file, lp.round())
            wall = max((r["wall_time"] for r in rows), default=0.0)
            if say is not None:
                print(say(lp.round()), file=sys.stderr)
        with open(wd / rows_file, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def log(new):
        if wd is not None:
            with open(wd / rows_file, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)

    return lp.run(rows, log, mgr, wall)
