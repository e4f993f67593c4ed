"""The peers the benchmarks measure against, and the timing every benchmark shares.

Peers are optional (``pip install .[bench]``, or ``pip install torch==2.13.0`` and
``pip install --no-deps byzfl seaborn``): a benchmark skips a peer that is missing and says
how to install it. ByzFL imports torchvision for its own data loaders (its package
``__init__`` pulls in its benchmark module); the aggregators, attacks and training loop
measured here never touch it, so when torchvision is absent a stand-in module is installed
for the import only (the CPU torch wheel on this machine has no matching torchvision).
"""

from __future__ import annotations

import statistics
import sys
import time
import types
from collections.abc import Callable

INSTALL = "pip install .[bench]   (CPU only: pip install torch==2.13.0 seaborn, then pip install --no-deps byzfl)"


def torch_or_none():
    """``torch`` (single-threaded: faster than two threads for per-node models on 2 cores), or None."""
    try:
        import torch
    except ImportError:
        print(f"# PyTorch is not installed: skipping its baseline ({INSTALL})")
        return None
    torch.set_num_threads(1)
    return torch


class _Stub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def byzfl_or_none():
    """``byzfl`` (ByzFL, EPFL), or None when it (or torch) is not installed."""
    if torch_or_none() is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a wheel built for another torch ("operator torchvision::nms does not exist")
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # a half-imported broken wheel
        for name in ("torchvision", "torchvision.datasets", "torchvision.transforms"):
            sys.modules[name] = _Stub(name)
        sys.modules["torchvision"].datasets = sys.modules["torchvision.datasets"]
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    try:
        import byzfl
    except ImportError:
        print(f"# ByzFL is not installed: skipping its baseline ({INSTALL})")
        return None
    return byzfl


def block(out):
    """Wait for ``out`` (JAX arrays, torch tensors, numpy: whatever a timed call returns)."""
    import jax

    jax.block_until_ready(out)
    return out


def interleaved(fns: dict[str, Callable], repeats: int = 5, warmup: int = 1, inner: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each ``fns[name]()``, the contenders interleaved (A, B, C, A, B, C, ...)
    so that load on the machine hits every contender alike; ``warmup`` untimed calls each
    first. Each sample is ``inner`` back-to-back calls of one contender (time / inner): a
    millisecond-long call right after another library's would otherwise also time waking
    XLA's idle worker threads and refilling caches the other library evicted."""
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(inner):
                out = fn()
            block(out)
            times[name].append((time.perf_counter() - t) / inner)
    return times


def spread(ts: list[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(ts), statistics.median(ts), max(ts)


def ratio_cell(base: list[float], ours: list[float]) -> str:
    """How many times faster ``ours`` is than ``base``: median ratio [min, max] over the paired repeats."""
    r = sorted(b / o for b, o in zip(base, ours))
    return f"{statistics.median(r):.2f}x [{r[0]:.2f}, {r[-1]:.2f}]"


def machine_rates(nbytes: int = 256 * 2**20) -> dict[str, float]:
    """The machine's floors, measured now: memory copy (GB/s, read + write of ``nbytes``, jitted
    ``y = x + 1`` into a donated buffer) and float32 GEMM (GFLOP/s, 1024³, jitted)."""
    import jax
    import jax.numpy as jnp

    n = nbytes // 4
    x = jnp.zeros((n,), jnp.float32)
    add = jax.jit(lambda a: a + 1.0, donate_argnums=0)
    x = block(add(x))
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        x = block(add(x))
        ts.append(time.perf_counter() - t)
    copy = 2 * nbytes / min(ts) / 1e9
    a = jnp.ones((1024, 1024), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    block(mm(a))
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        block(mm(a))
        ts.append(time.perf_counter() - t)
    return {"copy_GBps": copy, "sgemm_GFLOPs": 2 * 1024**3 / min(ts) / 1e9}


def load_average() -> str:
    try:
        return "load average " + " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "load average unknown"
