"""Runs as DataFrames: ``rj.load_run(workdir)`` and ``RunResult.to_pandas()``.

One row per logged round, a column per metric and one per config field under its dotted name
(``topology.name``, ``optimizer.learning_rate``, ...), so the runs of many workdirs are one
``pd.concat([rj.load_run(w) for w in dirs])`` away and can be grouped by any field. A
workdir is read as it is on disk, finished or still running: a torn last line of a row file
being written is left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from redeem_jax.experiment import config as _config
from redeem_jax.experiment import loop as _loop

__all__ = ["config_columns", "frame", "load_run"]


def config_columns(config) -> dict:
    """A config (``ConfigDict`` or the dict of a ``config.json``) as ``{dotted.name: value}``;
    lists become tuples so that every column can be grouped on."""
    if hasattr(config, "to_json"):
        config = json.loads(config.to_json())
    return {k: _hashable(v) for k, v in _config._flatten(config).items()}


def _hashable(v):
    return tuple(_hashable(x) for x in v) if isinstance(v, (list, tuple)) else v


def frame(rows: list[dict], config, **extra):
    """A ``pandas.DataFrame`` of ``rows`` (metric rows, one per round) with the config's fields
    as columns; a field a row also carries (a sweep point's axis value) keeps the row's value.
    ``extra``: constant columns put first (e.g. ``workdir``)."""
    import pandas as pd

    fields = config_columns(config) if config is not None else {}
    metrics = pd.DataFrame(rows) if rows else pd.DataFrame({"round": pd.Series([], dtype="int64")})
    consts = {**extra, **{k: v for k, v in fields.items() if k not in metrics.columns}}
    const = pd.DataFrame(
        {k: pd.Series([v] * len(metrics), index=metrics.index, dtype=object) for k, v in consts.items()}
    )
    out = pd.concat([const, metrics], axis=1) if len(consts) else metrics
    return out.infer_objects()


def load_run(workdir: str | os.PathLike):
    """The rows logged in ``workdir`` as a DataFrame, one per (run, round), with the config's
    fields as columns and a ``workdir`` column.

    ``workdir`` is a run's (``config.json`` + ``metrics.jsonl``), a sweep's (``sweep.json`` and
    one folder of ``rows.jsonl`` per group: the axes' values and ``point`` as columns), or a
    comparison's (``config.compare``: one run per sub-folder, named in a ``run`` column).
    A run still going is read up to its last whole row."""
    import pandas as pd

    wd = Path(workdir)
    if (wd / "sweep.json").exists():
        return _load_sweep(wd)
    if (wd / "metrics.jsonl").exists() or (wd / "config.json").exists():
        return frame(_loop.read_rows(wd / "metrics.jsonl"), _read_json(wd / "config.json"), workdir=str(wd))
    subs = sorted(p for p in wd.iterdir() if (p / "metrics.jsonl").exists()) if wd.is_dir() else []
    if not subs:
        raise _config.ConfigError(f"load_run: {wd} holds no metrics.jsonl, sweep.json or runs in sub-folders")
    frames = [
        frame(_loop.read_rows(p / "metrics.jsonl"), _read_json(p / "config.json"), workdir=str(p), run=p.name)
        for p in subs
    ]
    return pd.concat(frames, ignore_index=True)


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _load_sweep(wd: Path):
    import pandas as pd

    from redeem_jax.experiment import sweep as _sweep

    record = json.loads((wd / "sweep.json").read_text())
    axes = {k: [_hashable(v) for v in vs] for k, vs in record.get("axes", {}).items()}  # JSON lists were tuples
    found = {p.name: _loop.read_rows(p / "rows.jsonl") for p in wd.iterdir() if (p / "rows.jsonl").exists()}
    # The vmapped axes are in every row; the looped ones name the group's folder ("grid" when none).
    first = next((rows[0] for rows in found.values() if rows), {})
    looped = [k for k in axes if k not in first]
    frames = []
    for overrides in _sweep.grid({k: axes[k] for k in looped}) if looped else [{}]:  # the sweep's order
        rows = found.get(_sweep._group_dir(overrides))
        if rows is not None:
            frames.append(
                frame(
                    [{**overrides, **r} for r in rows],
                    record.get("config"),
                    workdir=str(wd / _sweep._group_dir(overrides)),
                )
            )
    if not frames:
        return frame([], record.get("config"), workdir=str(wd))
    return pd.concat(frames, ignore_index=True)
