"""What a run holds, by part, in bytes: ``rj.memory_report(config)``, computed from the shapes
of the round state (``jax.eval_shape``), nothing allocated. ``rj.run`` prints it before the first
round and writes it to ``workdir/memory.json`` (docs/large_models.md, "The memory report")."""

from __future__ import annotations

__all__ = ["PARTS", "memory_report", "format_report"]

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
