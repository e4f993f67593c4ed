"""Gossip: one averaging step ``x <- W x`` over a :class:`~redeem_jax.topology.Topology`.

The D-SGD communication step (Lian et al. 2017; Koloskova et al. 2020) on the
flat parameter rows ``x [n, d]`` of all nodes. Three implementations give the
same result (tests check equality to 1e-5):

* ``"dense"``: ``W @ x`` with ``W`` a constant ``[n, n]``; best for small or
  dense graphs (and on accelerators at moderate ``n``).
* ``"sparse"``: gather each node's ``K`` in-neighbour rows (``gather``) then a
  weighted sum with the self weight (``combine``): ``O(n K d)`` work.
* ``"roll"``: for circulant graphs (ring, exponential, one-peer exponential,
  small complete graphs) ``W x = c_0 x + sum_s c_s roll(x, s)`` (needs an
  unsharded node axis: ``jnp.roll`` on a sharded axis fails).

``method="auto"`` picks dense when the graph is dense (mean degree > n/8,
n <= 4096) or, on GPU/TPU, when ``n <= 256`` (matrix units make a small
``W @ x`` nearly free); otherwise sparse. On CPU a dense step costs
``2 n^2 d`` flops and is 10-200x slower than sparse on a ring even at
n = 256 (docs/performance.md), hence no small-n rule there. Roll is opt-in: on CPU it is no
faster than sparse on a ring and 10x slower on the exponential graph, whose
far shifts XLA materialises (docs/performance.md). All paths are jittable with a traced ``round`` for time-varying
topologies (``W(round % period)``), and never loop over nodes in Python.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax.network.topology import Topology

__all__ = ["mix", "mix_edges", "gather", "combine", "consensus_distance", "resolve_method", "check_float", "METHODS"]

METHODS = ("auto", "dense", "sparse", "roll")
_DENSE_AUTO_MAX_N = 256
_DENSE_MAX_N = 16384  # dense W above this is >= 1 GiB in float32: refuse
_UNROLL_MAX_K = 32  # unroll per-slot accumulation up to this many neighbour slots


def _compute_dtype(dtype):
    # Weights are applied in at least float32 (bf16 weights would bias the
    # average); float64 inputs stay float64 when x64 is enabled.
    return jnp.promote_types(dtype, jnp.float32)


def _out_dtype(dtype):
    return dtype if jnp.issubdtype(dtype, jnp.floating) else _compute_dtype(dtype)


def check_float(dtype, where: str):
    """Raise a one-line TypeError unless ``dtype`` is a float: averaging integer (or bool)
    rows would silently return floats of another dtype, or truncate."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{where}: got {dtype.name} rows; gossip and robust rules average floats, "
            "cast them to a float dtype (float32, bfloat16, ...) first"
        )
    return dtype


def dense_limit_error(n: int, what: str = "dense gossip") -> ValueError:
    """The one refusal of a dense ``n x n`` matrix above ``_DENSE_MAX_N`` (shared by gossip and
    CS+'s step size)."""
    gb = n * n * 4 / 2**30
    return ValueError(f"{what} with n={n} would need a {gb:.1f} GiB W; use method='sparse'")


def _is_static_round(round) -> bool:
    return round is None or isinstance(round, (int, np.integer))


def resolve_method(topo: Topology, method: str = "auto") -> str:
    """The implementation ``mix`` uses for ``method`` on ``topo`` (see module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown gossip method {method!r}; expected one of {METHODS}")
    if method == "roll" and not topo.is_circulant:
        raise ValueError(f"method='roll' needs a circulant topology; {topo.name} is not")
    if method == "dense" and topo.n > _DENSE_MAX_N:
        raise dense_limit_error(topo.n)
    if method != "auto":
        return method
    n = topo.n
    mean_degree = float(topo.degrees.mean())
    if n <= 4096 and mean_degree > n / 8:
        return "dense"
    if n <= _DENSE_AUTO_MAX_N and jax.default_backend() != "cpu":
        return "dense"
    return "sparse"


def _dense_stack(topo: Topology) -> np.ndarray:
    # Host-side cache (numpy, never a tracer): built once per topology.
    key = "gossip_dense_stack"
    if key not in topo._cache:
        topo._cache[key] = topo.mixing_matrices()
    return topo._cache[key]


def _select(stack: np.ndarray, period: int, round):
    """``stack[round % period]`` for a static or traced round (stack has a leading T axis)."""
    if period == 1:
        return jnp.asarray(stack[0])
    if _is_static_round(round):
        return jnp.asarray(stack[0 if round is None else int(round) % period])
    return jnp.asarray(stack)[jnp.asarray(round) % period]


def _edge_arrays(topo: Topology, round, dtype):
    """Edge arrays with weights in ``dtype`` (float64 copies when x64 is on)."""
    w64, s64 = topo._weights64, topo._self_weight64
    if topo.period == 1:
        w64, s64 = w64[None], s64[None]
    nbr = topo.neighbors if topo.period > 1 else topo.neighbors[None]
    np_dtype = np.dtype(dtype)
    return (
        _select(nbr, topo.period, round),
        _select(w64.astype(np_dtype), topo.period, round),
        _select(s64.astype(np_dtype), topo.period, round),
    )


def _flat(x):
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError("gossip needs x with a leading node axis, got a scalar")
    return x.reshape(x.shape[0], -1), x.shape


def gather(topo: Topology, x, round=None):
    """Messages each node receives: ``out[i, k] = x[neighbors[i, k]]``, shape ``[n, K, d]``.

    Honest senders send the same row to all their out-neighbours; attacks
    overwrite the Byzantine slots of this array before aggregation. Padded slots
    hold the node's own row (weight 0, ``edge_mask`` False). ``round`` may be
    traced (time-varying topologies use ``neighbors[round % period]``).
    """
    x = jnp.asarray(x)
    if x.shape[0] != topo.n:
        raise ValueError(f"x has {x.shape[0]} rows but the topology has n={topo.n} nodes")
    nbr = topo.edge_arrays(round)[0]
    # Neighbour ids are in range by construction (padding points at self).
    return x.at[nbr].get(mode="promise_in_bounds")


def _accumulate(y, K: int, slot_fn):
    """``y + sum_k slot_fn(k)``: unrolled for small K so XLA fuses one pass, else a fori_loop."""
    if K <= _UNROLL_MAX_K:
        for k in range(K):
            y = y + slot_fn(k)
        return y
    return jax.lax.fori_loop(0, K, lambda k, acc: acc + slot_fn(k), y)


def _weighted(wk, v):
    # Zero-weight (padded) slots contribute exactly 0 even if v is NaN/inf.
    return jnp.where(wk != 0, wk * v, 0)


def combine(x, messages, weights, self_weight):
    """Gossip average from received messages: ``W_ii x_i + sum_k W_i,k m_i,k`` -> ``[n, d]``.

    The D-SGD consensus step (Lian et al. 2017) written per node, so that
    ``mix(..., method="sparse") == combine(x, gather(topo, x), w, sw)``.
    Zero-weight slots (padding) contribute exactly 0 even if their message is
    NaN or inf, so an attacker cannot poison a node through a padded slot. Sums in
    ``promote(dtype, float32)``, returned in ``x``'s dtype; integer rows raise TypeError.
    """
    x = jnp.asarray(x)
    messages = jnp.asarray(messages)
    check_float(x.dtype, "gossip.combine")
    check_float(messages.dtype, "gossip.combine (messages)")
    ct = _compute_dtype(jnp.result_type(x.dtype, messages.dtype))
    w = jnp.asarray(weights).astype(ct)
    sw = jnp.asarray(self_weight).astype(ct)
    tail = (1,) * (x.ndim - 1)
    m = messages.astype(ct)

    def slot(k):
        # Slot-by-slot accumulation: 5-10x faster on CPU than a reduction
        # over the K axis of the [n, K, d] tensor (benchmarks/gossip_cost.py).
        wk = jax.lax.dynamic_index_in_dim(w, k, 1, keepdims=False).reshape(w.shape[:1] + tail)
        return _weighted(wk, jax.lax.dynamic_index_in_dim(m, k, 1, keepdims=False))

    y = _accumulate(sw.reshape(sw.shape + tail) * x.astype(ct), messages.shape[1], slot)
    return y.astype(_out_dtype(x.dtype))


def mix_edges(x, neighbors, weights, self_weight):
    """``W x`` for one round's padded edges (a graph drawn in the round, DESIGN.md): node i gets
    ``self_weight_i x_i + sum_k weights_ik x[neighbors_ik]`` (the D-SGD consensus step, Lian et
    al. 2017). Equal to ``combine(x, x[neighbors], weights, self_weight)`` but one fused row
    gather per slot instead of materialising the ``[n, K, d]`` messages (3-15x on CPU,
    benchmarks/gossip_cost.py); zero-weight slots contribute exactly 0."""
    x = jnp.asarray(x)
    check_float(x.dtype, "gossip.mix_edges")
    ct = _compute_dtype(x.dtype)
    w = jnp.asarray(weights).astype(ct)
    sw = jnp.asarray(self_weight).astype(ct)
    xc = x.astype(ct)
    tail = (1,) * (x.ndim - 1)
    nbr = jnp.asarray(neighbors)

    def slot(k):
        nk = jax.lax.dynamic_index_in_dim(nbr, k, 1, keepdims=False)
        wk = jax.lax.dynamic_index_in_dim(w, k, 1, keepdims=False).reshape(w.shape[:1] + tail)
        return _weighted(wk, xc.at[nk].get(mode="promise_in_bounds"))

    y = _accumulate(sw.reshape(sw.shape + tail) * xc, nbr.shape[1], slot)
    return y.astype(_out_dtype(x.dtype))


def _mix_dense(topo, x, round, ct):
    W = _select(_dense_stack(topo).astype(np.dtype(ct)), topo.period, round)
    # HIGHEST: accelerators otherwise use TF32/bf16 passes and break equality.
    return jnp.matmul(W, x.astype(ct), precision=jax.lax.Precision.HIGHEST)


def _mix_sparse(topo, x, round, ct):
    # One row-gather per neighbour slot, accumulated: XLA fuses these into a
    # single pass and never materialises the [n, K, d] message tensor, which
    # made the gather-then-sum form 3-15x slower on CPU (benchmarks/gossip_cost.py).
    if topo.is_padding_wasteful:
        return _mix_buckets(topo, x, round, ct)
    nbr, w, sw = _edge_arrays(topo, round, ct)
    x = x.astype(ct)
    return _accumulate(sw[:, None] * x, topo.K, _slot_fn(x, nbr, w))


def _slot_fn(x, nbr, w):
    def slot(k):
        nk = jax.lax.dynamic_index_in_dim(nbr, k, 1, keepdims=False)
        wk = jax.lax.dynamic_index_in_dim(w, k, 1, keepdims=False)[:, None]
        return _weighted(wk, x.at[nk].get(mode="promise_in_bounds"))

    return slot


def _mix_buckets(topo, x, round, ct):
    # Hub graphs (a star): padded [n, K] lists would hold n·K_max slots. Nodes grouped by
    # in-degree class (Topology._degree_buckets, <= n + 2·edges slots) are accumulated
    # slot by slot in the padded lists' order: _mix_sparse's sums, up to fused multiply-adds.
    np_ct = np.dtype(ct)
    sw64 = topo._self_weight64.reshape(topo.period, topo.n)

    def branch(t):
        buckets, inverse = topo._degree_buckets(t)

        def f(x):
            x = x.astype(ct)
            parts = [
                _accumulate(
                    jnp.asarray(sw64[t, rows].astype(np_ct))[:, None] * x[rows],
                    nbr.shape[1],
                    _slot_fn(x, jnp.asarray(nbr), jnp.asarray(w.astype(np_ct))),
                )
                for rows, nbr, w in buckets
            ]
            return jnp.concatenate(parts).at[jnp.asarray(inverse)].get(mode="promise_in_bounds")

        return f

    if topo.period == 1:
        return branch(0)(x)
    if _is_static_round(round):
        return branch(0 if round is None else int(round) % topo.period)(x)
    return jax.lax.switch(jnp.asarray(round) % topo.period, [branch(t) for t in range(topo.period)], x)


def _roll_branch(shifts, weights, selfw, ct, roll=None):
    """``x -> selfw·x + Σ_s w_s·roll(x, s)`` (``roll(x, s)[i] = x[i - s]``) for one round of a
    circulant graph. ``roll`` defaults to ``jnp.roll`` on the node axis; sharded gossip passes
    its ppermute block roll, so both compute in the same order (bit-identical results)."""
    shifts = [int(s) for s in shifts]
    weights = [float(w) for w in weights]
    selfw = float(selfw)
    roll = roll or (lambda x, s: jnp.roll(x, s, axis=0))

    def f(x):
        x = x.astype(ct)
        y = selfw * x
        for s, w in zip(shifts, weights):
            if w != 0.0:
                y = y + w * roll(x, s)
        return y

    return f


def _mix_roll(topo, x, round, ct):
    shifts, weights, selfw = topo._circulant
    branches = [_roll_branch(shifts[t], weights[t], selfw[t], ct) for t in range(topo.period)]
    if topo.period == 1:
        return branches[0](x)
    if _is_static_round(round):
        return branches[0 if round is None else int(round) % topo.period](x)
    # One static-shift branch per round of the period: each stays a fused
    # streaming pass, unlike a roll by a traced shift.
    return jax.lax.switch(jnp.asarray(round) % topo.period, branches, x)


def mix(topo: Topology, x, round=None, method: str = "auto"):
    """One gossip step ``x <- W(round) x`` on node rows ``x [n, ...]`` (dtype kept).

    The consensus step of D-SGD (Lian et al. 2017) and of the unified analysis
    of Koloskova et al. (2020); ``W`` from the topology's weight rule
    (Metropolis–Hastings by default, Xiao & Boyd 2004). ``round`` selects
    ``W(round % period)`` and may be a traced integer under ``jit``; static
    topologies ignore it. ``method``: "auto" | "dense" | "sparse" | "roll"
    (see :func:`resolve_method`); all give the same result up to float
    roundoff. Arithmetic is in ``promote(x.dtype, float32)`` (float16 / bfloat16 rows are
    summed in float32 and rounded once at the end); integer or bool rows raise TypeError.
    """
    xf, shape = _flat(x)
    if xf.shape[0] != topo.n:
        raise ValueError(f"x has {xf.shape[0]} rows but the topology has n={topo.n} nodes")
    check_float(xf.dtype, "gossip.mix")
    m = resolve_method(topo, method)
    ct = _compute_dtype(xf.dtype)
    if m == "dense":
        y = _mix_dense(topo, xf, round, ct)
    elif m == "roll":
        y = _mix_roll(topo, xf, round, ct)
    else:
        y = _mix_sparse(topo, xf, round, ct)
    return y.astype(_out_dtype(xf.dtype)).reshape(shape)


# One consensus distance for the whole library (rj.metrics): (1/n)Σ‖xᵢ − x̄‖² over axis −2, with an
# optional node mask; re-exported here, where gossip's contraction of it is studied.
from redeem_jax.metrics import consensus_distance  # noqa: E402
