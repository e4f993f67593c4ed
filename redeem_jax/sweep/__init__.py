"""Sweeps that compile once: ``rj.sweep(config, axes)`` vmaps whole runs over a grid.

Every axis in :data:`SWEEPABLE` (the seed and scalar hyper-parameters) becomes a leading
``[G]`` axis of the network state and of those scalars, and the whole grid runs as one
program: ``vmap`` over runs of ``scan`` over rounds of ``vmap`` over nodes, compiled once.
Axes that change shapes or the program (``num_nodes``, ``topology.name``, ``model.name``,
``aggregation.rule``, ...) are looped over, one compile per combination.

A seed axis redraws what a run draws on device: the initial model, the minibatches, the
DP noise and the attackers' randomness. The graph, the data partition and the Byzantine
placement are host-side arrays that fix shapes, so they come from ``config.seed`` for the
whole sweep (``topology.seed`` and ``data.seed`` are pinned to it); a point of the sweep
equals ``rj.run`` of its config with those two seeds pinned the same way.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from redeem_jax import config as _config
from redeem_jax import runner as _runner
from redeem_jax.algorithms import dsgd

__all__ = ["sweep", "SWEEPABLE", "grid", "plot_sweep"]

# Scalars that enter the jitted round as values, not as structure: vmappable.
SWEEPABLE = ("seed", "optimizer.learning_rate", "optimizer.momentum", "privacy.noise_multiplier",
             "privacy.target_epsilon", "byzantine.strength")
_METRICS_TO_PLOT = ("test_accuracy", "test_loss", "node_test_accuracy_mean", "train_loss", "consensus_distance")


def grid(axes: Mapping[str, Sequence]) -> list[dict]:
    """The Cartesian product of ``axes`` as a list of ``{key: value}``, first axis slowest."""
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(axes[k] for k in keys))]


def _check_axes(c, axes: Mapping[str, Sequence]) -> dict[str, tuple]:
    if not axes:
        raise _config.ConfigError("sweep: give at least one axis, e.g. {'seed': [0, 1, 2]}")
    out = {}
    for key, values in axes.items():
        if key not in _config.SCHEMA or key.startswith(("compare.", "distributed.")):
            raise _config.ConfigError(f"sweep.{key}: not a config field that can be swept")
        values = tuple(values) if isinstance(values, (list, tuple, np.ndarray)) else (values,)
        if not values:
            raise _config.ConfigError(f"sweep.{key}: give at least one value")
        if len(set(map(repr, values))) != len(values):
            raise _config.ConfigError(f"sweep.{key}: repeated values {values}")
        for v in values:
            msg = _config.SCHEMA[key](v)
            if msg:
                raise _config.ConfigError(f"sweep.{key}: {msg}")
        out[key] = values
    if "privacy.noise_multiplier" in out and "privacy.target_epsilon" in out:
        raise _config.ConfigError("sweep.privacy.noise_multiplier: sweep σ or the target ε, not both")
    if c.compare.key:
        raise _config.ConfigError("config.compare.key: a sweep replaces the comparison; put it in the axes")
    return out


def _check_effect(c, dynamic_keys: Sequence[str]) -> None:
    """Refuse an axis that would not change the run (a silent no-op sweep wastes a grid)."""
    for key in dynamic_keys:
        why = None
        if key.startswith("privacy.") and c.privacy.mode == "none":
            why = "privacy.mode is 'none'"
        elif key == "privacy.noise_multiplier" and c.privacy.target_epsilon > 0:
            why = "privacy.target_epsilon > 0 sets σ (sweep privacy.target_epsilon instead)"
        elif key == "optimizer.momentum" and c.optimizer.name not in ("momentum", "nesterov"):
            why = f"optimizer.name is {c.optimizer.name!r}"
        elif key == "byzantine.strength" and (c.byzantine.num == 0 or c.byzantine.attack
                                              not in _runner._STRENGTH_OPTION):
            why = "no Byzantine attack with a strength factor is configured"
        if why:
            raise _config.ConfigError(f"sweep.{key}: has no effect because {why}")


def _pinned(c) -> ml_collections.ConfigDict:
    sub = ml_collections.ConfigDict(c.to_dict())
    if sub.topology.seed < 0:
        sub.topology.seed = sub.seed
    if sub.data.seed < 0:
        sub.data.seed = sub.seed
    return sub


def _noise_for_targets(exp, targets: Sequence[float]) -> dict[float, float]:
    from redeem_jax.privacy import accounting

    p, c = exp.privacy, exp.config
    steps = c.num_rounds * p["steps_per_round"]
    out = {}
    for eps in targets:
        try:
            out[eps] = float(accounting.noise_multiplier_for(eps, p["sample_rate"], steps, p["delta"],
                                                             accountant=p["accountant"], sampling=p["sampling"]))
        except ValueError as e:
            raise _config.ConfigError(f"sweep.privacy.target_epsilon: {e}") from e
    return out


def sweep(config, axes: Mapping[str, Sequence], workdir: str | Path | None = None, *, topology=None,
          progress: bool | None = None, sweep_devices: int = 0):
    """Run ``config`` on every point of the grid ``axes`` and return one tidy ``pandas.DataFrame``.

    ``axes`` maps config fields to values, e.g. ``{"seed": range(8), "optimizer.learning_rate":
    [0.01, 0.03, 0.1, 0.3]}``. Axes in :data:`SWEEPABLE` are vmapped (one compile for all their
    points); any other field is looped over. One row per (point, evaluated round), with a
    column per axis and per metric (``epsilon`` when private). With ``workdir``: ``sweep.csv``,
    ``final.csv`` (last round of each point), one ``sweep_<metric>.png`` per metric (mean and
    spread over seeds) and checkpoints; an interrupted sweep started again resumes.
    ``df.attrs["traces"]`` counts the traces of each group's round (1: compiled once).

    Devices: ``config.perf.mesh`` shards every point's node axis as in ``rj.run``;
    ``sweep_devices=k`` (-1: all) instead splits the grid's points over ``k`` devices
    (each group's point count must be divisible by ``k``).
    """
    import pandas as pd

    c = _config.validate(config)
    axes = _check_axes(c, axes)
    static_keys = [k for k in axes if k not in SWEEPABLE]
    dynamic_keys = [k for k in axes if k in SWEEPABLE]
    wd = Path(workdir) if workdir is not None else None
    show = c.progress if progress is None else progress
    groups = grid({k: axes[k] for k in static_keys}) if static_keys else [{}]
    points = grid({k: axes[k] for k in dynamic_keys}) if dynamic_keys else [{}]

    # Build every group first: a bad combination fails before hours of the others have run.
    built = []
    for overrides in groups:
        sub = ml_collections.ConfigDict(c.to_dict())
        for k, v in overrides.items():
            _config.set_field(sub, k, v)
        where = f" (in the sweep group {overrides})" if overrides else ""
        try:
            sub = _pinned(_config.validate(sub))
            _check_effect(sub, dynamic_keys)
            exp = _runner.build(sub, topology)
        except _config.ConfigError as e:
            raise _config.ConfigError(f"{e}{where}") from e
        built.append((overrides, exp))

    if wd is not None:
        _prepare_workdir(wd, c, axes)
    frames, traces = [], []
    for overrides, exp in built:
        gdir = None if wd is None else wd / _group_dir(overrides)
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        rows = _run_group(exp, points, gdir, show, label, sweep_devices)
        traces.append(len(exp.trace_counter))
        for r in rows:
            r.update({k: v for k, v in overrides.items()})
        frames.append(pd.DataFrame(rows))
    df = pd.concat(frames, ignore_index=True)
    lead = [*axes, "point", "round"]
    df = df[lead + [col for col in df.columns if col not in lead]]
    df.attrs["traces"] = traces  # times each group's round was traced: 1 means one compile for its grid
    if wd is not None:
        df.to_csv(wd / "sweep.csv", index=False)
        final(df).to_csv(wd / "final.csv", index=False)
        if c.plots:
            for metric in _METRICS_TO_PLOT:
                if metric in df.columns:
                    plot_sweep(df, metric, [k for k in axes if k != "seed"], wd / f"sweep_{metric}.png")
    return df


def _prepare_workdir(wd: Path, c, axes: Mapping[str, Sequence]) -> None:
    """Check that a sweep workdir holds this very sweep before resuming it, or clear it.

    Resuming needs the same config (up to the fields a resume may change, as for ``rj.run``)
    and the same axes, values and order: a different grid would silently return the old
    table, or fail inside orbax on other shapes."""
    wd.mkdir(parents=True, exist_ok=True)
    record = {"config": json.loads(c.to_json()), "axes": json.loads(json.dumps({k: list(v) for k, v in axes.items()}))}
    path = wd / "sweep.json"
    if c.resume and c.checkpoint_every and path.exists():
        old = json.loads(path.read_text())
        hint = "use a new workdir or set config.resume=False (which clears it)"
        old_axes, new_axes = old.get("axes", {}), record["axes"]
        for key in list(dict.fromkeys([*old_axes, *new_axes])):
            if old_axes.get(key) != new_axes.get(key):
                raise _config.ConfigError(f"sweep.{key}: the sweep in {wd} was run with values "
                                          f"{old_axes.get(key)!r}, not {new_axes.get(key)!r}; {hint}")
        if list(old_axes) != list(new_axes):
            raise _config.ConfigError(f"sweep: the sweep in {wd} had its axes in the order {list(old_axes)}, "
                                      f"not {list(new_axes)}; {hint}")
        _runner.check_resumable(old.get("config", {}), c, str(wd))
    else:
        for child in wd.iterdir() if wd.exists() else ():
            if child.is_dir() and ((child / "rows.jsonl").exists() or (child / "checkpoints").exists()):
                _runner.clear_run_outputs(child, ("checkpoints", "rows.jsonl"))
        _runner.clear_run_outputs(wd, ("sweep.json", "sweep.csv", "final.csv"))
    path.write_text(json.dumps(record, indent=2))


def final(df):
    """The last evaluated round of every point (and group) of a sweep table."""
    keys = [k for k in df.columns if k in _config.SCHEMA] + ["point"]
    return df.sort_values("round").groupby(keys, sort=False, dropna=False).tail(1).sort_values(keys).reset_index(drop=True)


def _mesh(c, G: int, sweep_devices: int):
    """The devices of a group: none, the config's node mesh, or a ``("sweep",)`` mesh over points."""
    from redeem_jax import sharding

    if tuple(c.perf.mesh) and sweep_devices:
        raise _config.ConfigError("sweep_devices: shard either the nodes (config.perf.mesh) or the sweep points, "
                                  "not both")
    try:
        if tuple(c.perf.mesh):
            return sharding.make_mesh(c.perf.mesh, num_nodes=c.num_nodes)
        if sweep_devices:
            mesh = sharding.make_mesh((sweep_devices,), axis_names=(sharding.SWEEP,))
            if G % mesh.size:
                raise ValueError(f"{G} points cannot be split evenly over {mesh.size} devices")
            return mesh
    except ValueError as e:
        raise _config.ConfigError(f"sweep_devices / config.perf.mesh: {e}") from e
    return None


def _run_group(exp, points: list[dict], gdir: Path | None, show: bool, label: str,
               sweep_devices: int = 0) -> list[dict]:
    """One compiled program for every point of ``points`` (same shapes, different scalars)."""
    c = exp.config
    G = len(points)
    mesh = _mesh(c, G, sweep_devices)
    seeds = np.array([p.get("seed", c.seed) for p in points], np.int64)
    dynamic: dict[str, np.ndarray] = {}
    for key in points[0]:
        if key != "seed":
            dynamic[key] = np.array([p[key] for p in points], np.float32)
    sigma = None
    if "privacy.target_epsilon" in dynamic:
        table = _noise_for_targets(exp, sorted({p["privacy.target_epsilon"] for p in points}))
        sigma = np.array([table[p["privacy.target_epsilon"]] for p in points], np.float64)
        dynamic["privacy.noise_multiplier"] = sigma.astype(np.float32)
        del dynamic["privacy.target_epsilon"]
    elif "privacy.noise_multiplier" in dynamic:
        sigma = np.array([p["privacy.noise_multiplier"] for p in points], np.float64)
    elif exp.privacy is not None:
        sigma = np.full(G, exp.privacy["noise_multiplier"])
    dyn = {k: jnp.asarray(v) for k, v in dynamic.items()}

    def chunk(dyn_point, state, limit):
        _, round_fn, _ = exp.assemble(dyn_point)
        return _runner.scan_rounds(round_fn, state, limit, c.eval_every)

    # spmd_axis_name keeps each point's work on its own devices when the points are split.
    by_point = mesh is not None and "sweep" in mesh.axis_names
    vchunk = jax.jit(jax.vmap(chunk, in_axes=(0, 0, None), spmd_axis_name="sweep" if by_point else None),
                     donate_argnums=1 if c.perf.donate else ())
    veval = jax.jit(jax.vmap(exp.evaluate, in_axes=(0, None)))
    vconsensus = jax.jit(jax.vmap(dsgd.consensus_distance, in_axes=(0, None)))
    state = jax.jit(jax.vmap(exp.init_state))(jnp.asarray(seeds, jnp.uint32))
    honest = jnp.asarray(exp.honest)
    if mesh is not None:
        from redeem_jax import sharding

        state = sharding.shard_sweep(state, mesh, num_nodes=c.num_nodes)
        if by_point:
            dyn = sharding.shard_sweep(dyn, mesh, num_nodes=c.num_nodes)
        honest = sharding.replicate(honest, mesh)

    rows: list[dict] = []
    mgr = None
    start_wall = 0.0
    if gdir is not None:
        gdir.mkdir(parents=True, exist_ok=True)
        if c.checkpoint_every:
            mgr = _runner._checkpoint_manager(gdir)
            if c.resume:
                restored = _runner._restore(mgr, state)
                if restored is not None:
                    state = restored
                    rows = _runner._read_rows(gdir / "rows.jsonl", int(state.round[0]))
                    start_wall = max((r["wall_time"] for r in rows), default=0.0)
                    if show:
                        print(f"sweep: resuming {label or 'the grid'} at round {int(state.round[0])} from {gdir}",
                              file=sys.stderr)
        with open(gdir / "rows.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def log(new_rows):
        rows.extend(new_rows)
        if gdir is not None:
            with open(gdir / "rows.jsonl", "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new_rows)

    def point_rows(r: int, ev: dict, extra: dict) -> list[dict]:
        out = []
        for i, p in enumerate(points):
            row = {**p, "point": i, "round": r, **{k: float(v[i]) for k, v in ev.items()},
                   **{k: float(v[i]) for k, v in extra.items()}}
            out.append(row)
        return out

    t0 = time.perf_counter() - start_wall
    if int(state.round[0]) == 0:
        ev = jax.device_get(veval(state.params, honest))
        log(point_rows(0, ev, {"consensus_distance": jax.device_get(vconsensus(state.params, honest)),
                               "wall_time": np.zeros(G)}))

    from tqdm.auto import tqdm

    bar = tqdm(total=c.num_rounds, initial=int(state.round[0]), unit="round", disable=not show, file=sys.stderr,
               desc=f"sweep of {G} runs" + (f" [{label}]" if label else ""), dynamic_ncols=True)
    limit = jnp.asarray(c.num_rounds, jnp.int32)
    eps_cache: dict[tuple[float, int], float] = {}
    while int(state.round[0]) < c.num_rounds:
        before = int(state.round[0])
        state, per_round = vchunk(dyn, state, limit)
        r = int(state.round[0])
        done = r - before
        per_round = jax.device_get(per_round)
        ev = jax.device_get(veval(state.params, honest))
        extra = {"train_loss": per_round["train_loss"][:, :done].mean(axis=1),
                 "consensus_distance": per_round["consensus_distance"][:, done - 1],
                 "wall_time": np.full(G, time.perf_counter() - t0)}
        if sigma is not None:
            steps = r * exp.privacy["steps_per_round"]
            extra["noise_multiplier"] = sigma
            extra["epsilon"] = np.array([_epsilon(exp.privacy, s, steps, eps_cache) for s in sigma])
        log(point_rows(r, ev, extra))
        bar.update(done)
        if "test_accuracy" in ev:
            acc = ev["test_accuracy"]
            bar.set_postfix_str(f"acc min/mean/max={acc.min():.3f}/{acc.mean():.3f}/{acc.max():.3f}")
        if mgr is not None and (r % c.checkpoint_every == 0 or r == c.num_rounds):
            import orbax.checkpoint as ocp

            mgr.save(r, args=ocp.args.StandardSave(_runner._state_dict(state)), force=True)
    bar.close()
    if mgr is not None:
        mgr.wait_until_finished()
        mgr.close()
    return rows


def _epsilon(privacy: dict, sigma: float, steps: int, cache: dict) -> float:
    key = (float(sigma), int(steps))
    if key not in cache:
        if sigma <= 0:
            cache[key] = math.inf
        else:
            from redeem_jax.privacy import accounting

            cache[key] = float(accounting.epsilon(sigma, privacy["sample_rate"], steps, privacy["delta"],
                                                  accountant=privacy["accountant"], sampling=privacy["sampling"]))
    return cache[key]


def _short(key: str) -> str:
    """``optimizer.learning_rate`` -> ``learning_rate``; ``topology.name`` -> ``topology``."""
    head, _, leaf = key.rpartition(".")
    return head if leaf == "name" and head else leaf


def _group_dir(overrides: dict) -> str:
    if not overrides:
        return "grid"
    name = ",".join(f"{_short(k)}={v}" for k, v in overrides.items())
    return "".join(ch if ch.isalnum() or ch in "=,.-_" else "_" for ch in name)


def plot_sweep(df, metric: str, by: Sequence[str], path: str | Path | None = None, title: str = ""):
    """``metric`` against rounds, one line per combination of the ``by`` axes: the mean over the
    other points (seeds), with a band from the minimum to the maximum."""
    from redeem_jax.plotting import _finish, _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by = [k for k in by if k in df.columns]
    groups = df.groupby(by, sort=True) if by else [((), df)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        stats = part.groupby("round")[metric].agg(["mean", "min", "max"]).reset_index()
        lab = ", ".join(f"{_short(k)}={v:g}" if isinstance(v, float) else f"{_short(k)}={v}"
                        for k, v in zip(by, key)) or "all"
        line, = ax.plot(stats["round"], stats["mean"], label=lab)
        ax.fill_between(stats["round"], stats["min"], stats["max"], color=line.get_color(), alpha=0.2)
    n_seeds = df["seed"].nunique() if "seed" in df.columns else 1
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    if "loss" in metric or metric == "consensus_distance":
        ax.set_yscale("log")
    ax.set_title(title or f"{metric}: mean and min–max over {n_seeds} seed(s)")
    if len(ax.lines) <= 12:
        ax.legend(fontsize=7)
    return _finish(fig, path)
