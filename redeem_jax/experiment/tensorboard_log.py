"""TensorBoard event files beside a run's ``metrics.jsonl``, so a run can be followed live with
``tensorboard --logdir runs/``.

On whenever the optional writer ``tensorboardX`` is installed (``pip install redeem_jax[tb]``)
and ``REDEEM_JAX_TENSORBOARD`` is not ``0``; silently off otherwise. Every numeric field of a
logged row becomes a scalar of the same name at ``global_step = round``, written and flushed
when the row is appended to ``metrics.jsonl``, so the two always hold the same numbers.

A run that starts from round 0 removes the event files of an earlier run in its workdir (as
``metrics.jsonl`` is replaced); a resumed run opens a new file with ``purge_step`` set just
after its checkpoint, so TensorBoard hides the old file's points past the round it resumed
from, exactly as the rows file is cut there.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["EVENT_PREFIX", "Writer", "available", "open_writer"]

EVENT_PREFIX = "events.out.tfevents."  # the file names TensorBoard looks for


def available() -> bool:
    """Whether event files are written: ``tensorboardX`` importable and not switched off by
    ``REDEEM_JAX_TENSORBOARD=0``."""
    if os.environ.get("REDEEM_JAX_TENSORBOARD", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("tensorboardX") is not None


class Writer:
    """Scalars of metric rows into one event file of ``workdir`` (a thin ``tensorboardX`` wrapper)."""

    def __init__(self, workdir: Path, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self._w = SummaryWriter(str(workdir), purge_step=purge_step, flush_secs=10)

    def write(self, rows: list[dict]) -> None:
        """One scalar per numeric field of each row (``round`` is the step), then flush so a
        TensorBoard following the run sees them now."""
        for row in rows:
            step = int(row["round"])
            for key, value in row.items():
                if key == "round" or isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
                    continue
                self._w.add_scalar(key, float(value), global_step=step)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


def open_writer(workdir: Path | None, start_round: int) -> Writer | None:
    """The writer of a run in ``workdir`` whose rows before ``start_round`` are kept (a resume
    after round ``start_round - 1``; 0: the run starts afresh and earlier event files are
    removed), or None when event files are off."""
    if workdir is None or not available():
        return None
    workdir = Path(workdir)
    if start_round == 0:
        for p in workdir.glob(EVENT_PREFIX + "*"):
            p.unlink(missing_ok=True)
    return Writer(workdir, purge_step=start_round if start_round > 0 else None)
