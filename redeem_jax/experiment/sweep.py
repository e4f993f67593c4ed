"""Sweeps that compile once: ``rj.sweep(config, axes)`` vmaps whole runs over a grid.

A sweep is the host loop of ``rj.run`` (:mod:`redeem_jax.experiment.loop`) over G points whose
network state and hyper-parameters carry a leading ``[G]`` axis: ``vmap`` over runs of ``scan``
over rounds of ``vmap`` over nodes, compiled once. The axes that are vmapped are the seed and
every hyper-parameter of the built experiment (``Experiment.hp``: each float option of an
in-round mechanism, e.g. ``optimizer.learning_rate``, ``privacy.noise_multiplier``,
``compression.gamma``, an option of a registered algorithm), plus ``privacy.target_epsilon``
(σ calibrated per point on the host). Nothing is rebuilt inside the trace. Axes that change
shapes or the program (``num_nodes``, ``topology.name``, ``aggregation.rule``, ...) are looped
over, one compile per combination.

A seed axis redraws what a run draws on device: the initial model, the minibatches, the DP
noise and the attackers' randomness. The graph, the data partition and the Byzantine placement
are host-side arrays that fix shapes, so they come from ``config.seed`` for the whole sweep
(``topology.seed`` and ``data.seed`` are pinned to it); a point of the sweep equals ``rj.run``
of its config with those two seeds pinned the same way.

Graph parameters sweep too (docs/dynamic_networks.md): ``topology.link_up`` and
``topology.online`` are traced probabilities of the round's draw, and ``topology.s`` a traced
fan-out padded to the largest swept s (the sweep sets ``topology.s_max``; a point with a
smaller s equals ``rj.run`` of its config with that ``s_max``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections
import numpy as np

from redeem_jax.experiment import config as _config
from redeem_jax.experiment import loop as _loop
from redeem_jax.experiment import run as _run
from redeem_jax.experiment.build import build

__all__ = ["sweep", "grid", "final", "plot_sweep", "vmapped_axes"]

_METRICS_TO_PLOT = ("test_accuracy", "test_loss", "node_test_accuracy_mean", "train_loss", "consensus_distance")
# Sections whose float fields are options of in-round mechanisms (hyper-parameters when used).
_IN_ROUND = ("optimizer.", "privacy.", "byzantine.", "compression.", "algorithm.", "aggregation.")


def grid(axes: Mapping[str, Sequence]) -> list[dict]:
    """The Cartesian product of ``axes`` as a list of ``{key: value}``, first axis slowest."""
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(axes[k] for k in keys))]


def _check_axes(c, axes: Mapping[str, Sequence]) -> dict[str, tuple]:
    fields = set(_config._flatten(c.to_dict()))
    if not axes:
        raise _config.ConfigError("sweep: give at least one axis, e.g. {'seed': [0, 1, 2]}")
    out = {}
    for key, values in axes.items():
        if key not in fields or key.startswith(("compare.", "distributed.")):
            raise _config.ConfigError(f"sweep.{key}: not a config field that can be swept")
        values = tuple(values) if isinstance(values, (list, tuple, np.ndarray)) else (values,)
        if not values:
            raise _config.ConfigError(f"sweep.{key}: give at least one value")
        if len(set(map(repr, values))) != len(values):
            raise _config.ConfigError(f"sweep.{key}: repeated values {values}")
        for v in values:
            msg = _config.check_field(key, v, c)
            if msg:
                raise _config.ConfigError(f"sweep.{key}: {msg}")
        out[key] = values
    if "privacy.noise_multiplier" in out and "privacy.target_epsilon" in out:
        raise _config.ConfigError("sweep.privacy.noise_multiplier: sweep σ or the target ε, not both")
    if c.compare.key:
        raise _config.ConfigError("config.compare.key: a sweep replaces the comparison; put it in the axes")
    return out


def vmapped_axes(exp, keys: Sequence[str]) -> list[str]:
    """Which of ``keys`` a sweep of ``exp`` vmaps: the seed, ``exp``'s hyper-parameters, and the
    target ε of a private run; every other key is looped over."""
    return [k for k in keys if k == "seed" or k in exp.hp or (k == "privacy.target_epsilon" and exp.privacy)]


def _no_effect(c, exp, key: str) -> str | None:
    """Why a swept in-round float field would change nothing, or None."""
    value = _config._flatten(c.to_dict()).get(key)
    if not key.startswith(_IN_ROUND) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if key in exp.hp or key == "privacy.target_epsilon" and exp.privacy:
        if key == "privacy.noise_multiplier" and c.privacy.target_epsilon > 0:
            return "privacy.target_epsilon > 0 sets σ (sweep privacy.target_epsilon instead)"
        return None
    if isinstance(value, int) and not isinstance(_config.base_value(key), float):
        return None  # an integer option (a shape, a count): looped over
    why = _config.inapplicable(c, key)  # the check config.validate refuses a set field with
    if why:
        return why
    if key.startswith("optimizer."):
        return f"optimizer.name is {c.optimizer.name!r}"
    if key == "byzantine.strength":
        return "no Byzantine attack with a strength factor is configured"
    return "no mechanism of this run uses it"


def _pinned(c, axes: Mapping[str, Sequence] | None = None) -> ml_collections.ConfigDict:
    sub = ml_collections.ConfigDict(c.to_dict())
    if sub.topology.seed < 0:
        sub.topology.seed = sub.seed
    if sub.data.seed < 0:
        sub.data.seed = sub.seed
    return _graph_axes(sub, axes or {})


def _graph_axes(sub, axes: Mapping[str, Sequence]):
    """``sub`` built so that swept graph fields are hyper-parameters of one step: a swept s pads
    the draw to the largest s (``topology.s_max``); a swept link_up / online < 1 makes the graph
    unreliable even where the config's own value (1.0) would leave it static."""
    t = sub.topology
    if "topology.s" in axes and t.name.startswith("epidemic"):
        t.s_max = max(int(t.s_max), int(t.s), *(int(v) for v in axes["topology.s"]))
    for key in ("topology.link_up", "topology.online"):
        field = key.split(".")[1]
        if key in axes and t[field] >= 1.0:
            t[field] = min(float(v) for v in axes[key])
    return sub


def _noise_for_targets(exp, targets: Sequence[float]) -> dict[float, float]:
    from redeem_jax.privacy.analysis import accounting

    p, c = exp.privacy, exp.config
    steps = c.num_rounds * p["steps_per_round"]
    out = {}
    for eps in targets:
        try:
            out[eps] = float(
                accounting.noise_multiplier_for(
                    eps, p["sample_rate"], steps, p["delta"], accountant=p["accountant"], sampling=p["sampling"]
                )
            )
        except ValueError as e:
            raise _config.ConfigError(f"sweep.privacy.target_epsilon: {e}") from e
    return out


def sweep(
    config,
    axes: Mapping[str, Sequence],
    workdir: str | Path | None = None,
    *,
    topology=None,
    progress: bool | None = None,
    sweep_devices: int = 0,
):
    """Run ``config`` on every point of the grid ``axes`` and return one tidy ``pandas.DataFrame``.

    ``axes`` maps config fields to values, e.g. ``{"seed": range(8), "optimizer.learning_rate":
    [0.01, 0.03, 0.1, 0.3]}``. The seed and every hyper-parameter of the run are vmapped (one
    compile for all their points; :func:`vmapped_axes`); any other field is looped over. One row
    per (point, evaluated round), with a column per axis and per metric (``epsilon`` when
    private). With ``workdir``: ``sweep.csv``, ``final.csv`` (last round of each point), one
    ``sweep_<metric>.png`` per metric (mean and spread over seeds) and checkpoints; an
    interrupted sweep started again resumes. ``df.attrs["traces"]`` counts the traces of each
    group's round (1: compiled once).

    Devices: ``config.perf.mesh`` shards every point's node axis as in ``rj.run``;
    ``sweep_devices=k`` (-1: all) instead splits the grid's points over ``k`` devices
    (each group's point count must be divisible by ``k``).
    """
    import pandas as pd

    c = _config.validate(config)
    axes = _check_axes(c, axes)
    wd = Path(workdir) if workdir is not None else None
    if wd is not None:  # before any work: a workdir that cannot take the outputs fails now
        _loop.check_writable(wd)
    show = c.progress if progress is None else progress
    base = build(_pinned(c, axes), topology)
    dynamic_keys = vmapped_axes(base, list(axes))
    static_keys = [k for k in axes if k not in dynamic_keys]
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
            for key in axes:  # before validate, which would name the field as config.<key>
                why = _config.inapplicable(sub, key)
                if why:
                    raise _config.ConfigError(f"sweep.{key}: has no effect because {why}")
            sub = _pinned(_config.validate(sub), axes)
            exp = base if not overrides else build(sub, topology)
            for key in axes:
                why = _no_effect(sub, exp, key)
                if why:
                    raise _config.ConfigError(f"sweep.{key}: has no effect because {why}")
            missing = [k for k in dynamic_keys if k not in vmapped_axes(exp, dynamic_keys)]
            if missing:
                raise _config.ConfigError(f"sweep.{missing[0]}: is not a hyper-parameter of this group's run")
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


def _run_group(
    exp, points: list[dict], gdir: Path | None, show: bool, label: str, sweep_devices: int = 0
) -> list[dict]:
    """One compiled program for every point of ``points`` (same shapes, different scalars)."""
    import jax.numpy as jnp

    c = exp.config
    G = len(points)
    mesh = _mesh(c, G, sweep_devices)
    seeds = np.array([p.get("seed", c.seed) for p in points], np.int64)
    hp = {k: np.full(G, v, np.float32) for k, v in exp.hp.items()}
    for key in points[0]:
        if key in exp.hp:
            hp[key] = np.array([p[key] for p in points], np.float32)
    sigma = None
    if exp.privacy is not None:
        sigma = np.full(G, exp.privacy["noise_multiplier"], np.float64)
        if "privacy.target_epsilon" in points[0]:
            table = _noise_for_targets(exp, sorted({p["privacy.target_epsilon"] for p in points}))
            sigma = np.array([table[p["privacy.target_epsilon"]] for p in points], np.float64)
            hp["privacy.noise_multiplier"] = sigma.astype(np.float32)
        elif "privacy.noise_multiplier" in points[0]:
            sigma = np.array([p["privacy.noise_multiplier"] for p in points], np.float64)
    by_point = mesh is not None and "sweep" in mesh.axis_names
    lp = _loop.Loop(
        exp,
        points=points,
        hp={k: jnp.asarray(v) for k, v in hp.items()},
        seeds=seeds,
        sigma=sigma,
        mesh=mesh,
        by_point=by_point,
        label=label,
        show=show,
    )
    if gdir is not None:
        _loop.check_writable(gdir)
    say = (lambda r: f"sweep: resuming {label or 'the grid'} at round {r} from {gdir}") if show else None
    return _loop.resume_and_run(lp, gdir, "rows.jsonl", c.checkpoint_every, c.resume, say)


def _prepare_workdir(wd: Path, c, axes: Mapping[str, Sequence]) -> None:
    """Check that a sweep workdir holds this very sweep before resuming it, or clear it.

    Resuming needs the same config (up to the fields a resume may change, as for ``rj.run``)
    and the same axes, values and order: a different grid would silently return the old
    table, or fail inside orbax on other shapes."""
    _loop.check_writable(wd)
    record = {"config": json.loads(c.to_json()), "axes": json.loads(json.dumps({k: list(v) for k, v in axes.items()}))}
    path = wd / "sweep.json"
    groups = [
        child
        for child in (wd.iterdir() if wd.exists() else ())
        if child.is_dir() and ((child / "rows.jsonl").exists() or (child / "checkpoints").exists())
    ]
    if c.resume and not c.checkpoint_every:
        for child in groups:  # a resumable sweep is not discarded by a rerun without checkpoints
            _run.refuse_to_discard(child, c, ("rows.jsonl",))
    if c.resume and c.checkpoint_every and path.exists():
        old = _run.read_record(path)
        hint = "use a new workdir or set config.resume=False (which clears it)"
        old_axes, new_axes = old.get("axes", {}), record["axes"]
        for key in list(dict.fromkeys([*old_axes, *new_axes])):
            if old_axes.get(key) != new_axes.get(key):
                raise _config.ConfigError(
                    f"sweep.{key}: the sweep in {wd} was run with values "
                    f"{old_axes.get(key)!r}, not {new_axes.get(key)!r}; {hint}"
                )
        if list(old_axes) != list(new_axes):
            raise _config.ConfigError(
                f"sweep: the sweep in {wd} had its axes in the order {list(old_axes)}, not {list(new_axes)}; {hint}"
            )
        _run.check_resumable(old.get("config", {}), c, str(wd))
        for child in groups:
            _loop.check_horizon(child, c.num_rounds)
    else:
        for child in groups:
            _run.clear_run_outputs(child, ("checkpoints", "rows.jsonl"))
        _run.clear_run_outputs(wd, ("sweep.json", "sweep.csv", "final.csv"))
    _loop._write_atomic(path, _loop.dumps(record, indent=2))


def final(df):
    """The last evaluated round of every point (and group) of a sweep table."""
    keys = [k for k in df.columns if k in _config.SCHEMA or k.startswith("algorithm.")] + ["point"]
    return (
        df.sort_values("round").groupby(keys, sort=False, dropna=False).tail(1).sort_values(keys).reset_index(drop=True)
    )


def _mesh(c, G: int, sweep_devices: int):
    """The devices of a group: none, the config's node mesh, or a ``("sweep",)`` mesh over points."""
    from redeem_jax import sharding

    if tuple(c.perf.mesh) and sweep_devices:
        raise _config.ConfigError(
            "sweep_devices: shard either the nodes (config.perf.mesh) or the sweep points, not both"
        )
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
        lab = (
            ", ".join(f"{_short(k)}={v:g}" if isinstance(v, float) else f"{_short(k)}={v}" for k, v in zip(by, key))
            or "all"
        )
        (line,) = ax.plot(stats["round"], stats["mean"], label=lab)
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
