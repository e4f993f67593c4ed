"""Memory: host memory reuse (keep freed large blocks instead of returning them to the OS,
glibc only), and :func:`memory_report`, the bytes a run holds by part, from shapes.

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

:func:`memory_report` (``rj.memory_report(config)``) counts what a run holds — parameters,
optimizer state, algorithm state, channel and oracle state, messages in flight, node data —
from the shapes of its state pytree, without allocating it; ``rj.run`` prints it at the start
and writes it to ``workdir/memory.json`` (docs/large_models.md).
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


# --------------------------------------------------------------------------- #
# What a run holds: the state pytree's bytes by part, from shapes only
# --------------------------------------------------------------------------- #
PARTS = (
    "parameters",
    "optimizer_state",
    "algorithm_state",
    "channel_state",
    "oracle_state",
    "messages",
    "node_data",
    "frozen_shared",
)


def _nbytes(tree) -> int:
    import jax
    import numpy as np

    return int(sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)))


def memory_report(config_or_experiment, state=None) -> dict:
    """Bytes a run holds, by part, in total and per node, computed from shapes only
    (``jax.eval_shape`` of the round-0 state: nothing is allocated or initialised).

    ``config_or_experiment``: a config (built with ``rj.build``) or an ``rj.Experiment``;
    ``state``: its ``RoundState`` (arrays or ``jax.ShapeDtypeStruct``), by default the one of
    ``init_state``. Parts (``PARTS``): ``parameters`` the evaluated rows ``models(state)``
    (``N·d·4`` for float32 rows); ``optimizer_state`` the local optimizer's state of those rows
    (momentum, Adam's two moments); ``algorithm_state`` the rest of the algorithm's state
    (gradient tracking's y and last gradient, Choco's copies, personal models, ...);
    ``channel_state`` / ``oracle_state`` the exchanges' and the oracle's own state;
    ``messages`` what one exchange puts in flight, every received row at once (``N·K·d`` per
    graph exchange, K the padded degree, ``N·d`` per server exchange, at ``perf.message_dtype``;
    an upper bound: dense gossip never forms it); ``node_data`` the padded train shards and local
    test sets; ``frozen_shared`` what the step closes over once for all nodes (a LoRA run's frozen
    base row and factors: ``d_base·4`` bytes, not ``N·d_base·4``). Activations are not in it (they depend on XLA's schedule;
    ``model.remat`` and ``optimizer.grad_accum`` bound them; benchmarks/lm_scale.py measures
    them from the compiled step). Returns ``{"num_nodes", "num_params", "bytes": {part:
    int, "total": int}, "per_node": {part: float, "total": float}}``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from redeem_jax.experiment import build as _build

    exp = config_or_experiment
    if not isinstance(exp, _build.Experiment):
        exp = _build.build(exp)
    c = exp.config
    n, d = int(c.num_nodes), int(exp.model.num_params)
    if state is None:
        state = jax.eval_shape(exp.init_state)
    rows = jax.eval_shape(exp.models, state)
    params = _nbytes(rows)
    try:
        opt_shape = jax.eval_shape(_build._optimizer(c).init, jax.ShapeDtypeStruct((n, d), jnp.float32))
        opt = _nbytes(opt_shape)
    except Exception:  # an algorithm without the config's optimizer: counted in its own state
        opt = 0
    algo_total = _nbytes(state.algorithm)
    opt = min(opt, max(algo_total - params, 0))
    msg_item = np.dtype(c.perf.message_dtype if c.perf.message_dtype != "bfloat16" else jnp.bfloat16).itemsize
    k = int(getattr(exp.topology, "K", n - 1) or 0)
    messages = sum((n if ex.over == "server" else n * k) * d * msg_item for ex in exp.algorithm.exchanges.values())
    out = {
        "parameters": params,
        "optimizer_state": opt,
        "algorithm_state": max(algo_total - params - opt, 0),
        "channel_state": _nbytes(state.channels),
        "oracle_state": _nbytes(state.oracle),
        "messages": int(messages),
        "node_data": _nbytes(exp.node_data),
        "frozen_shared": _nbytes((lora.base, lora.frozen_a)) if (lora := getattr(exp, "lora", None)) else 0,
    }
    out["total"] = sum(out.values())
    return {
        "num_nodes": n,
        "num_params": d,
        "bytes": out,
        "per_node": {key: v / n for key, v in out.items()},
    }


def _human(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(b) < 1024 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TB"


def format_report(report: dict) -> str:
    """One line of :func:`memory_report` per node (what ``rj.run`` prints at the start)."""
    per = report["per_node"]
    parts = ", ".join(f"{k.replace('_', ' ')} {_human(per[k])}" for k in PARTS if per[k])
    return (
        f"memory per node (d = {report['num_params']:,} parameters): {parts}; "
        f"total {_human(per['total'])} per node, {_human(report['bytes']['total'])} for {report['num_nodes']} nodes"
    )
