"""Host memory reuse: keep freed large blocks instead of returning them to the OS (glibc only).

XLA's CPU runtime allocates each execution's temporaries as one block, hundreds of MB for a
round of a few hundred nodes, and frees it at the end of the call. glibc serves blocks above
its mmap threshold (at most 32 MB by default, and any block a worker thread's arena cannot
hold) with a fresh ``mmap`` that is unmapped again on ``free``: every call then touches every
page of its temporaries anew. On the development VM a page fault costs ~10 µs, so a D-SGD
round at N = 256 (a 222 MB temporary block, 57,000 faults) spent 0.2-2.5 s of system time per
call, more than its arithmetic, and timings varied 5x from call to call (docs/performance.md).

:func:`tune` raises the mmap threshold and trim threshold and keeps one malloc arena, so that
freed blocks stay in the process and the next call reuses the same, already mapped pages. It
is applied once by ``import redeem_jax`` through ``mallopt`` (it changes this process only,
never an environment variable that child processes would inherit). The cost is that memory a
computation freed is kept for reuse rather than returned to the OS: the resident set stays at
its peak. ``REDEEM_JAX_MALLOC=0`` in the environment turns it off; nothing in the library
depends on it for correctness, only for speed. Import redeem_jax before running JAX
computations: threads JAX starts earlier keep the arena they already have.

What a run holds on the device is another module's: ``rj.memory_report``
(:mod:`redeem_jax.experiment.memory`).
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
SETTINGS = {"M_ARENA_MAX": 1, "M_MMAP_THRESHOLD": 1 << 30, "M_TRIM_THRESHOLD": (1 << 31) - 1, "M_TOP_PAD": 512 << 20}
_PARAMS = {
    "M_ARENA_MAX": _M_ARENA_MAX,
    "M_MMAP_THRESHOLD": _M_MMAP_THRESHOLD,
    "M_TRIM_THRESHOLD": _M_TRIM_THRESHOLD,
    "M_TOP_PAD": _M_TOP_PAD,
}

applied: dict[str, int] = {}


def tune(settings: dict[str, int] | None = None) -> dict[str, int]:
    """Apply the malloc settings (default :data:`SETTINGS`) with glibc's ``mallopt``; returns
    those that took effect (empty off glibc Linux, or with ``REDEEM_JAX_MALLOC=0``)."""
    if os.environ.get("REDEEM_JAX_MALLOC", "1").strip().lower() in ("0", "off", "false", "no"):
        return {}
    if not sys.platform.startswith("linux"):
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return {}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    for name, value in (SETTINGS if settings is None else settings).items():
        if mallopt(_PARAMS[name], int(value)) == 1:
            applied[name] = int(value)
    return dict(applied)
