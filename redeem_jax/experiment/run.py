"""``rj.run``: config → :class:`~redeem_jax.experiment.build.Experiment` → the host loop →
metrics, plots, checkpoints.

Rounds run on device in ``lax.scan`` chunks of ``eval_every`` rounds (one compiled program for
the whole run); between chunks the host evaluates, logs a ``metrics.jsonl`` row, updates the
progress bar and saves an orbax checkpoint of the whole round state every
``checkpoint_every`` rounds. A run started in a workdir that holds a checkpoint of the same
config resumes from it and ends exactly where an uninterrupted run would, because round t
draws its randomness from ``fold_in(key, t)`` only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path

import ml_collections
import numpy as np

from redeem_jax.experiment import config as _config
from redeem_jax.experiment import loop as _loop
from redeem_jax.experiment.build import Experiment, build

__all__ = [
    "RESUME_FREE",
    "RunResult",
    "WorkdirError",
    "check_resumable",
    "clear_run_outputs",
    "horizon_dependents",
    "run",
]

RESUME_FREE = _loop.RESUME_FREE  # fields a resumed run may change: they do not enter what was computed
WorkdirError = _loop.WorkdirError


@dataclasses.dataclass
class RunResult:
    """What ``rj.run`` returns: ``metrics`` maps each metric name to an array over logged rounds;
    ``params`` are the evaluated models ``[N, d]`` at the end, ``state`` the whole round state."""

    metrics: dict[str, np.ndarray]
    rows: list[dict]
    state: object
    config: ml_collections.ConfigDict
    workdir: Path | None
    compilations: int
    experiment: Experiment

    @property
    def final(self) -> dict:
        """The last logged row."""
        return self.rows[-1]

    @property
    def params(self):
        """The evaluated models ``[N, d]`` of the final state."""
        return self.experiment.models(self.state)

    def to_pandas(self):
        """The logged rows as a ``pandas.DataFrame``: one row per logged round, a column per metric
        and one per config field under its dotted name (``topology.name``, ...), as
        :func:`~redeem_jax.experiment.results.load_run` reads the workdir back."""
        from redeem_jax.experiment import results

        extra = {"workdir": str(self.workdir)} if self.workdir is not None else {}
        return results.frame(self.rows, self.config, **extra)


# --------------------------------------------------------------------------- #
# workdirs that hold one run
# --------------------------------------------------------------------------- #
def horizon_dependents(c) -> list[str]:
    """Fields whose effect depends on ``num_rounds`` (so a resume must not change it): a σ
    calibrated to ``target_epsilon`` over the whole run, and schedules decaying over it."""
    out = []
    if c.privacy.mode != "none" and c.privacy.target_epsilon > 0:
        out.append("privacy.target_epsilon (σ is calibrated over num_rounds)")
    if c.optimizer.schedule in ("cosine", "warmup_cosine"):
        out.append(f"optimizer.schedule = {c.optimizer.schedule!r} (it decays over num_rounds)")
    return out


def check_resumable(old: dict, c, where: str, prefix: str = "config") -> None:
    """Refuse to resume ``where`` (a workdir made with the config ``old``) under ``c`` when any
    field its past depended on differs; one line naming the field."""
    old, new = _config._flatten(old), _config._flatten(json.loads(c.to_json()))
    diff = sorted(k for k in set(old) | set(new) if k not in RESUME_FREE and _norm(old.get(k)) != _norm(new.get(k)))
    hint = "use a new --workdir or set config.resume=False (which clears it)"
    if diff:
        changes = ", ".join(f"{prefix}.{k}: {_show(old, k)} -> {_show(new, k)}" for k in diff)
        raise _config.ConfigError(
            f"{changes}: the checkpoint in {where} was made with the value(s) on the left; {hint}"
        )
    if old.get("num_rounds") != new.get("num_rounds") and horizon_dependents(c):
        raise _config.ConfigError(
            f"{prefix}.num_rounds: the checkpoint in {where} was made for num_rounds={old.get('num_rounds')} and "
            f"{horizon_dependents(c)[0]}, so resuming with num_rounds={new.get('num_rounds')} would change its past; "
            f"{hint}"
        )


def _norm(v):
    return _norm(list(v)) if isinstance(v, tuple) else [_norm(x) for x in v] if isinstance(v, list) else v


def _show(flat: dict, key: str) -> str:
    return repr(flat[key]) if key in flat else "(absent)"


def clear_run_outputs(workdir: Path, names=("checkpoints", "metrics.jsonl", "config.json")) -> None:
    """Remove a previous run's checkpoints and metrics from ``workdir``, together, so that the
    next run in it can never resume from (or stitch rows onto) a run it did not continue."""
    for name in names:
        p = workdir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def read_record(path: Path) -> dict | None:
    """A workdir's ``config.json`` / ``sweep.json``, None when absent; refused in one line when unreadable."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise WorkdirError(
            path,
            f"{path}: unreadable ({type(e).__name__}); restore it, or set config.resume=False "
            "(which clears the workdir), or use a new --workdir",
        ) from e


def refuse_to_discard(wd: Path, c, rows_files=("metrics.jsonl",)) -> None:
    """``checkpoint_every = 0`` with ``resume`` on a workdir that holds checkpoints would orphan
    them and overwrite the run's rows: refused in one line. Rows without checkpoints (a run that
    could never resume) are replaced, with a warning naming them."""
    steps = _loop.checkpoint_steps(wd / "checkpoints")
    if steps:
        raise WorkdirError(
            wd,
            f"config.checkpoint_every: 0 would discard the run in {wd}, checkpointed up to round "
            f"{steps[0]}; set checkpoint_every as it was to continue it, or set "
            "config.resume=False (which clears it), or use a new --workdir",
        )
    for name in rows_files:
        rows = _loop.read_rows(wd / name)
        if rows:
            warnings.warn(
                f"{wd / name}: replacing the rows of the previous run in {wd} (up to round "
                f"{rows[-1]['round']}, without checkpoints to resume from)",
                stacklevel=3,
            )


def _open_workdir(wd: Path, c, record_name: str, record: dict, check) -> None:
    """Prepare a run's workdir: check it before resuming, refuse to discard a resumable run, or
    clear it (``resume=False``); then write its record atomically as strict JSON."""
    _loop.check_writable(wd)
    if c.resume and c.checkpoint_every:
        check()
    elif c.resume:
        refuse_to_discard(wd, c)
    else:  # this run starts afresh: nothing of an older run may stay to be resumed later
        clear_run_outputs(wd, ("checkpoints", "metrics.jsonl", "rows.jsonl", record_name))
    _loop._write_atomic(wd / record_name, _loop.dumps(record, indent=2))


# --------------------------------------------------------------------------- #
# the run
# --------------------------------------------------------------------------- #
def run(config, workdir: str | os.PathLike | None = None, topology=None):
    """Run one experiment (``config.algorithm`` over ``config.topology``) and return a :class:`RunResult`.

    With ``workdir``: writes ``config.json``, ``metrics.jsonl``, ``metrics.png`` and orbax
    checkpoints there, and resumes from the latest checkpoint. ``topology`` replaces the
    config's graph (see :func:`~redeem_jax.experiment.build.build`). With ``config.compare.key``
    set, runs once per value into ``workdir/<value>`` and returns ``{value: RunResult}`` plus a
    joint ``comparison.png``.
    """
    c = _config.validate(config)
    if workdir is not None:  # before any work: a workdir that cannot take the outputs fails now
        _loop.check_writable(Path(workdir))
    if c.compare.key:
        return _run_compare(c, workdir, topology)
    return run_experiment(build(c, topology), workdir)


def run_experiment(exp: Experiment, workdir) -> RunResult:
    """The host loop over one built experiment (see :mod:`redeem_jax.experiment.loop`)."""
    c = exp.config
    wd = Path(workdir) if workdir is not None else None
    mesh = None
    if c.perf.mesh:  # state and node data over the mesh, each device holding its nodes' rows (docs/scale.md)
        from redeem_jax.network import sharding

        mesh = sharding.make_mesh(c.perf.mesh, num_nodes=c.num_nodes)
    if wd is not None:
        config_path = wd / "config.json"

        def check():
            old = read_record(config_path)
            if old is not None:
                check_resumable(old, c, str(wd))
            _loop.check_horizon(wd, c.num_rounds)

        _open_workdir(wd, c, "config.json", json.loads(c.to_json()), check)
    record = bool(c.privacy.get("network_dp_record", False))
    if record:  # before any work: a recording too large for dense [T, N, N] fails now
        from redeem_jax.privacy.analysis import network_dp

        try:
            network_dp.check_record_size(c.num_rounds, c.num_nodes)
        except ValueError as e:
            raise _config.ConfigError(f"config.{e}") from e
    lp = _loop.Loop(exp, mesh=mesh, show=c.progress)
    say = (lambda r: f"resuming from the checkpoint at round {r} in {wd}") if c.progress else None
    rows = _loop.resume_and_run(lp, wd, "metrics.jsonl", c.checkpoint_every, c.resume, say)
    if record and wd is not None:  # the graphs of every round, drawn again from the run's key
        network_dp.record_run(exp, lp.state, wd)
    if wd is not None:
        _loop._write_atomic(wd / "partition.json", _loop.dumps(exp.partition_summary.to_dict()))
    if wd is not None and c.plots:
        from redeem_jax import plotting

        plotting.plot_history(rows, wd / "metrics.png", title=title(c))
        plotting.plot_partition(exp.partition_summary, wd / "partition.png")
    return RunResult(_loop.columns(rows), rows, lp.state, c, wd, len(exp.trace_counter), exp)


def title(c) -> str:
    names = {"dsgd": f"D-SGD ({c.algorithm.order.upper()})", "fedavg": "FedAvg"}
    algo = names.get(c.algorithm.name, c.algorithm.name)
    title = f"{algo} · {c.data.name}/{c.model.name} · {c.topology.name} n={c.num_nodes}"
    if c.byzantine.num:
        title += f" · {c.byzantine.num} Byzantine ({c.byzantine.attack})"
    return title


def _run_compare(c, workdir, topology=None):
    key = c.compare.key
    runs: list[tuple[str, dict]] = [(str(v), {key: v}) for v in c.compare.choices]
    if c.compare.reference:
        overrides = _config.parse_overrides(c.compare.reference)
        runs.append(("reference (" + ", ".join(f"{k}={v}" for k, v in overrides.items()) + ")", overrides))
    subs = []
    for label, overrides in runs:
        sub = ml_collections.ConfigDict(c.to_dict())
        for k, v in overrides.items():
            _config.set_field(sub, k, v)
        sub.compare.key = ""
        sub.compare.choices = ()
        sub.compare.reference = ""
        try:  # every run is built (names resolved, sizes checked) before the first one starts
            subs.append((label, build(sub, topology)))
        except _config.ConfigError as e:
            raise _config.ConfigError(f"{e} (in the compared run {label!r})") from e
    results = {}
    for label, exp in subs:
        folder = "reference" if label.startswith("reference") else label
        sub_dir = Path(workdir) / folder if workdir is not None else None
        results[label] = run_experiment(exp, sub_dir)
    if workdir is not None and c.plots:
        from redeem_jax import plotting

        Path(workdir).mkdir(parents=True, exist_ok=True)
        plotting.plot_comparison(
            {k: r.rows for k, r in results.items()}, Path(workdir) / "comparison.png", title=f"{title(c)} · by {key}"
        )
    if workdir is not None:
        summary = {k: _loop._encode(r.final) for k, r in results.items()}
        _loop._write_atomic(Path(workdir) / "comparison.json", _loop.dumps(summary, indent=2))
    return results
