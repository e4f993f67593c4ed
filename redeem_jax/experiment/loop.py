"""The one host loop of ``rj.run`` and ``rj.sweep``: chunks of scanned rounds, evaluation,
metric rows, progress, ε, checkpoints of the whole state pytree, resume.

A run is the loop over one point; a sweep is the same loop over G points whose state and
hyper-parameters carry a leading ``[G]`` axis (the step vmapped, the node data shared).
Between chunks of ``eval_every`` rounds the host evaluates ``models(state)``, logs one row
per point, updates the progress bar and every ``checkpoint_every`` rounds saves the state.

A workdir is trusted only as far as it verifies (docs/engine.md, "Workdirs"): every checkpoint
carries a sha256 of its arrays and a hash of the config that made it, and a restore that
fails or does not match falls back to the previous step; the rows file is appended one fsynced
batch at a time, and a torn last line is dropped on resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax import metrics as _metrics
from redeem_jax import round as _round
from redeem_jax.experiment import config as _config

__all__ = [
    "RESUME_FREE",
    "EpsilonLedger",
    "Loop",
    "WorkdirError",
    "check_horizon",
    "check_writable",
    "checkpoint_manager",
    "checkpoint_steps",
    "columns",
    "config_fingerprint",
    "dumps",
    "epsilon_spent",
    "loads",
    "read_rows",
    "restore_state",
    "resume_and_run",
    "save_state",
]

_FORMAT = 1  # checkpoint layout: the state's leaves in tree order, and its structure beside them
_SEAL = "redeem_jax"  # the key of this library's entry in a step's orbax custom metadata
# Fields a resumed run may change: they do not enter what was computed.
RESUME_FREE = ("num_rounds", "progress", "plots", "resume", "privacy.network_dp_record")


class WorkdirError(_config.ConfigError, OSError):
    """A workdir that cannot be used as it is: unwritable, not a directory, or holding history
    this run would destroy or cannot trust. Both a ``ConfigError`` (one line, exit code 2 from
    the command line) and an ``OSError`` (``filename`` is the path)."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.filename = str(path)
        self.strerror = message

    def __str__(self) -> str:
        return self.strerror


def check_writable(wd: Path) -> None:
    """Refuse, before any work, a workdir that is a file, cannot be created, or is not writable."""
    wd = Path(wd)
    if wd.exists() and not wd.is_dir():
        raise WorkdirError(wd, f"workdir {wd}: is a file, not a directory; give another --workdir")
    try:
        wd.mkdir(parents=True, exist_ok=True)
        probe = wd / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(
            e.filename or wd, f"workdir {e.filename or wd}: {e.strerror or e}; give a writable --workdir"
        ) from e


# --------------------------------------------------------------------------- #
# strict JSON: non-finite floats as null, named in the row
# --------------------------------------------------------------------------- #
_NONFINITE = "nonfinite"


def _encode(row: dict) -> dict:
    """A row as strict JSON: a non-finite float becomes ``null`` and its key is listed under
    ``"nonfinite"`` as ``"inf"``, ``"-inf"`` or ``"nan"`` (e.g. ε at σ = 0, a diverged loss)."""
    bad = {
        k: ("nan" if math.isnan(v) else "inf" if v > 0 else "-inf")
        for k, v in row.items()
        if isinstance(v, float) and not math.isfinite(v)
    }
    if not bad:
        return row
    return {**{k: (None if k in bad else v) for k, v in row.items()}, _NONFINITE: bad}


def _decode(row: dict) -> dict:
    bad = row.pop(_NONFINITE, None) or {}
    for k, v in bad.items():
        row[k] = float(v)
    return row


def _strict_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def dumps(obj, **kw) -> str:
    """``json.dumps`` that refuses NaN/Infinity (readable by any strict JSON parser)."""
    return json.dumps(obj, allow_nan=False, **kw)


def loads(text: str):
    """``json.loads`` that refuses NaN/Infinity, as a strict parser would."""
    return json.loads(text, parse_constant=_strict_constant)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- #
# checkpoints of the whole state pytree
# --------------------------------------------------------------------------- #
def checkpoint_manager(workdir: Path):
    """The orbax manager of ``workdir/checkpoints``: the last two steps kept, written synchronously."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(workdir.absolute() / "checkpoints", options=options)


def _structure(state) -> str:
    return str(jax.tree.structure(state))


def _digest(leaves) -> str:
    """sha256 over every leaf's dtype, shape and bytes, in tree order."""
    h = hashlib.sha256()
    for v in jax.device_get(list(leaves)):
        a = np.ascontiguousarray(np.asarray(v))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _seal(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def config_fingerprint(config, points=None) -> str:
    """sha256 of what a checkpoint's past depends on: the config but :data:`RESUME_FREE`, and a
    sweep's points."""
    flat = {k: v for k, v in _config._flatten(json.loads(config.to_json())).items() if k not in RESUME_FREE}
    return hashlib.sha256(json.dumps([flat, points], sort_keys=True, default=str).encode()).hexdigest()


def save_state(mgr, step: int, state, fingerprint: str = "") -> None:
    """Save ``state`` (any pytree) as its leaves in tree order, with its structure, a sha256 of
    its arrays and the config's ``fingerprint`` in the step's metadata (committed by orbax with
    the step, so a step is never without them)."""
    import orbax.checkpoint as ocp

    leaves = jax.tree.leaves(state)
    meta = {
        "format": _FORMAT,
        "round": int(step),
        "tree": _structure(state),
        "sha256": _digest(leaves),
        "config": fingerprint,
    }
    meta["seal"] = _seal(meta)
    try:
        mgr.save(
            step,
            args=ocp.args.StandardSave({f"{i:05d}": v for i, v in enumerate(leaves)}),
            force=True,
            custom_metadata={_SEAL: meta},
        )
        mgr.wait_until_finished()
        # Older readers look for the structure here; steps carry their own copy since.
        _write_atomic(
            Path(mgr.directory) / "structure.json",
            json.dumps({"format": _FORMAT, "tree": meta["tree"], "sealed": True}),
        )
    except OSError:
        raise
    except Exception as e:  # orbax / tensorstore wrap filesystem failures in their own types
        where = Path(mgr.directory) / str(step)
        raise OSError(
            None, f"could not write the checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})", str(where)
        ) from e


def checkpoint_steps(ckdir: Path) -> list[int]:
    """The step folders under ``ckdir``, newest first (whatever they hold)."""
    if not ckdir.is_dir():
        return []
    return sorted((int(p.name) for p in ckdir.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)


class _BadStep(Exception):
    """A step folder whose contents cannot be trusted (message: why)."""


def _refuse_structure(where: str, algorithm: str):
    return _config.ConfigError(
        f"config.algorithm.name: the checkpoint in {where} holds the state of another algorithm or layout than "
        f"{algorithm!r} with this config; use a new --workdir or set config.resume=False (which clears it)"
    )


def _restore_step(path: Path, template, fingerprint: str, where: str, algorithm: str, legacy: dict | None):
    """The state saved in the step folder ``path``, verified; raises ``_BadStep`` when it cannot be
    trusted, ``ConfigError`` when it is sound but another run's. ``legacy``: the structure record
    of a workdir written before steps carried checksums (restored unverified, with a warning)."""
    import orbax.checkpoint as ocp

    if legacy is not None:
        if legacy.get("format") != _FORMAT or legacy.get("tree") != _structure(template):
            raise _refuse_structure(where, algorithm)
    else:
        try:
            meta = loads((path / "_CHECKPOINT_METADATA").read_text())["custom_metadata"][_SEAL]
            seal = meta.pop("seal")
        except Exception as e:
            raise _BadStep(f"its metadata is missing or unreadable ({type(e).__name__})") from e
        if seal != _seal(meta):
            raise _BadStep("its metadata does not match its seal")
        if meta.get("format") != _FORMAT or meta.get("tree") != _structure(template):
            raise _refuse_structure(where, algorithm)
        if fingerprint and meta.get("config") != fingerprint:
            raise _config.ConfigError(
                f"config: the checkpoint {path} was made with another config than this one (its config.json may "
                f"have been replaced); use a new --workdir or set config.resume=False (which clears it)"
            )
    leaves, treedef = jax.tree.flatten(template)
    abstract = {f"{i:05d}": ocp.utils.to_shape_dtype_struct(v) for i, v in enumerate(leaves)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            restored = ocp.StandardCheckpointer().restore((path / "default").absolute(), abstract)
        out = [restored[f"{i:05d}"] for i in range(len(leaves))]
        digest = None if legacy is not None else _digest(out)
    except Exception as e:  # any orbax / tensorstore failure: the step's files are damaged
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise _BadStep(f"{type(e).__name__}: {first}") from e
    if legacy is not None:
        warnings.warn(
            f"checkpoint {path} has no checksum (written by an older redeem_jax): restored unverified", stacklevel=3
        )
    elif digest != meta.get("sha256"):
        raise _BadStep("its arrays do not match their sha256")
    return jax.tree.unflatten(treedef, out)


def _legacy(ckdir: Path) -> dict | None:
    """The structure record of a checkpoint folder written before steps were sealed, else None."""
    try:
        saved = json.loads((ckdir / "structure.json").read_text())
    except (OSError, ValueError):
        return None
    return None if saved.get("sealed") else saved


def restore_state(ckdir: Path, template, where: str, algorithm: str, *, fingerprint: str = "", upto: int | None = None):
    """The newest checkpoint under ``ckdir`` that verifies, restored into the shapes and dtypes of
    ``template`` (a state or its ``jax.eval_shape``), as ``(round, state)``, or None when there is
    none. Steps after ``upto`` (the last round the rows file covers) are not used.

    A step whose files fail to load, whose metadata is unreadable or whose arrays do not match
    their sha256 is reported with a warning naming its folder, removed, and the previous step is
    tried; when steps exist but none verifies, a one-line :class:`WorkdirError` says what to
    delete. A sound checkpoint of another structure or config is refused in one line."""
    ckdir = Path(ckdir)
    steps = checkpoint_steps(ckdir)
    if not steps:
        return None
    bad: list[tuple[Path, str]] = []
    found = None
    legacy = _legacy(ckdir)
    for step in steps:
        path = ckdir / str(step)
        if upto is not None and step > upto:
            bad.append((path, f"the rows file ends at round {upto}, before it"))
            continue
        try:
            found = (step, _restore_step(path, template, fingerprint, where, algorithm, legacy))
            break
        except _BadStep as e:
            bad.append((path, str(e)))
    if found is None:
        listing = "; ".join(f"{p}: {why}" for p, why in bad)
        raise WorkdirError(
            ckdir,
            f"no usable checkpoint in {ckdir} ({listing}); delete {ckdir} and the rows file "
            f"beside it, or set config.resume=False (which clears them), to start afresh",
        )
    for path, why in bad:
        warnings.warn(f"checkpoint {path} is unusable ({why}): removed; resuming from round {found[0]}", stacklevel=2)
        shutil.rmtree(path, ignore_errors=True)
    return found


# --------------------------------------------------------------------------- #
# rows
# --------------------------------------------------------------------------- #
def _scan_rows(path: Path, warn: bool = True) -> tuple[list[dict], list[int]]:
    """The rows of a rows file and the byte offset after each. A torn last line (a kill or a full
    disk mid-write) is dropped, with a warning; a damaged line before it is refused in one line."""
    if not path.exists():
        return [], []
    data = path.read_bytes()
    rows, ends, pos = [], [], 0
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        end = min(pos + len(line) + 1, len(data))
        if line.strip():
            try:
                row = json.loads(line)  # lenient: files of older versions hold NaN / Infinity
                ok = isinstance(row, dict) and isinstance(row.get("round"), int)
            except ValueError:
                ok = False
            if not ok:
                if i == last:
                    if warn:
                        warnings.warn(f"{path}: its last line is torn (a write was cut short): dropped", stacklevel=3)
                    break
                raise WorkdirError(
                    path,
                    f"{path}: line {i + 1} is damaged; delete the file and the checkpoints "
                    "beside it, or set config.resume=False, to start afresh",
                )
            rows.append(_decode(row))
            ends.append(end)
        pos += len(line) + 1
    return rows, ends


def read_rows(path: Path, upto: int | None = None) -> list[dict]:
    """The rows logged in ``path`` (``metrics.jsonl`` or ``rows.jsonl``) up to round ``upto``,
    with non-finite values restored (see :func:`_encode`) and a torn last line dropped."""
    rows, _ = _scan_rows(Path(path), warn=False)
    return [r for r in rows if upto is None or r["round"] <= upto]


def _complete_upto(rows: list[dict], per_round: int) -> int:
    """The last round for which all ``per_round`` rows (one per sweep point) were logged, or -1."""
    counts: dict[int, int] = {}
    for r in rows:
        counts[r["round"]] = counts.get(r["round"], 0) + 1
    return max((k for k, n in counts.items() if n >= per_round), default=-1)


def _truncate(path: Path, size: int) -> None:
    """Cut ``path`` to its first ``size`` bytes (a prefix of whole rows), ending with a newline."""
    with open(path, "ab") as f:
        f.truncate(size)
        if size:
            with open(path, "rb") as g:
                g.seek(size - 1)
                if g.read(1) != b"\n":
                    f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


def _append(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` as strict JSON lines in one write, flushed and fsynced before returning,
    so that a kill leaves at most one torn last line."""
    with open(path, "a") as f:
        f.write("".join(dumps(_encode(r)) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """The numeric fields of ``rows`` as float64 arrays over the rows (NaN where a row lacks one)."""
    keys = sorted({k for r in rows for k in r if not isinstance(r[k], str)})
    return {k: np.array([r.get(k, np.nan) for r in rows], dtype=np.float64) for k in keys}


# --------------------------------------------------------------------------- #
# ε of a run, composed incrementally
# --------------------------------------------------------------------------- #
class EpsilonLedger:
    """ε after t DP steps for every σ a run (or sweep) uses, at its q and δ.

    The expensive part of an accountant is the privacy loss of one step: RDP computes it once
    per σ and scales it by t (the same floats as ``rj.privacy.epsilon``); PLD builds the loss of
    one evaluation interval of ``stride`` steps once per σ and composes it onto the running
    total, one composition per evaluation (a chain that a resumed run replays identically). A
    PLD whose grid would explode (``PLDFallbackWarning`` of the accountant) is accounted by RDP.
    σ = 0 gives ∞ (no noise, no privacy).
    """

    def __init__(self, privacy: dict, stride: int, horizon: int):
        self.p, self.stride, self.horizon = privacy, max(int(stride), 1), int(horizon)
        self._rdp: dict = {}
        self._pld: dict = {}
        self.one_step_builds = 0  # expensive evaluations of one step's privacy loss

    def __call__(self, sigma: float, steps: int) -> float:
        sigma, steps = float(sigma), int(steps)
        if sigma <= 0:
            return float("inf")
        if steps == 0:
            return 0.0
        if self.p["accountant"] == "pld" and self._pld_ok(sigma):
            return self._pld_epsilon(sigma, steps)
        return self._rdp_epsilon(sigma, steps)

    def _event(self, sigma, steps):
        from redeem_jax.privacy.analysis import accounting

        return accounting.dp_event(sigma, self.p["sample_rate"], steps, sampling=self.p["sampling"])

    def _fresh(self, accountant: str):
        from redeem_jax.privacy.analysis import accounting

        return accounting.make_accountant(accountant, self.p["sampling"], self.p["sample_rate"])

    def _rdp_epsilon(self, sigma, steps):
        if sigma not in self._rdp:
            acc = self._fresh("rdp")
            acc.compose(self._event(sigma, 1))
            self._rdp[sigma] = (acc, np.array(acc._rdp))
            self.one_step_builds += 1
        acc, one = self._rdp[sigma]
        acc._rdp = steps * one  # what composing `steps` steps at once computes
        return float(acc.get_epsilon(self.p["delta"]))

    def _pld_ok(self, sigma) -> bool:
        """Whether PLD is affordable at ``sigma`` up to the horizon (the accountant decides)."""
        if sigma not in self._pld:
            from redeem_jax.privacy.analysis import accounting

            fallback = getattr(accounting, "PLDFallbackWarning", None)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                accounting.epsilon(
                    sigma,
                    self.p["sample_rate"],
                    self.horizon,
                    self.p["delta"],
                    accountant="pld",
                    sampling=self.p["sampling"],
                )
            self.one_step_builds += 1
            refused = [w for w in caught if fallback is not None and issubclass(w.category, fallback)]
            for w in refused[:1]:
                warnings.warn(w.message, w.category, stacklevel=4)
            self._pld[sigma] = None if refused else {}
        return self._pld[sigma] is not None

    def _pld_epsilon(self, sigma, steps):
        chain = self._pld[sigma]

        def block(n):
            if n not in chain:
                acc = self._fresh("pld")
                acc.compose(self._event(sigma, n))
                chain[n] = acc._pld
                self.one_step_builds += 1
            return chain[n]

        k, rem = divmod(steps, self.stride)
        done, total = chain.get("k", (0, None))
        if done > k:
            done, total = 0, None
        while done < k:  # the same compositions in the same order, whatever the run's history
            total = block(self.stride) if total is None else total.compose(block(self.stride))
            done += 1
        chain["k"] = (done, total)
        pld = total if not rem else (block(rem) if total is None else total.compose(block(rem)))
        return float(pld.get_epsilon_for_delta(self.p["delta"]))


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

            cache[key] = float(
                accounting.epsilon(
                    sigma,
                    privacy["sample_rate"],
                    steps,
                    privacy["delta"],
                    accountant=privacy["accountant"],
                    sampling=privacy["sampling"],
                )
            )
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

    def __init__(
        self,
        exp,
        *,
        points: list[dict] | None = None,
        hp: dict | None = None,
        seeds=None,
        sigma=None,
        mesh=None,
        by_point: bool = False,
        label: str = "",
        show: bool = True,
    ):
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
        self.fingerprint = config_fingerprint(c, points)

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

    def restore(self, ckdir: Path, where: str, upto: int | None = None) -> bool:
        """Restore the newest verified checkpoint under ``ckdir`` not after round ``upto``
        (see :func:`restore_state`); False when there is none."""
        found = restore_state(
            ckdir,
            jax.eval_shape(lambda: self.state),
            where,
            self.exp.config.algorithm.name,
            fingerprint=self.fingerprint,
            upto=upto,
        )
        if found is not None:
            self.state = found[1]
        return found is not None

    # -- rows -----------------------------------------------------------------------------
    def _rows(self, r: int, ev: dict, extra: dict) -> list[dict]:
        if not self.batched:
            return [{"round": r, **{k: float(v) for k, v in ev.items()}, **{k: float(v) for k, v in extra.items()}}]
        out = []
        for i, p in enumerate(self.points):
            out.append(
                {
                    **p,
                    "point": i,
                    "round": r,
                    **{k: float(v[i]) for k, v in ev.items()},
                    **{k: float(np.asarray(v)[i]) for k, v in extra.items()},
                }
            )
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
            new = self._rows(
                0,
                ev,
                {
                    "consensus_distance": self._consensus_now(),
                    "wall_time": np.zeros(G) if self.batched else 0.0,
                    "bytes_sent": np.zeros(G) if self.batched else 0.0,
                },
            )
            rows.extend(new)
            log(new)
        from tqdm.auto import tqdm

        desc = (f"sweep of {G} runs" + (f" [{self.label}]" if self.label else "")) if self.batched else "rounds"
        bar = tqdm(
            total=c.num_rounds,
            initial=self.round(),
            unit="round",
            desc=desc,
            disable=not self.show,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=True,
        )
        limit = jnp.asarray(c.num_rounds, jnp.int32)
        steps_per_round = exp.privacy["steps_per_round"] if exp.privacy else 1
        ledger = (
            EpsilonLedger(exp.privacy, c.eval_every * steps_per_round, c.num_rounds * steps_per_round)
            if exp.privacy
            else None
        )
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
            extra = {
                "train_loss": np.mean(np.asarray(per_round["train_loss"])[cut], axis=axis),
                "consensus_distance": self._consensus_now(),
                "bytes_per_round": sent / max(done, 1),
                "bytes_sent": bytes_total,
                "wall_time": np.full(G, time.perf_counter() - t0) if self.batched else time.perf_counter() - t0,
            }
            extra.update(
                {
                    k: np.mean(np.asarray(v)[cut], axis=axis)
                    for k, v in per_round.items()
                    if k not in ("train_loss", "bytes_sent", "consensus_distance")
                }
            )
            if exp.privacy is not None:
                sig = self.sigma if self.sigma is not None else np.full(G, exp.privacy["noise_multiplier"])
                eps = np.array([ledger(s, r * steps_per_round) for s in np.atleast_1d(sig)])
                extra["epsilon"] = eps if self.batched else float(eps[0])
                if self.batched:
                    extra["noise_multiplier"] = np.asarray(sig, np.float64)
            new = self._rows(r, ev, extra)
            rows.extend(new)
            log(new)
            bar.update(done)
            bar.set_postfix_str(_postfix(ev, self.batched))
            if mgr is not None and (r % c.checkpoint_every == 0 or r == c.num_rounds):
                save_state(mgr, r, self.state, self.fingerprint)
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
    if "test_perplexity" in ev:  # a language model: perplexity is its headline number
        return f"ppl={float(ev['test_perplexity']):.2f} loss={float(ev.get('test_loss', np.nan)):.4f}"
    return (f"acc={float(acc):.3f} " if acc is not None else "") + f"loss={float(ev.get('test_loss', np.nan)):.4f}"


def check_horizon(wd: Path, num_rounds: int) -> None:
    """Refuse, in one line, a ``num_rounds`` below a checkpoint already in ``wd``: the run there went
    further than this config asks, and returning its longer history would be a silent surprise."""
    ckdir = Path(wd) / "checkpoints"
    steps = checkpoint_steps(ckdir)
    if steps and steps[0] > num_rounds:
        raise WorkdirError(
            ckdir / str(steps[0]),
            (
                f"config.num_rounds: {num_rounds} is below round {steps[0]}, which the run in {wd} has reached "
                f"(checkpoint {ckdir / str(steps[0])}); give num_rounds >= {steps[0]} to continue it, or a new "
                f"--workdir, or set config.resume=False (which clears it)"
            ),
        )


def _report_memory(lp: Loop, wd: Path | None) -> None:
    """Per-node memory of the run (``rj.memory_report``, from shapes): printed at the start with
    the progress bar, and written to ``wd/memory.json`` (for a sweep: one point's)."""
    from redeem_jax.experiment import memory as _memory

    try:
        report = _memory.memory_report(lp.exp, None if lp.batched else lp.state)
    except Exception as e:  # noqa: BLE001 - an informational report never stops a run
        warnings.warn(f"memory report unavailable: {e}", stacklevel=3)
        return
    if wd is not None:
        _write_atomic(wd / "memory.json", dumps(report, indent=1))
    if lp.show:
        print(_memory.format_report(report), file=sys.stderr)


def resume_and_run(
    lp: Loop, wd: Path | None, rows_file: str, checkpoint_every: int, resume: bool, say: Callable | None = None
):
    """Run ``lp`` to the end, in ``wd`` if given, and return all rows.

    With checkpoints and ``resume``: restore the newest checkpoint that verifies and that the
    rows file covers (:func:`restore_state`), keep the rows logged up to it (``say(round)``
    printed) and cut the file after them; otherwise the file starts empty. Then append one row
    per point and evaluation. A ``num_rounds`` below a checkpoint already in ``wd`` is refused:
    the run went further than this config asks."""
    rows: list[dict] = []
    wall = 0.0
    mgr = None
    if wd is not None:
        path = wd / rows_file
        on_disk, ends = _scan_rows(path)
        ckdir = wd / "checkpoints"
        if checkpoint_every and resume:
            check_horizon(wd, lp.exp.config.num_rounds)
            if lp.restore(ckdir, str(wd), _complete_upto(on_disk, lp.G)):
                rows = [r for r in on_disk if r["round"] <= lp.round()]
                wall = max((r["wall_time"] for r in rows), default=0.0)
                if say is not None:
                    print(say(lp.round()), file=sys.stderr)
        _truncate(path, ends[len(rows) - 1] if rows else 0)
        if checkpoint_every:
            mgr = checkpoint_manager(wd)

    _report_memory(lp, wd)
    tb = None
    if wd is not None and not lp.batched:  # TensorBoard scalars beside metrics.jsonl (optional tensorboardX)
        from redeem_jax.experiment import tensorboard_log

        tb = tensorboard_log.open_writer(wd, rows[-1]["round"] + 1 if rows else 0)

    def log(new):
        if wd is not None:
            _append(wd / rows_file, new)
        if tb is not None:
            tb.write(new)

    try:
        return lp.run(rows, log, mgr, wall)
    finally:
        if tb is not None:
            tb.close()
