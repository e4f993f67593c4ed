"""TensorBoard event files beside a run's ``metrics.jsonl``, so a run can be followed live with
``tensorboard --logdir runs/``.

The writer is built in (no dependency; importing TensorBoard or tensorboardX would pull in
TensorFlow or PyTorch, seconds of start-up for every run): an event file is a TFRecord file
(Abadi et al. 2016, the TensorFlow record format: length, masked CRC-32C of the length, payload,
masked CRC-32C of the payload) of ``Event`` protocol buffers, each holding ``Summary.Value``
scalars, encoded here by hand with the five field numbers TensorBoard reads. On unless
``REDEEM_JAX_TENSORBOARD=0``. Every numeric field of a logged row becomes a scalar of the same
name at ``step = round``, written and flushed when the row is appended to ``metrics.jsonl``, so
the two always hold the same numbers (float32, as TensorBoard stores them).

A run that starts from round 0 removes the event files of an earlier run in its workdir (as
``metrics.jsonl`` is replaced); a resumed run opens a new file that starts with a
``SessionLog.START`` event at the round just after its checkpoint, which makes TensorBoard drop
the old file's points from that round on, exactly as the rows file is cut there.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["EVENT_PREFIX", "Writer", "available", "open_writer"]

EVENT_PREFIX = "events.out.tfevents."  # the file names TensorBoard looks for


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C: rotate right by 15 and add a constant (so a CRC of CRCs is not
    a CRC)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited field (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(
    step: int, *, file_version: str | None = None, scalars: dict[str, float] | None = None, session_start: bool = False
) -> bytes:
    """One ``tensorflow.Event``: wall_time = 1 (double), step = 2 (int64), file_version = 3,
    summary = 5 (``Summary``: value = 1, ``Value``: tag = 1, simple_value = 2 (float)),
    session_log = 6 (``SessionLog``: status = 1, START = 1)."""
    msg = b"\x09" + struct.pack("<d", time.time()) + b"\x10" + _varint(step & (2**64 - 1))
    if file_version is not None:
        msg += _field(3, file_version.encode())
    if scalars:
        values = b"".join(
            _field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", v)) for tag, v in scalars.items()
        )
        msg += _field(5, values)
    if session_start:
        msg += _field(6, b"\x08\x01")
    return msg


class Writer:
    """Scalars of metric rows into one event file of ``workdir``."""

    def __init__(self, workdir: Path, purge_step: int | None = None):
        name = f"{EVENT_PREFIX}{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{id(self)}"
        self._f = open(Path(workdir) / name, "ab")  # noqa: SIM115 - closed by close()
        self._record(_event(purge_step or 0, file_version="brain.Event:2"))
        if purge_step:
            self._record(_event(purge_step, session_start=True))
        self._f.flush()

    def _record(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._f.write(
            header + struct.pack("<I", _masked_crc32c(header)) + data + struct.pack("<I", _masked_crc32c(data))
        )

    def write(self, rows: list[dict]) -> None:
        """One event per row holding its numeric fields (``round`` is the step), then flush so a
        TensorBoard following the run sees them now."""
        for row in rows:
            scalars = {
                k: float(v)
                for k, v in row.items()
                if k != "round" and isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if scalars:
                self._record(_event(int(row["round"]), scalars=scalars))
        self._f.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._f.close()


def available() -> bool:
    """Whether event files are written: not switched off by ``REDEEM_JAX_TENSORBOARD=0``."""
    return os.environ.get("REDEEM_JAX_TENSORBOARD", "1").strip().lower() not in ("0", "false", "no", "off")


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
