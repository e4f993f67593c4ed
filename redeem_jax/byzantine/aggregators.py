"""Robust aggregation: rules ``[n, d] -> [d]`` and pre-aggregators ``[n, d] -> [n', d]``.

Every function here is pure, jittable and vmappable over a leading node axis, so all nodes of a
decentralized network aggregate their (padded) neighbourhoods in one call::

    agg = aggregators.get("nnm+trimmed_mean")
    out = jax.vmap(lambda x, m: agg(x, f, m))(msgs, masks)     # msgs [N, K, d], masks [N, K]

Conventions shared by every rule (see ``docs/aggregators.md``):

* ``f`` is the static Byzantine tolerance (a Python int); ``n`` is the static number of rows.
* ``mask: bool[n]`` marks valid rows; masked rows are *absent*: ranks and counts use
  ``n_eff = mask.sum()`` while shapes stay static. ``agg(x, f, mask) == agg(x[mask], f)``
  whenever ``n_eff >= min_inputs(rule, f)``.
* Below the precondition (``n_eff < min_inputs(rule, f)``, e.g. a degree-1 node of a path with
  f = 1) a masked call returns the **first live row** unchanged: rows come "own row first"
  (:func:`neighbourhood`, robust gossip), so the node keeps its own value; with no live row,
  zeros. A select on the result (jittable, one row gather); a concrete mask also triggers a
  ``warnings.warn`` naming the rule, the live count and the precondition. An unmasked call
  below the precondition raises ValueError (``check_preconditions``, the same table).
* float16 / bfloat16 rows are computed in float32 (distances, sums, sorts, ``eigh``, the
  finite-value cap) and the result is cast back to the input dtype; integer and bool rows are
  refused with a TypeError.
* Non-finite rows (any NaN/±inf entry) are *present but infinitely far away*: distance-based
  rules give them distance +inf (they are never selected and get zero weight); coordinate-wise
  rules sort NaN as +inf. Finite entries are clamped to ``±C`` with
  ``C = sqrt(max_float / (64 n d))`` (about 1e15 for float32 at n=64, d=1e5), far beyond any
  honest value, so that squared distances and sums of ``n`` of them never overflow: an input of
  1e38 behaves as a very far point, not as inf/NaN. ``mean`` is the only rule that cannot be
  robust: it returns whatever the inputs average to (NaN included).
* Pairwise distances use the Gram form ``|a|^2 + |b|^2 - 2 a.b`` (clamped at 0) on rows centred
  at the coordinate-wise median (for precision under large translations), never an
  ``[n, n, d]`` tensor.
* Preconditions are data (:func:`min_inputs`), checked statically (``check_preconditions``)
  from ``n`` and ``f``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import os
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from redeem_jax import _threefry
from redeem_jax import theory as _theory
from redeem_jax._fusion import materialize
from redeem_jax._sortnet import sorting_network
from redeem_jax.metrics import weighted_rows

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = [
    "get",
    "RULES",
    "PRE_AGGREGATORS",
    "is_pre_aggregator",
    "check_preconditions",
    "min_inputs",
    "kappa_bound",
    "kappa_lower_bound",
    "kappa_ratio",
    "empirical_kappa",
    "mean",
    "median",
    "trimmed_mean",
    "geometric_median",
    "krum",
    "multi_krum",
    "bulyan",
    "centered_clipping",
    "mda",
    "meamed",
    "monna",
    "caf",
    "smea",
    "nnm",
    "bucketing",
    "clip",
    "arc",
    "MAX_SUBSETS",
    "neighbourhood",
]

MAX_SUBSETS = 100_000  # exact subset search (MDA, SMEA) up to C(n, f) this; an approximation above
_HI = lax.Precision.HIGHEST  # TF32 matmuls on GPUs would corrupt Gram-form distances

_RULES: dict[str, Callable] = {}
_PRES: dict[str, Callable] = {}
_IMPL: dict[str, Callable] = {}


# ----------------------------------------------------------------------------- helpers


def _big(n: int, d: int, dtype) -> float:
    return float(math.sqrt(float(jnp.finfo(dtype).max) / (64.0 * max(n, 1) * max(d, 1))))


def _fmax(dtype):
    return jnp.finfo(dtype).max


def _prep(x, mask):
    """Clamp finite entries to ±C, zero out invalid rows; return (xc, valid, n_eff)."""
    n, d = x.shape
    c = _big(n, d, x.dtype)
    valid = mask & _finite_rows(x)
    xc = jnp.where(valid[:, None], jnp.clip(x, -c, c), 0.0)
    n_eff = jnp.sum(mask).astype(jnp.int32)
    return xc, valid, n_eff


def _finite_rows(x):
    """bool[n]: rows with no NaN/±inf entry."""
    return jnp.all(jnp.isfinite(x), axis=-1)


def _coord_values(x):
    """Per-coordinate values with NaN ranked as +inf and ±inf/huge clamped to ±C."""
    n, d = x.shape[0], x.shape[-1]
    c = _big(n, d, x.dtype)
    return jnp.where(jnp.isnan(x), c, jnp.clip(x, -c, c))


# Order statistics along the node axis. XLA's CPU sort over the node axis of [n, d] rows is
# ~100x slower than a sorting network of row-wise min/max for the n of a robust rule (n = 64,
# d = 1e5: 613 ms against 4-6 ms, one fused pass; ByzFL's NumPy sort takes 16 ms), so for
# n <= _NETWORK_MAX_N the rules sort with Batcher's odd-even merge network (1968: O(n log^2 n)
# comparators; 543 for n = 64) and fall back to jnp.sort above.
_NETWORK_MAX_N = 128


_network = sorting_network


def _sorted_rows(v):
    """The rows of ``v [n, ...]`` (or a list of n arrays) sorted ascending along axis 0, as a
    list of n arrays."""
    if isinstance(v, (list, tuple)):
        rows = list(v)
        n = len(rows)
        if n > _NETWORK_MAX_N:
            return _sorted_rows(jnp.stack(rows))
    else:
        n = v.shape[0]
        if n > _NETWORK_MAX_N:
            s = jnp.sort(v, axis=0)
            return [s[i] for i in range(n)]
        rows = [v[i] for i in range(n)]
    for i, j in _network(n):
        a, b = rows[i], rows[j]
        rows[i], rows[j] = jnp.minimum(a, b), jnp.maximum(a, b)
    return rows


def _materialize(v, n: int):
    """``v`` itself, computed once. A sorting network's output is one long elementwise chain; XLA
    fuses it into any consumer, and a consumer that broadcasts it over the n rows (x − median, a
    server broadcasting its aggregate to every node) then recomputes the network n times (270 ms
    instead of 10 ms at n = 64, d = 1e5); ``optimization_barrier`` does not stop that fusion on
    CPU. A single set of at most 16 rows (one neighbourhood, vmapped or not) keeps its network
    fused: it is cheap to recompute. Every node's neighbourhood at once (``v`` [N, d], slot-major,
    from :func:`neighbourhood`) is materialized: a recomputation there would gather the rows
    again."""
    if (n <= 16 and v.ndim <= 1) or v.size == 0:
        return v
    return materialize(v)


def _order_stats(v, positions):
    """``sorted(v, axis=0)[p]`` for each static position p (a network whose unused comparators
    XLA removes: few outputs keep the whole network one fused pass), each materialized."""
    rows = _sorted_rows(v)
    return [_materialize(rows[p], v.shape[0]) for p in positions]


def _pb(present, v):
    """``present`` ([n] or [n, *B] for rows ``v`` [n, *B, d]) reshaped to broadcast against v."""
    return present.reshape(present.shape + (1,) * (v.ndim - present.ndim))


def _absent_low(present, k):
    """bool: the first ``k`` (traced) absent rows along axis 0, in row order."""
    absent = ~present
    return absent & (jnp.cumsum(absent.astype(jnp.int32), axis=0) <= k)


def _cw_median(v, present):
    """Coordinate-wise median over the present rows (numpy convention for even counts). ``v``
    is [n, ..., d] with ``present`` [n] or [n, ...] (a batch of row sets, e.g. every node's
    neighbourhood, slot-major).

    The median's sorted position depends on the (traced) count c of present rows, which would
    need every row of the sorting network (a select over all of them ran 20x slower). Instead k
    absent rows are set to −inf and the others to +inf so that the present median lands on the
    static positions P = (n−1)//2 (c odd) or P, P + 1 (c even): k = P − (c−1)//2 for odd c and
    P + 1 − c/2 for even c."""
    if isinstance(v, (list, tuple)):  # slot-major rows [N, d] kept apart (no stacked copy)
        n = len(v)
        pb = _pb(present, v[0][None])
    else:
        n = v.shape[0]
        pb = _pb(present, v)
    if n == 1:
        return jnp.where(pb[0], v[0], jnp.inf)
    c = jnp.sum(pb, axis=0).astype(jnp.int32)
    P = (n - 1) // 2
    k = jnp.where(c % 2 == 1, P - (c - 1) // 2, P + 1 - c // 2)
    low = _absent_low(pb, k[None])
    if isinstance(v, (list, tuple)):
        w = [jnp.where(pb[i], v[i], jnp.where(low[i], -jnp.inf, jnp.inf)) for i in range(n)]
    else:
        w = jnp.where(pb, v, jnp.where(low, -jnp.inf, jnp.inf))
    rows = _sorted_rows(w)
    a, b = rows[P], rows[P + 1]
    return _materialize(jnp.where(c % 2 == 1, a, 0.5 * a + 0.5 * b), n)


def _closest_mean(v, present, center, keep, offset: int):
    """Per coordinate, the mean of the ``keep`` present values closest to ``center``, ties to the
    lower row index (a stable argsort of the distances); ``keep`` = (present count) − ``offset``.

    With every absent row at distance −inf, the keep-th smallest present distance t is the static
    order statistic at position n − offset − 1; values at distance < t are kept and, of those at
    distance exactly t, the lowest-indexed ones until ``keep`` are reached."""
    n = v.shape[0]
    dist = jnp.abs(v - center[None])
    keep = jnp.maximum(keep, 1)
    pb = _pb(present, v)
    (t,) = _order_stats(jnp.where(pb, dist, -jnp.inf), (max(n - offset - 1, 0),))
    need = keep - sum((pb[i] & (dist[i] < t)).astype(jnp.int32) for i in range(n))
    out = jnp.zeros_like(v[0])
    seen = jnp.zeros(v.shape[1:], jnp.int32)
    for i in range(n):
        tie = pb[i] & (dist[i] == t)
        take = (pb[i] & (dist[i] < t)) | (tie & (seen < need))
        seen = seen + tie.astype(jnp.int32)
        out = out + jnp.where(take, v[i], 0.0)
    return _materialize(out / keep.astype(v.dtype), n)


def _trimmed_sum(v, present, f: int):
    """Σ of the present values of each coordinate once the f largest and f smallest are dropped,
    and the count kept (c − 2f). lo and hi, the (f+1)-th smallest and largest present values, are
    static order statistics with absent rows at +inf (resp. −inf); the kept sum is the values
    strictly between plus the kept copies of lo and hi: no cancellation against the dropped
    values, whatever their size."""
    n = v.shape[0]
    pb = _pb(present, v)
    c = jnp.sum(pb, axis=0).astype(jnp.int32)
    (lo,) = _order_stats(jnp.where(pb, v, jnp.inf), (min(f, n - 1),))
    (hi_neg,) = _order_stats(jnp.where(pb, -v, jnp.inf), (min(f, n - 1),))
    hi = -hi_neg
    pres = [pb[i] for i in range(n)]
    rows = [v[i] for i in range(n)]
    inside = sum(jnp.where(p & (r > lo) & (r < hi), r, 0.0) for r, p in zip(rows, pres))
    count = lambda cond: sum(cond(r, p).astype(jnp.int32) for r, p in zip(rows, pres))  # noqa: E731
    n_lt, n_eq_lo = count(lambda r, p: p & (r < lo)), count(lambda r, p: p & (r == lo))
    n_gt, n_eq_hi = count(lambda r, p: p & (r > hi)), count(lambda r, p: p & (r == hi))
    kept = c - 2 * f
    k_lo = jnp.minimum(n_lt + n_eq_lo, c - f) - f
    k_hi = (c - f) - jnp.maximum(c - n_gt - n_eq_hi, f)
    total = inside + k_lo.astype(v.dtype) * lo + k_hi.astype(v.dtype) * hi
    return jnp.where(lo == hi, kept.astype(v.dtype) * lo, total), kept


_WIDE_SSQ = 1 << 22  # entries from which row sums of squares go through windowed partial sums
_SSQ_WINDOW = 1000


def _row_ssq(x):
    """Σⱼ xᵢⱼ² along the last axis. XLA's CPU backend runs a row reduction on one thread; for wide
    arrays (≥ 2²² entries) the sums over windows of 1,000 columns are a loop split over its
    threads, and only the short sum of the partials is a reduction: 1.7x faster at [64, 1e5],
    2.5x at [256, 1e5], slower below about 10⁶ entries (docs/performance.md). The same terms,
    summed in a different order."""
    d = x.shape[-1]
    if x.size < _WIDE_SSQ or d < 4 * _SSQ_WINDOW:
        return jnp.sum(jnp.square(x), axis=-1)
    pad = -d % _SSQ_WINDOW
    ones = (1,) * (x.ndim - 1)
    part = lax.reduce_window(
        jnp.square(x),
        jnp.zeros((), x.dtype),
        lax.add,
        ones + (_SSQ_WINDOW,),
        ones + (_SSQ_WINDOW,),
        [(0, 0)] * (x.ndim - 1) + [(0, pad)],
    )
    return jnp.sum(part, axis=-1)


def _row_norms(x):
    """(norms, finite): Euclidean row norms (+inf for a row with a NaN/±inf entry) and which rows
    are finite.

    One pass in the common case: |xᵢ| = sqrt(Σⱼ xᵢⱼ²). Only when a sum of squares is not finite
    (an overflow, or a non-finite entry) or falls below 2⁻¹⁰⁰ (where squares of tiny entries lose
    precision) do all rows take the overflow-free form m·|x/m|, m = maxⱼ|xᵢⱼ|, with the finite
    rows found separately (``lax.cond``: one branch runs)."""
    ssq = _row_ssq(x)
    tiny = jnp.asarray(2.0**-100, ssq.dtype)
    fast = jnp.isfinite(ssq) & ((ssq == 0) | (ssq >= tiny))

    def scaled(_):
        m = jnp.max(jnp.abs(x), axis=-1)
        safe = jnp.where((m > 0) & jnp.isfinite(m), m, 1.0)
        finite = _finite_rows(x)
        nrm = m * jnp.sqrt(jnp.sum(jnp.square(x / safe[..., None]), axis=-1))
        return jnp.where(finite, nrm, jnp.inf), finite

    return lax.cond(jnp.all(fast), lambda _: (jnp.sqrt(ssq), jnp.ones(ssq.shape, bool)), scaled, None)


_GRAM_CHUNK = 1024
_PAIRWISE_MIN_D = 1024  # vmapped small row sets: pairwise passes from this row length up


def _cross(y, u):
    """y uᵀ for ``y``, ``u`` [n, d], as a GEMM batched over 1024-column chunks plus the
    remainder columns (see :func:`_gram`)."""
    n, d = y.shape
    c = d // _GRAM_CHUNK
    if c < 4:
        return jnp.matmul(y, u.T, precision=_HI)
    split = lambda a: a[:, : c * _GRAM_CHUNK].reshape(a.shape[0], c, _GRAM_CHUNK).transpose(1, 0, 2)  # noqa: E731
    g = jnp.sum(lax.dot_general(split(y), split(u), (((2,), (2,)), ((0,), (0,))), precision=_HI), axis=0)
    r = c * _GRAM_CHUNK
    return g + jnp.matmul(y[:, r:], u[:, r:].T, precision=_HI) if r < d else g


def _row_products(y, fn):
    """[..., n, n] matrix of fn(yₐ, y_b) summed over the last axis, for a ≤ b mirrored: each pair
    one fused pass, which stays fast when batched over nodes."""
    n = y.shape[0]
    zero = jnp.zeros(y.shape[1:-1], y.dtype)
    rows = [[zero] * n for _ in range(n)]
    for a in range(n):
        for b in range(a, n):
            rows[a][b] = rows[b][a] = jnp.sum(fn(y[a], y[b]), axis=-1)
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def _small_gram(kind: str):
    """y yᵀ (``kind="gram"``) or the squared distances |yₐ − y_b|² (``"dist"``) of up to 16 rows.

    One node's rows: a matrix product (a compact program; the squared distances in Gram form).
    Vmapped over nodes (every node's neighbourhood at once): a GEMM batched by vmap is a slow
    loop of tiny products on CPU (246 ms against 124 ms for 64 neighbourhoods of 9 rows, d =
    1e5), so for long rows the batching rule sums each pair directly, one fused pass per pair
    (distances as exact differences); short rows keep the batched product (a much smaller
    program to compile: the κ search vmaps rules over trials). The JVP is the product rule, so
    rules stay differentiable."""

    def plain(y):
        g = jnp.matmul(y, y.T, precision=_HI)
        if kind == "gram":
            return g
        sq = jnp.diagonal(g)
        return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0)

    @jax.custom_jvp
    @jax.custom_batching.custom_vmap
    def fn(y):
        return plain(y)

    @fn.def_vmap
    def _batched(axis_size, in_batched, y):
        if not in_batched[0]:
            return plain(y), False
        if y.shape[-1] < _PAIRWISE_MIN_D:  # short rows: the batched product is cheap and compact
            return jax.vmap(plain)(y), True
        yt = jnp.moveaxis(y, 0, 1)  # [n, B, d]: rows first, as _row_products indexes them
        if kind == "gram":
            out = _row_products(yt, jnp.multiply)
        else:
            out = _row_products(yt, lambda a, b: jnp.square(a - b))
        return out, True

    @fn.defjvp
    def _jvp(primals, tangents):
        (y,), (dy,) = primals, tangents
        dg = jnp.matmul(dy, y.T, precision=_HI)
        dg = dg + dg.T
        if kind == "gram":
            return fn(y), dg
        dsq = jnp.diagonal(dg)
        return fn(y), dsq[:, None] + dsq[None, :] - 2.0 * dg

    return fn


_SMALL_GRAM = _small_gram("gram")
_SMALL_DIST = _small_gram("dist")


def _gram(y):
    """y yᵀ for ``y [n, d]``. Up to 16 rows, :func:`_small_gram`. Above, XLA's CPU GEMM runs
    the tall-skinny n × d · d × n product at ~60 GFLOP/s (13 ms at n = 64, d = 1e5; PyTorch
    10 ms); as a batched GEMM over d/1024 column chunks (the chunk-major layout written by the
    producer of ``y``, not by an extra pass) plus the remainder columns, the same sum runs about
    1.4x faster."""
    if y.shape[0] <= 16:
        return _SMALL_GRAM(y)
    return _cross(y, y)


def _sq_dists(y):
    """(squared pairwise distances [n, n] ≥ 0, squared norms [n]) of the rows of ``y``: up to 16
    rows :func:`_small_gram`, above the Gram form |a|² + |b|² − 2a·b through :func:`_gram`."""
    n = y.shape[0]
    if n <= 16:
        return _SMALL_DIST(y), jnp.sum(y * y, axis=-1)
    g = _gram(y)
    sq = jnp.diagonal(g)  # not a second pass over y: that one cost more than the Gram itself
    return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * g, 0.0), sq


def _pairwise(xc, valid):
    """Squared distances [n, n] (:func:`_sq_dists`); +inf whenever a row is invalid.

    Also returns each row's squared distance to the coordinate-wise median: a permutation-,
    translation- and scale-invariant key that breaks exact ties (e.g. two mutually nearest rows
    have equal Krum scores when k = 1) so that no rule depends on the order of its inputs."""
    n = xc.shape[0]
    center = _cw_median(xc, valid)
    y = jnp.where(valid[:, None], xc - center, 0.0)
    dist, sq = _sq_dists(y)
    both = valid[:, None] & valid[None, :]
    eye = jnp.eye(n, dtype=bool)
    dist = jnp.where(eye, 0.0, dist)
    dist = 0.5 * (dist + dist.T)  # bitwise symmetric, so genuine ties stay ties
    return jnp.where(both, dist, jnp.inf), jnp.where(valid, sq, jnp.inf)


def _lex_argmin(primary, secondary):
    """argmin of primary along the last axis, ties broken by the smaller secondary (then the
    lower index)."""
    best = jnp.min(primary, axis=-1, keepdims=True)
    return jnp.argmin(jnp.where(primary == best, secondary, jnp.inf), axis=-1)


def _lex_rank(primary, secondary):
    order = jnp.lexsort((secondary, primary), axis=-1)
    return jnp.argsort(order, axis=-1)


def _weighted_mean(w, xc):
    tot = jnp.sum(w)
    return jnp.matmul(w, xc, precision=_HI) / jnp.where(tot > 0, tot, 1.0)


def _krum_scores(dist, present, valid, k):
    """Krum score: sum of the k smallest squared distances to other present rows. ``dist`` is
    [..., n, n] with ``present``, ``valid`` [..., n] and ``k`` a scalar or [...]."""
    n = dist.shape[-1]
    eye = jnp.eye(n, dtype=bool)
    dm = jnp.where(present[..., None, :] & ~eye, dist, jnp.inf)
    ds = jnp.sort(dm, axis=-1)
    s = jnp.sum(jnp.where(jnp.arange(n) < jnp.asarray(k)[..., None, None], ds, 0.0), axis=-1)
    # Valid rows whose score overflowed still beat invalid ones.
    return jnp.where(present & valid, jnp.minimum(s, _fmax(dist.dtype)), jnp.inf)


def _ball_candidates(dist, mask, valid, n_eff, f):
    """bool[n, n]: row i holds the members of candidate i, row i and its n_eff - f - 1 nearest
    present rows (ties to the lower index; non-finite rows are infinitely far). The candidate
    subsets of the approximate MDA and SMEA."""
    n = dist.shape[0]
    dm = jnp.where(mask[None, :], dist, jnp.inf)
    dm = jnp.where(jnp.eye(n, dtype=bool), -1.0, dm)
    rank = jnp.argsort(jnp.argsort(dm, axis=1, stable=True), axis=1, stable=True)
    return (rank < n_eff - f) & mask[None, :]


@functools.lru_cache(maxsize=64)
def _combos(n: int, m: int) -> np.ndarray:
    return np.asarray(list(itertools.combinations(range(n), m)), dtype=np.int32).reshape(-1, m)


def _subset_ok(mask, combos, n_eff, f):
    # A subset of the n slots of size n - f is admissible iff it holds every masked slot, i.e.
    # its valid part has size n_eff - f: the enumeration then equals that over x[mask].
    return jnp.sum(mask[combos], axis=1) == (n_eff - f)


def _static_int(f, what="f"):
    if isinstance(f, (jax.core.Tracer,)):
        raise TypeError(
            f"{what} must be a static Python int (it fixes shapes and ranks); "
            "bind it with functools.partial before jax.jit"
        )
    if isinstance(f, (np.integer,)):
        f = int(f)
    if not isinstance(f, int) or isinstance(f, bool):
        raise TypeError(f"{what} must be a Python int, got {type(f).__name__}")
    return f


_KIND: dict[str, str] = {}
_TAKES_FULL: dict[str, bool] = {}
_STATIC_OPTIONS = ("s", "m", "reference")  # options that change shapes or preconditions

_FALLBACK_DOC = """
    Below the precondition (``mask`` leaving fewer than :func:`min_inputs` live rows): the first
    live row unchanged (the node keeps its own value; zeros when no row is live), with a warning
    when the mask is concrete. float16 / bfloat16 rows are computed in float32 and returned in
    their dtype; integer and bool rows are refused."""


def _register(name, kind):
    # A rule whose signature has ``full`` learns, statically, that no mask was given (every row
    # present): the order statistics it needs are then at static positions of the network.
    def deco(fn):
        _IMPL[name] = fn
        _KIND[name] = kind
        _TAKES_FULL[name] = "full" in inspect.signature(fn).parameters
        if kind == "rule":

            @functools.wraps(fn)
            def wrapper(x, f, mask=None, **options):
                given = mask  # warned about as given: inside jit, converted arrays are traced
                x, f, mask = _check_call(name, x, f, mask, options)
                xw = x.astype(_compute_dtype(name, x.dtype))
                out = _stage(name, xw, f, mask, options)
                if mask is not None:
                    need = min_inputs(name, f, **_static(options))
                    _warn_below(name, f, given, need)
                    out = _keep_first_live(out, xw, mask, need)
                return out.astype(x.dtype)

            wrapper.rule_name = name
            _RULES[name] = wrapper
        else:

            @functools.wraps(fn)
            def wrapper(x, f, mask=None, return_mask=False, **options):
                given = mask
                x, f, mask = _check_call(name, x, f, mask, options)
                xw = x.astype(_compute_dtype(name, x.dtype))
                y, m = _stage(name, xw, f, mask, options, alone=True)
                if mask is not None:
                    need = min_inputs(name, f, **_static(options))
                    _warn_below(name, f, given, need)
                    y = _pass_through(y, xw, mask, need)
                y = y.astype(x.dtype)
                return (y, m) if return_mask else y

            _PRES[name] = wrapper
        wrapper.__doc__ = (fn.__doc__ or "") + _FALLBACK_DOC
        wrapper.aggregator = (name, {})
        return wrapper

    return deco


def _static(options):
    """The options that change shapes or preconditions (``bucketing={"s": 3}`` included)."""
    return {k: v for k, v in options.items() if k in _STATIC_OPTIONS or (k == "bucketing" and isinstance(v, dict))}


def _stage(name, x, f, mask, options, alone=False):
    """One rule or pre-aggregator on already checked, widened rows; ``mask`` None means every row
    is present (rules then use static order-statistic positions). A pre-aggregator returns
    (rows, mask), the mask None again when no row changed validity; ``alone``: it is not
    followed by another stage (its in-place form, where it has one)."""
    fn = _IN_PLACE.get(name, _IMPL[name]) if alone else _IMPL[name]
    full = mask is None
    m = jnp.ones((x.shape[0],), bool) if full else mask
    if _KIND[name] == "rule":
        if _TAKES_FULL[name]:
            options = {**options, "full": full}
        return fn(x, f, m, **options)
    y, mo = fn(x, f, m, **options)
    return y, (None if full and mo is m else mo)


def _compute_dtype(name, dtype):
    """The dtype a rule computes in: float16 / bfloat16 (and narrower) rows are widened to float32
    (their range would cap honest values near ±3.4 through the finite-value clamp, and ``eigh``
    has no half-precision kernel); other floating dtypes as they are."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name}: rows must be floating point, got dtype {dtype}; cast them first (e.g. x.astype(jnp.float32))"
        )
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def _keep_first_live(out, x, mask, need: int):
    """``out`` where at least ``need`` rows of ``mask`` are live, else the first live row of ``x``
    (the node's own value: its own row comes first), zeros when none is live. A select on the
    result, so it stays jittable and costs one row gather."""
    cnt = jnp.sum(mask.astype(jnp.int32))
    own = jnp.where(cnt > 0, x[jnp.argmax(mask)], jnp.zeros_like(out))
    return jnp.where(cnt >= need, out, own.astype(out.dtype))


def _pass_through(y, x, mask, need: int):
    """A pre-aggregator below its precondition leaves its rows as they were (the next rule then
    applies its own fallback); bucketing and clip (need 1) change nothing here."""
    if need <= 1 or y.shape != x.shape:
        return y
    return jnp.where(jnp.sum(mask.astype(jnp.int32)) >= need, y, x)


def _warn_below(name, f, mask, need: int, what="rows"):
    """Warn when a concrete mask leaves fewer than ``need`` live rows (traced masks cannot be
    inspected: the fallback is then silent but documented). ``mask`` [n] or [N, n] (one row set
    per node, for :func:`neighbourhood`)."""
    if need <= 0 or isinstance(mask, jax.core.Tracer):
        return
    try:
        live = np.asarray(mask).sum(axis=-1)
    except Exception:  # noqa: BLE001 - an abstract value (e.g. under eval_shape): nothing to report
        return
    low = live < need
    if not np.any(low):
        return
    if live.ndim == 0:
        msg = (
            f"{name} (f={f}): {int(live)} live {what}, below min_inputs = {need}; returning the first "
            "live row unchanged (zeros if none)"
        )
    else:
        msg = (
            f"{name} (f={f}): {int(low.sum())} of {live.size} nodes have fewer than min_inputs = {need} "
            f"live {what} (fewest {int(live.min())}); they keep their own row"
        )
    warnings.warn(msg, stacklevel=3)


def _check_call(name, x, f, mask, options):
    """Validate one call statically (shape, f, preconditions on the static n); the mask stays None
    when none was given."""
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: x must be [n, d] (vmap over the node axis), got {x.shape}")
    _compute_dtype(name, x.dtype)
    f = _static_int(f)
    n = x.shape[0]
    check_preconditions(name, n, f, **_static(options))
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.shape != (n,):
            raise ValueError(f"{name}: mask must be bool[{n}], got shape {mask.shape}")
    return x, f, mask


# ----------------------------------------------------------------------------- rules


@_register("mean", "rule")
def mean(x, f, mask=None):
    """Arithmetic mean of the valid rows. NOT robust: a single NaN/inf/1e38 row poisons it
    (kappa = inf for f > 0); kept as the non-robust baseline (plain federated averaging)."""
    w = mask.astype(x.dtype)
    return weighted_rows(w, jnp.where(mask[:, None], x, 0.0)) / jnp.maximum(jnp.sum(w), 1.0)


@_register("median", "rule")
def median(x, f, mask=None, full=False, ranked=False):
    """Coordinate-wise median (Yin et al. 2018, "Byzantine-robust distributed learning",
    Def. 1). Even counts average the two middle values (numpy convention; torch returns the
    lower one). NaN ranks as +inf. Permutation invariant, translation and scaling equivariant."""
    v = x if ranked else _coord_values(x)
    if full:
        n = x.shape[0]
        rows = _sorted_rows(v)
        return _materialize(0.5 * rows[(n - 1) // 2] + 0.5 * rows[n // 2], n)
    return _cw_median(v, mask)


@_register("trimmed_mean", "rule")
def trimmed_mean(x, f, mask=None, full=False, ranked=False):
    """Coordinate-wise trimmed mean (Yin et al. 2018, Def. 2 with beta = f/n): per coordinate,
    drop the f largest and the f smallest values and average the n - 2f others. NaN ranks as
    +inf. Needs n > 2f."""
    v = x if ranked else _coord_values(x)
    n = x.shape[0]
    if full and 4 * f >= n:
        # Few kept rows: their sum straight off the sorting network.
        rows = _sorted_rows(v)
        return _materialize(sum(rows[f : n - f]) / (n - 2 * f), n)
    if n <= 16:
        # A neighbourhood: sort it whole (absent rows last, at +inf) and sum the kept positions
        # f .. c - f - 1, one fused pass; order statistics and counting passes would each read
        # the rows again (40 ms against 8 ms for 64 neighbourhoods of 9 rows, d = 1e5).
        pb = _pb(jnp.ones((n,), bool) if mask is None else mask, v)
        c = jnp.sum(pb, axis=0).astype(jnp.int32)
        rows = _sorted_rows(jnp.where(pb, v, jnp.inf))
        total = sum(jnp.where((j >= f) & (j < c - f), rows[j], 0.0) for j in range(f, n - f))
        return total / jnp.maximum(c - 2 * f, 1).astype(v.dtype)
    # Many kept rows: a fused sum of n - 2f network outputs ran 7x slower than two order
    # statistics (the f-th smallest and largest, a selection) and one counting pass (80 ms
    # against 12 ms at n = 64, f = 1, d = 1e5).
    total, kept = _trimmed_sum(v, jnp.ones((n,), bool) if mask is None else mask, f)
    return _materialize(total / jnp.maximum(kept, 1).astype(x.dtype), x.shape[0])


@_register("geometric_median", "rule")
def geometric_median(x, f, mask=None, *, nu=1e-6, max_iter=100, tol=1e-7, start="median"):
    """Geometric median argmin_z sum_i |z - x_i| by smoothed Weiszfeld (Pillutla, Kakade &
    Harchaoui 2022, RFA, Alg. 2): z <- sum_i b_i x_i / sum_i b_i, b_i = 1 / max(nu, |z - x_i|).

    Conventions: ``start="median"`` (default) starts at the coordinate-wise median (a robust
    start; RFA starts at the mean, which a 1e38 row would ruin); ``start="zero"`` at the origin,
    as Weiszfeld (1937) and ByzFL do (its ``GeometricMedian(nu=0.1, T=3)`` is ``nu=0.1,
    max_iter=3, start="zero"``). ``nu`` is absolute (units of x); stop after ``max_iter``
    iterations or when the step is below ``tol`` times the median distance of the rows to the
    start (scale-free, robust; from the origin the first step is always taken). Non-finite rows
    get weight 0 (infinitely far). ``f`` is unused by the iteration (only the precondition n > 2f).

    Iterated in Gram space: with y the rows centred at the coordinate-wise median z0 and
    z = z0 + aᵀy, every distance is |y_i - z|² = G_ii - 2(Ga)_i + aᵀGa from one n x n Gram
    matrix G, so an iteration costs O(n²) instead of two passes over [n, d]; one GEMV at the end
    forms z. From the origin, the first step's distances are the row norms and every later
    iterate is a convex combination of the rows (sum a = 1), so z = (sum a) z0 + aᵀy throughout."""
    zero = _gm_start(start)
    xc, valid, _ = _prep(x, mask)
    z0 = _cw_median(xc, valid)
    y = jnp.where(valid[:, None], xc - z0, 0.0)
    if not zero:
        a = _weiszfeld(_gram(y), valid, nu, max_iter, tol)
        return z0 + jnp.matmul(a, y, precision=_HI)
    d0 = jnp.sqrt(_row_ssq(xc))
    a = _weiszfeld(_gram(y), valid, nu, max_iter, tol, d0=d0)
    return jnp.sum(a) * z0 + jnp.matmul(a, y, precision=_HI)


def _gm_start(start) -> bool:
    """True for the geometric median's start at the origin, False for the coordinate-wise median."""
    if isinstance(start, str) and start in ("median", "zero"):
        return start == "zero"
    raise ValueError(f"geometric_median: start must be 'median' or 'zero', got {start!r}")


def _weiszfeld(g, valid, nu, max_iter, tol, d0=None):
    """Weights a [..., n] of the smoothed Weiszfeld iterate z = aᵀy from the Gram matrix g
    [..., n, n] of rows y centred at the start (see :func:`geometric_median`). With ``d0``
    [..., n], the rows' distances to a start outside their span (the origin): the first step's
    weights come from them, and the later steps run on g (their iterates sum a = 1)."""
    dt = g.dtype
    tiny = jnp.finfo(dt).tiny
    sq = jnp.diagonal(g, axis1=-2, axis2=-1)
    first = jnp.sqrt(jnp.maximum(sq, 0.0)) if d0 is None else d0  # distances to the start
    r0 = _cw_median(jnp.moveaxis(first, -1, 0), jnp.moveaxis(valid, -1, 0))
    thresh = tol * jnp.maximum(r0, tiny)

    def quad(u):  # uᵀ g u over the last axis
        return jnp.sum(u * jnp.einsum("...ij,...j->...i", g, u, precision=_HI), axis=-1)

    def normalized(beta):
        return beta / jnp.maximum(jnp.sum(beta, axis=-1, keepdims=True), tiny)

    def body(state):
        it, a, step = state
        ga = jnp.einsum("...ij,...j->...i", g, a, precision=_HI)
        dist = jnp.sqrt(jnp.maximum(sq - 2.0 * ga + jnp.sum(a * ga, axis=-1, keepdims=True), 0.0))
        a_new = normalized(jnp.where(valid, 1.0 / jnp.maximum(nu, dist), 0.0))
        # A batch of row sets (every node's neighbourhood): a converged set stays where it is.
        go = step > thresh
        step_new = jnp.sqrt(jnp.maximum(quad(a_new - a), 0.0))
        return it + 1, jnp.where(go[..., None], a_new, a), jnp.where(go, step_new, 0.0)

    def cond(state):
        it, _, step = state
        return (it < max_iter) & jnp.any(step > thresh)

    inf = jnp.full(thresh.shape, jnp.inf, dt)
    if d0 is None:
        init = (jnp.asarray(0, jnp.int32), jnp.zeros(sq.shape, dt), inf)
    else:  # the first step, from the origin (a = 0 stands for z = 0 until it is taken)
        take = jnp.asarray(max_iter) >= 1
        a1 = normalized(jnp.where(valid, 1.0 / jnp.maximum(nu, d0), 0.0))
        init = (take.astype(jnp.int32), jnp.where(take, a1, 0.0), inf)
    return lax.while_loop(cond, body, init)[1]


@_register("krum", "rule")
def krum(x, f, mask=None):
    """Krum (Blanchard et al. 2017, Def. in Sec. 4): the row minimising the sum of squared
    distances to its n - f - 2 nearest other rows (the paper's convention; ByzFL uses n - f - 1).
    Exact score ties (e.g. two mutually nearest rows when k = 1) go to the row closer to the
    coordinate-wise median, so the rule is permutation invariant. Needs n >= 2f + 3."""
    xc, valid, n_eff = _prep(x, mask)
    dist, key = _pairwise(xc, valid)
    scores = _krum_scores(dist, mask, valid, n_eff - f - 2)
    return xc[_lex_argmin(scores, key)]


@_register("multi_krum", "rule")
def multi_krum(x, f, mask=None, *, m=None):
    """Multi-Krum (Blanchard et al. 2017, Sec. 5; El Mhamdi et al. 2018): average the m rows
    with the best Krum scores (n - f - 2 neighbours). Default m = n - f (as ByzFL). Needs
    n >= 2f + 3."""
    xc, valid, n_eff = _prep(x, mask)
    dist, key = _pairwise(xc, valid)
    scores = _krum_scores(dist, mask, valid, n_eff - f - 2)
    mm = n_eff - f if m is None else jnp.minimum(m, n_eff)
    rank = _lex_rank(scores, key)
    sel = (rank < mm) & valid
    return _weighted_mean(sel.astype(x.dtype), xc)


@_register("bulyan", "rule")
def bulyan(x, f, mask=None):
    """Bulyan (El Mhamdi, Guerraoui & Rouault 2018, Alg. 1): select theta = n - 2f rows by
    repeated Krum (each time on the remaining rows, k = |remaining| - f - 2 neighbours), then per
    coordinate average the beta = theta - 2f selected values closest to their median. Needs
    n >= 4f + 3."""
    n = x.shape[0]
    xc, valid, n_eff = _prep(x, mask)
    dist, key = _pairwise(xc, valid)
    theta = n_eff - 2 * f

    def body(t, carry):
        remaining, selected = carry
        k = jnp.maximum(jnp.sum(remaining) - f - 2, 0)
        i = _lex_argmin(_krum_scores(dist, remaining, valid, k), key)
        pick = (jnp.arange(n) == i) & (t < theta)
        return remaining & ~pick, selected | pick

    _, selected = lax.fori_loop(0, n - 2 * f, body, (mask, jnp.zeros((n,), bool)))
    med = _cw_median(xc, selected)
    return _closest_mean(xc, selected, med, theta - 2 * f, 2 * f)


@_register("centered_clipping", "rule")
def centered_clipping(x, f, mask=None, *, tau=1.0, iterations=3, start=None):
    """Centered clipping (Karimireddy, He & Jaggi 2021, Alg. 2 / Eq. (CC)):
    v <- v + (1/n) sum_i clip(x_i - v, tau), ``iterations`` times.

    The paper starts from the previous round's output; a stateless rule has none, so the default
    ``start`` is the coordinate-wise median (pass ``start=`` the previous output to follow the
    paper). Non-finite rows contribute 0 (their direction is undefined) but still count in n.
    Translation equivariant; not scaling equivariant (tau is absolute); with equal honest rows
    the output moves at most iterations * f * tau / n from them."""
    xc, valid, n_eff = _prep(x, mask)
    v0 = _cw_median(xc, valid) if start is None else jnp.asarray(start, x.dtype)
    y = jnp.where(valid[:, None], xc - v0, 0.0)
    inv_n = 1.0 / jnp.maximum(n_eff, 1).astype(x.dtype)

    def body(_, v):
        u = y - v
        nrm = jnp.linalg.norm(u, axis=1)
        scale = jnp.minimum(1.0, tau / jnp.where(nrm > 0, nrm, 1.0))
        return v + weighted_rows(jnp.where(valid, scale, 0.0), u) * inv_n

    return v0 + lax.fori_loop(0, iterations, body, jnp.zeros_like(v0))


@_register("mda", "rule")
def mda(x, f, mask=None):
    """Minimum-diameter averaging (El Mhamdi, Guerraoui & Rouault 2018, Sec. 3; Rousseeuw 1985):
    the mean of the size-(n - f) subset of smallest diameter (max pairwise distance), by exact
    enumeration of the C(n, f) subsets. Subsets sharing the minimal diameter (common: they share
    the farthest pair) are ranked by their sum of squared pairwise distances, so the rule does
    not depend on the input order.

    Above ``MAX_SUBSETS`` subsets, an approximation with a bound: the candidates are the n balls
    "row i and its n - f - 1 nearest rows"; the one of smallest diameter is averaged. For any row
    i of the optimal subset S*, its ball has radius at most diam(S*), hence diameter at most
    2 diam(S*): the chosen subset's diameter is at most twice the optimum (a 2-approximation,
    O(n³) instead of C(n, f))."""
    n = x.shape[0]
    xc, valid, n_eff = _prep(x, mask)
    dist, _ = _pairwise(xc, valid)
    if math.comb(n, f) > MAX_SUBSETS:
        members = _ball_candidates(dist, mask, valid, n_eff, f)
        pair = members[:, :, None] & members[:, None, :]
        dc = jnp.where(pair, jnp.minimum(dist, _fmax(x.dtype))[None], 0.0)
        diam = jnp.max(dc, axis=(1, 2))
        spread = jnp.sum(jnp.minimum(dc, _fmax(x.dtype) / (n * n)), axis=(1, 2))
        clean = jnp.all(jnp.where(pair, jnp.isfinite(dist)[None], True), axis=(1, 2))
        diam = jnp.where(clean & valid & mask, diam, jnp.inf)
        best = _lex_argmin(diam, spread)
        return _weighted_mean((members[best] & valid).astype(x.dtype), xc)
    present = mask[:, None] & mask[None, :]
    dp = jnp.where(present, dist, 0.0)
    combos = jnp.asarray(_combos(n, n - f))
    sub = dp[combos[:, :, None], combos[:, None, :]].reshape(combos.shape[0], -1)
    diam = jnp.max(sub, axis=1)
    # Many subsets share the same farthest pair, hence the same diameter: break those ties by the
    # smaller sum of squared pairwise distances (= 2m * scatter), which is order-free.
    spread = jnp.sum(jnp.minimum(sub, _fmax(x.dtype) / sub.shape[1]), axis=1)
    ok = _subset_ok(mask, combos, n_eff, f)
    diam = jnp.where(ok, jnp.minimum(diam, _fmax(x.dtype)), jnp.inf)
    best = combos[_lex_argmin(diam, spread)]
    w = jnp.zeros((n,), x.dtype).at[best].set(1.0) * valid
    return _weighted_mean(w, xc)


@_register("meamed", "rule")
def meamed(x, f, mask=None, ranked=False):
    """Mean-around-median, MeaMed (Xie, Koyejo & Gupta 2018, "Generalized Byzantine-tolerant
    SGD", Def. 5): per coordinate, the mean of the n - f values closest to the median (ties to
    the lower index)."""
    v = x if ranked else _coord_values(x)
    n_eff = jnp.sum(_pb(mask, v), axis=0).astype(jnp.int32)
    return _closest_mean(v, mask, _cw_median(v, mask), n_eff - f, f)


@_register("monna", "rule")
def monna(x, f, mask=None, *, reference=0):
    """MoNNA (Farhadkhani et al. 2023, "Robust collaborative learning with linear gradient
    overhead", Alg. 1): the mean of the n - f rows nearest to the reference row ``x[reference]``
    (itself included). In decentralized use the node puts its own (honest) vector first, hence
    the default reference 0. The reference is assumed honest and valid. Invariant to
    permutations of the other rows; translation and scaling equivariant."""
    xc, valid, n_eff = _prep(x, mask)
    dist = _row_ssq(xc - xc[reference])
    dist = jnp.where(valid, dist, jnp.inf).at[reference].set(-1.0)  # the reference always counts
    dist = jnp.where(mask, dist, jnp.inf)
    rank = jnp.argsort(jnp.argsort(dist, stable=True), stable=True)
    w = ((rank < n_eff - f) & valid).astype(x.dtype)
    return _weighted_mean(w, xc)


@_register("caf", "rule")
def caf(x, f, mask=None):
    """CAF, covariance-bound agnostic filter (Allouah et al., as in ByzFL; the spectral filter of
    robust mean estimation, Diakonikolas et al. 2017 / Steinhardt 2018). Weights c = 1; while
    sum(c) > n - 2f: mu_c, Sigma_c = weighted mean and covariance, (lambda, v) = exact top
    eigenpair, record mu_c if lambda is the smallest so far, then c_i *= 1 - tau_i / max tau with
    tau_i = ((x_i - mu_c).v)^2. Returns the recorded mu_c (the mean when f = 0). Non-finite rows
    start with weight 0 (already filtered).

    Computed in Gram space: one n x n Gram matrix G of the rows (centred at the coordinate-wise
    median), then every iteration works on n x n matrices only. With a = c / sum(c), mu_c = aᵀy,
    the centred Gram is K = G - Ga1ᵀ - 1aᵀG + (aᵀGa)11ᵀ, lambda = lambda_max(S K S) / sum(c) with
    S = diag(sqrt c), and with u its top eigenvector, tau_i = (K S u)_i² / lambda_max(S K S). The
    loop stops as soon as sum(c) <= n - 2f (about 2f iterations) instead of running n times."""
    n = x.shape[0]
    xc, valid, n_eff = _prep(x, mask)
    center = _cw_median(xc, valid)
    y = jnp.where(valid[:, None], xc - center, 0.0)
    dt = x.dtype
    tiny = jnp.finfo(dt).tiny
    vf = valid.astype(dt)
    g = _gram(y)
    thr = (n_eff - 2 * f).astype(dt)
    c0 = vf

    def cond(carry):
        it, c, _, _ = carry
        return (it < n) & (jnp.sum(c) > thr)

    def body(carry):
        it, c, best_a, best_lam = carry
        tot = jnp.maximum(jnp.sum(c), tiny)
        a = c / tot
        ga = jnp.matmul(g, a, precision=_HI)
        k = (g - ga[:, None] - ga[None, :] + jnp.dot(a, ga, precision=_HI)) * (vf[:, None] * vf[None, :])
        sq = jnp.sqrt(c)
        m = sq[:, None] * k * sq[None, :]
        sc = jnp.maximum(jnp.max(jnp.diagonal(m)), tiny)
        ev, vec = jnp.linalg.eigh(m / sc)
        lam_g = jnp.maximum(ev[-1], 0.0) * sc
        lam = lam_g / tot
        better = lam < best_lam
        best_a = jnp.where(better, a, best_a)
        best_lam = jnp.where(better, lam, best_lam)
        # (z_i . v) = (K S u)_i / sqrt(lambda_max(S K S)): divide before squaring (no overflow).
        proj = jnp.matmul(k, sq * vec[:, -1], precision=_HI) / jnp.sqrt(jnp.where(lam_g > 0, lam_g, 1.0))
        t = jnp.where((c > 0) & (lam_g > 0), jnp.square(proj), 0.0)
        tmax = jnp.max(t)
        # The row attaining max tau must reach exactly 0 (XLA may turn t/tmax into t*(1/tmax)).
        c_new = jnp.where(t >= tmax, 0.0, jnp.maximum(c * (1.0 - t / jnp.where(tmax > 0, tmax, 1.0)), 0.0))
        # No direction left to filter along (tmax = 0): stop with c as it is.
        return jnp.where(tmax > 0, it + 1, n), jnp.where(tmax > 0, c_new, c), best_a, best_lam

    init = (jnp.asarray(0, jnp.int32), c0, c0 / jnp.maximum(jnp.sum(c0), 1.0), jnp.asarray(jnp.inf, dt))
    _, _, best_a, _ = lax.while_loop(cond, body, init)
    return center + _weighted_mean(best_a, y)


@_register("smea", "rule")
def smea(x, f, mask=None):
    """SMEA, smallest maximum eigenvalue averaging (Allouah et al. 2023, "On the privacy-
    robustness-utility trilemma in distributed learning", Sec. 4): the mean of the size-(n - f)
    subset whose empirical covariance (1/m) sum (x_i - mu)(x_i - mu)^T has the smallest top
    eigenvalue; exact enumeration, eigenvalues by exact eigh of the d x d covariance or of the
    (n-f) x (n-f) centred Gram matrix, whichever is smaller.

    Above ``MAX_SUBSETS`` subsets, an approximation with a bound: the same candidates as the
    approximate MDA (row i and its n - f - 1 nearest rows), the one whose covariance has the
    smallest top eigenvalue is averaged. For i in the optimal subset S* (size m = n - f,
    diameter D, top eigenvalue λ*), candidate i has diameter at most 2D, so its top eigenvalue
    (a variance of points within 2D of each other along one direction) is at most D²; and
    λ* ≥ D²/(2m) (two points of S* at distance D). The chosen eigenvalue is therefore at most
    2(n - f)·λ*: a worst-case bound; on random inputs the choice is near the optimum
    (tests/test_aggregators.py)."""
    n, d = x.shape
    m = n - f
    xc, valid, n_eff = _prep(x, mask)
    center = _cw_median(xc, valid)
    y = jnp.where(valid[:, None], xc - center, 0.0)
    if math.comb(n, f) > MAX_SUBSETS:
        dist, _ = _pairwise(xc, valid)
        members = _ball_candidates(dist, mask, valid, n_eff, f)  # [n, n]
        w = (members & valid[None, :]).astype(x.dtype)
        cnt = jnp.maximum(jnp.sum(w, axis=1), 1.0)
        g = _gram(y)
        a = jnp.matmul(w, g, precision=_HI) / cnt[:, None]
        b = jnp.einsum("ci,ci->c", a, w) / cnt
        mat = (g[None] - a[:, :, None] - a[:, None, :] + b[:, None, None]) * (w[:, :, None] * w[:, None, :])
        sc = jnp.maximum(jnp.max(jnp.diagonal(mat, axis1=1, axis2=2), axis=1), jnp.finfo(x.dtype).tiny)
        lam = jnp.linalg.eigvalsh(mat / sc[:, None, None])[:, -1] * sc / cnt
        clean = jnp.all(valid[None, :] | ~members, axis=1)
        lam = jnp.where(clean & valid & mask, lam, jnp.inf)
        best = jnp.argmin(lam)
        return center + _weighted_mean(w[best], y)
    combos = jnp.asarray(_combos(n, m))
    w = mask[combos].astype(x.dtype)  # [C, m]; masked slots weigh 0
    cnt = jnp.maximum(jnp.sum(w, axis=1), 1.0)
    if d < m:  # d x d covariances: [C, m, d] is small
        yt = y[combos]
        mu = jnp.sum(yt * w[:, :, None], axis=1) / cnt[:, None]
        zt = (yt - mu[:, None, :]) * w[:, :, None]
        mat = jnp.einsum("cmd,cme->cde", zt, zt, precision=_HI)
    else:  # centred (n-f) x (n-f) Gram matrices from one n x n Gram, never a [C, m, d] tensor
        kt = jnp.matmul(y, y.T, precision=_HI)[combos[:, :, None], combos[:, None, :]]
        a = jnp.einsum("cij,cj->ci", kt, w) / cnt[:, None]
        b = jnp.einsum("ci,ci->c", a, w) / cnt
        mat = (kt - a[:, :, None] - a[:, None, :] + b[:, None, None]) * (w[:, :, None] * w[:, None, :])
    sc = jnp.maximum(jnp.max(jnp.diagonal(mat, axis1=1, axis2=2), axis=1), jnp.finfo(x.dtype).tiny)
    lam = jnp.linalg.eigvalsh(mat / sc[:, None, None])[:, -1] * sc / cnt
    ok = _subset_ok(mask, combos, n_eff, f)
    clean = jnp.all(valid[combos] | ~mask[combos], axis=1)
    score = jnp.where(ok, jnp.where(clean, lam, _fmax(x.dtype)), jnp.inf)
    best = jnp.argmin(score)
    return center + _weighted_mean(jnp.zeros((n,), x.dtype).at[combos[best]].set(w[best]), y)


# ----------------------------------------------------------------------------- pre-aggregators


@_register("nnm", "pre")
def nnm(x, f, mask=None):
    """Nearest-neighbour mixing (Allouah et al. 2023, "Fixing by mixing", Alg. 1): each x_i is
    replaced by the mean of its n - f nearest rows (itself included). Returns [n, d]; masked and
    non-finite rows pass through unchanged (they stay absent / infinitely far downstream)."""
    n = x.shape[0]
    xc, valid, n_eff = _prep(x, mask)
    dist = jnp.where(mask[None, :], _pairwise(xc, valid)[0], jnp.inf)
    # Self first even among duplicates (their rows are equal, so the mean is unchanged).
    dist = jnp.where(jnp.eye(n, dtype=bool), -1.0, dist)
    rank = jnp.argsort(jnp.argsort(dist, axis=1, stable=True), axis=1, stable=True)
    w = ((rank < n_eff - f) & valid[None, :]).astype(x.dtype)
    y = jnp.matmul(w, xc, precision=_HI) / jnp.maximum(jnp.sum(w, axis=1), 1.0)[:, None]
    return jnp.where(valid[:, None], y, x), mask


@_register("bucketing", "pre")
def bucketing(x, f, mask=None, *, s=2, key=None):
    """Bucketing (Karimireddy, He & Jaggi 2022, Alg. 1): randomly permute the rows with ``key``
    and average consecutive buckets of size ``s``; returns ceil(n/s) rows (the last bucket may be
    smaller). Without a key the identity permutation is used (deterministic; the paper's
    guarantee needs the random one). Masked rows are moved last, so valid buckets come first and
    the output mask marks them. A bucket holding a non-finite row is non-finite (it is then
    infinitely far for the next rule). The next rule keeps the same f."""
    n, d = x.shape
    if key is None:
        order = jnp.argsort(~mask, stable=True)
    else:
        u = jax.random.uniform(key, (n,))
        order = jnp.argsort(jnp.where(mask, u, 2.0), stable=True)
    b = -(-n // s)
    xp = jnp.concatenate([x[order], jnp.zeros((b * s - n, d), x.dtype)]).reshape(b, s, d)
    mp = jnp.concatenate([mask[order], jnp.zeros((b * s - n,), bool)]).reshape(b, s)
    cnt = jnp.sum(mp, axis=1)
    c = _big(n, d, x.dtype)
    xs = jnp.where(jnp.isfinite(xp), jnp.clip(xp, -c, c), xp)  # keep NaN/inf: bucket is poisoned
    y = jnp.sum(jnp.where(mp[:, :, None], xs, 0.0), axis=1) / jnp.maximum(cnt, 1)[:, None]
    return y, cnt > 0


@_register("clip", "pre")
def clip(x, f, mask=None, *, tau=1.0):
    """Static clipping: x_i <- x_i min(1, tau / |x_i|) (e.g. Karimireddy et al. 2021; Allouah et
    al. 2024 Sec. 2). Norms in one pass, overflow-free when needed; non-finite rows pass through."""
    nrm, finite = _row_norms(x)
    scale = jnp.minimum(1.0, tau / jnp.where(nrm > 0, nrm, 1.0))
    return jnp.where(finite[:, None], x * scale[:, None], x), mask


@_register("arc", "pre")
def arc(x, f, mask=None):
    """Adaptive robust clipping, ARC (Allouah et al. 2024, "Boosting robustness by clipping
    gradients in distributed learning", Alg. 1): k = floor(2 (f/n)(n - f)); clip every row to the
    (k+1)-th largest norm. Non-finite rows count as the largest norms and pass through."""
    scale, _ = _arc_scales(x, f, mask)
    return x * scale[:, None], mask


def _arc_scales(x, f, mask):
    """ARC's factor per row (1 for a row it leaves unchanged) and the row norms."""
    n = x.shape[0]
    n_eff = jnp.sum(mask).astype(jnp.int32)
    nrm, finite = _row_norms(x)
    k = (2 * f * (n_eff - f)) // jnp.maximum(n_eff, 1)
    desc = -jnp.sort(-jnp.where(mask, nrm, -jnp.inf))
    tau = jnp.take(desc, jnp.minimum(k, n - 1))
    clipped = (nrm > tau) & finite & mask
    return jnp.where(clipped, tau / jnp.where(nrm > 0, nrm, 1.0), 1.0), nrm


def _arc_in_place(x, f, mask=None):
    """:func:`arc` called on its own: the same rows, but only the clipped ones are rewritten.

    ARC changes at most k_max = floor(2f(n - f)/n) rows (those above the (k+1)-th largest norm,
    k ≤ k_max), so they are rescaled one by one in a loop of in-place row updates among the
    k_max largest norms (a factor 1 leaves a row bit for bit). On a donated input XLA then writes
    k_max rows instead of all n, as ByzFL's in-place NumPy code does (1.15x its speed at n = 64,
    d = 1e5, f = 16, against 0.97x for the fused form; docs/performance.md). In a composition
    ``arc+rule`` the scaled rows of :func:`arc` are fused into the next rule instead."""
    n = x.shape[0]
    k_max = (2 * f * (n - f)) // max(n, 1)
    if k_max <= 0:
        return x, mask
    scale, nrm = _arc_scales(x, f, mask)
    _, top = lax.top_k(jnp.where(mask, nrm, -jnp.inf), min(k_max, n))

    def rescale(t, y):
        i = top[t]
        return lax.dynamic_update_slice_in_dim(y, lax.dynamic_slice_in_dim(y, i, 1, axis=0) * scale[i], i, axis=0)

    return lax.fori_loop(0, min(k_max, n), rescale, x), mask


_IN_PLACE = {"arc": _arc_in_place}  # a pre-aggregator's form when it is called on its own


# ----------------------------------------------------------------------------- registry

RULES = tuple(_RULES)
PRE_AGGREGATORS = tuple(_PRES)


def is_pre_aggregator(name: str) -> bool:
    """True for the pre-aggregators (NNM, bucketing, clip, ARC) or a composition of them only."""
    stages = _split(name)
    return all(s in _PRES for s in stages)


def _split(name: str):
    stages = [s.strip() for s in name.split("+") if s.strip()]
    if not stages:
        raise ValueError(f"empty aggregator name {name!r}")
    for s in stages:
        if s not in _RULES and s not in _PRES:
            raise ValueError(f"unknown aggregator {s!r}; rules: {RULES}; pre-aggregators: {PRE_AGGREGATORS}")
    for s in stages[:-1]:
        if s not in _PRES:
            raise ValueError(f"{name!r}: only the last stage may be a rule ({s!r} is a rule)")
    return stages


# The one table of preconditions: stage -> (a, b, condition, source); the stage needs at least
# a*f + b live rows. check_preconditions() refuses a static n below it; a masked call whose live
# count falls below it returns the documented fallback (the first live row).
_HONEST_MAJORITY = (2, 1, "n > 2f")
_PRECONDITIONS = {
    "mean": (0, 1, "n >= 1", "defined on any non-empty set; not robust"),
    "median": _HONEST_MAJORITY + ("Yin et al. 2018, breakdown point 1/2",),
    "trimmed_mean": _HONEST_MAJORITY + ("Yin et al. 2018: f < n/2 leaves n - 2f values",),
    "geometric_median": _HONEST_MAJORITY + ("breakdown point 1/2; Pillutla et al. 2022",),
    "krum": (2, 3, "n >= 2f + 3", "Blanchard et al. 2017, Prop. 1: 2f + 2 < n"),
    "multi_krum": (2, 3, "n >= 2f + 3", "Blanchard et al. 2017"),
    "bulyan": (4, 3, "n >= 4f + 3", "El Mhamdi et al. 2018"),
    "centered_clipping": _HONEST_MAJORITY
    + (("a honest majority; Karimireddy et al. 2021 analyse a small constant fraction f/n"),),
    "mda": _HONEST_MAJORITY + ("El Mhamdi et al. 2018: n - f rows must hold a honest majority",),
    "meamed": _HONEST_MAJORITY + ("Xie et al. 2018: q < n/2",),
    "monna": _HONEST_MAJORITY + ("Farhadkhani et al. 2023",),
    "caf": _HONEST_MAJORITY + ("the filter stops at weight n - 2f > 0",),
    "smea": _HONEST_MAJORITY + ("Allouah et al. 2023 (trilemma)",),
    "nnm": _HONEST_MAJORITY + ("Allouah et al. 2023 (fixing by mixing)",),
    "arc": _HONEST_MAJORITY + ("Allouah et al. 2024: k = floor(2(f/n)(n - f)) for f < n/2",),
    "clip": (0, 1, "n >= 1", "defined on any set"),
    "bucketing": (0, 1, "n >= 1", "maps n rows to ceil(n / s) buckets for the next stage"),
}


def _bucket_size(options):
    s = options.get("s", 2)
    if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1:
        raise ValueError(f"bucketing needs an int bucket size s >= 1, got {s!r}")
    return int(s)


def min_inputs(rule, f: int, **options) -> int:
    """The smallest number of live rows for which ``rule`` (a name such as ``"nnm+krum"``, or a
    callable from :func:`get`) is defined and keeps its guarantee with ``f`` Byzantine rows.

    Median, trimmed mean, MeaMed, geometric median, centered clipping, MDA, MoNNA, CAF, SMEA,
    NNM and ARC: 2f + 1 (a honest majority; no rule is (f, κ)-robust for n ≤ 2f, Allouah et al.
    2023); Krum and Multi-Krum: 2f + 3 (Blanchard et al. 2017 need n > 2f + 2); Bulyan: 4f + 3
    (El Mhamdi et al. 2018); mean, clip and bucketing: 1. A composition needs the most of its
    stages, counted before bucketing (``s`` rows per bucket: ceil(n / s) ≥ k needs n ≥ s(k − 1) + 1).

    :func:`check_preconditions` refuses an unmasked call below this number; a masked call
    (padded neighbourhoods, :func:`neighbourhood`) whose live count falls below it returns the
    first live row unchanged, zeros when no row is live."""
    if isinstance(rule, str):
        name, bound = rule, {}
    else:
        name, bound = getattr(rule, "aggregator", (getattr(rule, "rule_name", None), {}))
        if name is None:
            raise TypeError(f"min_inputs: {rule!r} is not an aggregator from aggregators.get(); pass its name")
    options = {**bound, **options}
    f = _static_int(f)
    if f < 0:
        raise ValueError(f"min_inputs({name!r}): f must be >= 0, got {f}")
    need = 1
    for st in reversed(_split(name)):
        if st == "bucketing":
            stage = options.get("bucketing")
            need = _bucket_size({**options, **(stage if isinstance(stage, dict) else {})}) * (need - 1) + 1
        else:
            a, b = _PRECONDITIONS[st][:2]
            need = max(need, a * f + b)
    return need


def check_preconditions(name: str, n: int, f: int, **options) -> None:
    """Raise ValueError when rule ``name`` cannot work on n rows with f Byzantine (static), from
    the same table as :func:`min_inputs`: Krum / Multi-Krum need n >= 2f + 3 (Blanchard et al.
    2017), Bulyan n >= 4f + 3 (El Mhamdi et al. 2018), every other robust rule n > 2f (MDA and
    SMEA above C(n, f) > MAX_SUBSETS use their documented approximations).
    Compositions are checked stage by stage (bucketing maps n to ceil(n / s))."""
    stages = _split(name)
    if not isinstance(n, (int, np.integer)) or not isinstance(f, (int, np.integer)):
        raise ValueError(f"{name}: n and f must be ints, got n={n!r}, f={f!r}")
    if f < 0 or n < 1:
        raise ValueError(f"{name}: need n >= 1 and f >= 0, got n={n}, f={f}")
    for st in stages:
        a, b, cond, source = _PRECONDITIONS[st]
        if n < a * f + b:
            raise ValueError(
                f"{st} needs {cond} ({source}), got n={n}, f={f}; lower f or give each "
                f"aggregation at least {a * f + b} rows"
            )
        if st == "multi_krum":
            m = options.get("m")
            if isinstance(m, (int, np.integer)) and not 1 <= m <= n:
                raise ValueError(f"multi_krum needs 1 <= m <= n, got m={m}, n={n}")
        elif st == "bucketing":
            n = -(-n // _bucket_size(options))
        elif st == "monna":
            r = options.get("reference", 0)
            if not isinstance(r, (int, np.integer)):
                raise ValueError(f"monna: reference must be a static int index, got {r!r}")
            if not -n <= r < n:
                raise ValueError(f"monna: reference index {r} out of range for n={n}")


def _accepted(fn):
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind == inspect.Parameter.KEYWORD_ONLY}


def get(name: str, **defaults) -> Callable:
    """Resolve ``name`` to ``fn(x, f, mask=None, **options)``.

    A rule returns [d]; a pre-aggregator (or a composition of pre-aggregators) returns [n', d]
    (``return_mask=True`` also returns the bool[n'] validity mask). ``"arc+nnm+krum"`` composes
    left to right: pre-aggregators, then one final rule, each seeing the previous stage's output
    and mask with the same f. Options go to every stage that accepts them; ``stage={...}`` (e.g.
    ``clip={"tau": 2.0}``) targets one stage. ``defaults`` are bound options.

    With a mask leaving fewer than ``min_inputs(name, f)`` live rows, a composition ending in a
    rule returns the first live row of its input (zeros if none); a pre-aggregator passes its
    rows through unchanged. Half-precision rows run the whole chain in float32."""
    stages = _split(name)
    if len(stages) == 1 and not defaults:
        return _RULES.get(stages[0]) or _PRES[stages[0]]
    final_rule = stages[-1] in _RULES

    def composed(x, f, mask=None, return_mask=False, **options):
        opts = {**defaults, **options}
        given = mask
        x, f, mask = _check_call(name, x, f, mask, opts)  # fail before running any stage
        # Widened once for the whole chain: no rounding to half precision between stages.
        xw = x.astype(_compute_dtype(name, x.dtype))
        y, m = xw, mask
        for st in stages:
            o = {k: v for k, v in opts.items() if k in _accepted(_IMPL[st])}
            o.update(opts.get(st, {}) if isinstance(opts.get(st), dict) else {})
            check_preconditions(st, y.shape[0], f, **_static(o))
            if _KIND[st] == "pre":
                y_new, m_new = _stage(st, y, f, m, o)
                if m is not None and not final_rule:  # a chain of pre-aggregators only
                    y_new = _pass_through(y_new, y, m, min_inputs(st, f, **_static(o)))
                y, m = y_new, m_new
            else:
                y = _stage(st, y, f, m, o)
        if final_rule and mask is not None:
            need = min_inputs(name, f, **_static(opts))
            _warn_below(name, f, given, need)
            y = _keep_first_live(y, xw, mask, need)
        y = y.astype(x.dtype)
        return (y, m) if return_mask and not final_rule else y

    composed.__name__ = name
    composed.rule_name = None if defaults else name  # bound options: no fast path in neighbourhood()
    composed.aggregator = (name, dict(defaults))
    composed.__doc__ = " then ".join(f"{s}: {(_IMPL[s].__doc__ or '').splitlines()[0]}" for s in stages)
    return composed


# ----------------------------------------------------------------------------- every node at once

_COORDINATE_WISE = ("median", "trimmed_mean", "meamed")
_GLOBAL_GRAM_MAX_N = 128  # one N x N Gram of all rows up to here (a 128-row sorting network centres it)


def neighbourhood(rule, x, neighbors, f: int, mask=None, *, messages=None, **options):
    """Every node i aggregates its neighbourhood {xᵢ} ∪ {xⱼ : j ∈ N(i)} (own row first) with
    ``rule`` (a name, or a callable from :func:`get`), all N nodes in one computation:
    ``x [N, d] -> [N, d]``.

    The robust step of decentralized learning (BRIDGE with the trimmed mean, Yang & Bajwa 2019;
    any rule at every node, e.g. Farhadkhani et al. 2023). Equal, up to float rounding, to ``jax.vmap(lambda m, k: get(rule)(m, f, k))(stack, valid)`` with
    ``stack[i] = [xᵢ, x_{nbr[i,0]}, ...]``, but without forming the ``[N, K+1, d]`` stack:

    * ``mean``: K + 1 row gathers summed in one fused pass (a sparse gossip step);
    * ``median``, ``trimmed_mean`` (K < 16): the sorting network over every node's K + 1
      gathered rows at once (slot-major), one pass fused with the gathers;
    * ``krum``, ``multi_krum``, ``nnm+<mean | median | trimmed_mean | meamed>``,
      ``geometric_median`` with N ≤ 128 and no ``messages``: every pairwise distance from one
      N x N Gram matrix of all rows (centred at their coordinate-wise median), gathered per
      neighbourhood; outputs are weighted sums of gathered rows;
    * anything else (other rules, options, a callable, ``messages`` with a distance rule): the
      vmap above.

    ``neighbors``: int[N, K]; ``mask``: bool[N, K], False on padded slots (their index is then
    ignored); ``messages``: the [N, K, d] rows as received (e.g. Byzantine senders' per-edge
    vectors), by default the neighbours' own rows. ``f`` is the tolerance of each neighbourhood
    of K + 1 rows (static).

    A node whose live rows (itself and its unmasked slots) number fewer than ``min_inputs(rule,
    f)`` keeps its own row, on every path above; a concrete ``mask`` where that happens triggers
    one warning. float16 / bfloat16 rows are aggregated in float32 and returned in their dtype."""
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"neighbourhood: x must be [N, d], got shape {x.shape}")
    name = rule if isinstance(rule, str) else getattr(rule, "rule_name", None)
    label = f"neighbourhood({name or getattr(rule, '__name__', 'rule')})"
    cdt = _compute_dtype(label, x.dtype)
    if cdt != x.dtype:  # half precision: every path computes in float32, the result is cast back
        msgs = None if messages is None else jnp.asarray(messages).astype(cdt)
        return neighbourhood(rule, x.astype(cdt), neighbors, f, mask, messages=msgs, **options).astype(x.dtype)
    nbr = jnp.asarray(neighbors, jnp.int32)
    if nbr.ndim != 2 or nbr.shape[0] != x.shape[0]:
        raise ValueError(f"neighbourhood: neighbors must be int[N, K] with N = {x.shape[0]}, got {nbr.shape}")
    n_nodes, k = nbr.shape
    m = k + 1
    f = _static_int(f)
    if name is not None:
        check_preconditions(name, m, f, **_static(options))
    known = name is not None or hasattr(rule, "aggregator")
    need = min_inputs(name if name is not None else rule, f, **_static(options)) if known else 0
    slot_ok = jnp.ones((n_nodes, k), bool) if mask is None else jnp.asarray(mask, bool)
    valid = jnp.concatenate([jnp.ones((n_nodes, 1), bool), slot_ok], axis=1)  # [N, m]
    if mask is not None and not isinstance(mask, jax.core.Tracer):
        # Counted on the mask as given: inside jit, arrays built from it are traced.
        _warn_below(label, f, np.concatenate([np.ones((n_nodes, 1), bool), np.asarray(mask, bool)], axis=1), need)

    def keep_own(out):
        # Below the precondition a node keeps its own row (slot 0, always live), as the rule does
        # on one neighbourhood: one select, skipped statically when no mask can trigger it.
        if mask is None or need <= 1:
            return out
        return jnp.where((jnp.sum(valid, axis=1) >= need)[:, None], out, x)

    own = jnp.arange(n_nodes, dtype=jnp.int32)[:, None]
    idx = jnp.concatenate([own, jnp.where(slot_ok, jnp.clip(nbr, 0, n_nodes - 1), own)], axis=1)
    if messages is not None:
        messages = jnp.asarray(messages, x.dtype)
        rows = [x] + [messages[:, j] for j in range(k)]
    else:
        rows = [x] + [x.at[idx[:, j]].get(mode="promise_in_bounds") for j in range(1, m)]
    stages = _split(name) if name is not None else None
    if stages is not None and not options:
        if stages == ["mean"]:
            if messages is None:
                return _neighbourhood_mean(x, idx, None if mask is None else valid)
            if mask is None:
                return sum(rows) / jnp.asarray(m, x.dtype)
            w = valid.astype(x.dtype)
            total = sum(jnp.where(valid[:, j, None], rows[j], 0.0) for j in range(m))
            return total / jnp.maximum(jnp.sum(w, axis=1), 1.0)[:, None]
        if stages in (["median"], ["trimmed_mean"]) and m <= 16:
            return keep_own(_coordinate_wise(stages[0], rows, f, valid))
        final_ok = len(stages) == 1 or (
            len(stages) == 2 and stages[0] == "nnm" and stages[1] in ("mean",) + _COORDINATE_WISE
        )
        if (
            messages is None
            and n_nodes <= _GLOBAL_GRAM_MAX_N
            and final_ok
            and stages[0] in ("krum", "multi_krum", "nnm", "geometric_median")
        ):
            return keep_own(_neighbourhood_gram(stages, x, idx, valid, f))
    if (
        stages == ["geometric_median"]
        and messages is None
        and n_nodes <= _GLOBAL_GRAM_MAX_N
        and set(options) <= {"nu", "max_iter", "tol", "start"}
    ):
        return keep_own(_neighbourhood_gram(stages, x, idx, valid, f, **options))
    # The rule from get() applies the same fallback per node (its mask is traced here: no warning).
    agg = functools.partial(rule, **options) if callable(rule) else get(name, **options)
    return jax.vmap(lambda rows_i, valid_i: agg(rows_i, f, valid_i))(jnp.stack(rows, axis=1), valid)


_BLOCK_BYTES = 1 << 19  # a column block of every node's row: half of a 1 MiB L2 cache


def _cpu_threads() -> int:
    """How many cores this process may run on (XLA's CPU thread pool is as large)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gathered_blocks(x, idx, combine):
    """``combine(rows)`` for every node, where ``rows[j] = x[idx[:, j]]`` (a list of m arrays
    [N, d]) and ``combine`` is elementwise along the columns (e.g. a weighted sum of the rows),
    computed column block by column block when that pays.

    One fused pass of m row gathers reads m rows per output row: 9 x 25.6 MB from L3 or memory
    at N = 64, d = 1e5, m = 9. A loop over blocks of b columns of all N rows (N b floats, kept
    in cache) reads x once and the m gathers hit the cache: about 1.5x less CPU time. Every slot
    is a gather, the own row too: a fusion mixing the block itself with gathered rows was not
    vectorized (3.5x slower). The same terms are summed in the same order, so results are
    bitwise those of the unblocked form."""
    n, d = x.shape
    m = idx.shape[1]
    b = _BLOCK_BYTES // (n * x.dtype.itemsize)
    # XLA splits the one fused pass across its threads (rows of the output), not the loop's
    # in-place block updates: with two cores the fused pass is 1.5-1.7x faster in wall time
    # (2.8 against 4.7 ms at N = 64, d = 1e5, 9 rows), on one core the blocks win (5.6 vs 6.3).
    if b < 256 or d < 4 * b or _cpu_threads() > 1:
        return combine([x] + [x.at[idx[:, j]].get(mode="promise_in_bounds") for j in range(1, m)])

    def part(xs):
        return combine([jnp.take(xs, idx[:, j], axis=0, mode="clip") for j in range(m)])

    c = d // b

    def body(t, out):
        return lax.dynamic_update_slice_in_dim(out, part(lax.dynamic_slice_in_dim(x, t * b, b, axis=1)), t * b, axis=1)

    out = lax.fori_loop(0, c, body, jnp.zeros_like(x))
    r = c * b
    return out if r == d else lax.dynamic_update_slice_in_dim(out, part(x[:, r:]), r, axis=1)


def _neighbourhood_mean(x, idx, valid=None):
    """Every node's mean of its rows ``x[idx[i]]`` (``valid`` [N, m] marks live slots; None: all),
    through :func:`_gathered_blocks`."""
    m = idx.shape[1]
    if valid is None:
        return _gathered_blocks(x, idx, lambda rows: sum(rows) / jnp.asarray(m, x.dtype))
    den = jnp.maximum(jnp.sum(valid.astype(x.dtype), axis=1), 1.0)[:, None]
    return _gathered_blocks(
        x, idx, lambda rows: sum(jnp.where(valid[:, j, None], r, 0.0) for j, r in enumerate(rows)) / den
    )


def _neighbourhood_gram(stages, x, idx, valid, f, **options):
    """Krum, Multi-Krum, NNM ∘ rule or the geometric median for every neighbourhood from one
    Gram matrix of all rows."""
    n_nodes, m = idx.shape
    finite = _finite_rows(x)
    c = _big(m, x.shape[1], x.dtype)  # the clamp of the one-node rule on m rows
    xc = jnp.where(finite[:, None], jnp.clip(x, -c, c), 0.0)
    center = _cw_median(xc, finite)
    y = jnp.where(finite[:, None], xc - center, 0.0)
    g = _gram(y)
    sq = jnp.diagonal(g)
    gi = g[idx[:, :, None], idx[:, None, :]]  # [N, m, m]
    si = sq[idx]
    ok = valid & finite[idx]  # present and finite
    eye = jnp.eye(m, dtype=bool)
    dist = jnp.maximum(si[:, :, None] + si[:, None, :] - 2.0 * gi, 0.0)
    dist = jnp.where(eye, 0.0, dist)
    dist = 0.5 * (dist + jnp.swapaxes(dist, -1, -2))
    dist = jnp.where(ok[:, :, None] & ok[:, None, :], dist, jnp.inf)
    n_eff = jnp.sum(valid, axis=1).astype(jnp.int32)

    def gathered():  # the clamped rows, slot-major; built where used (a conditional's operands
        # are materialized, so the rows must not be captured by one that rarely runs)
        return [jnp.where(ok[:, j, None], xc[idx[:, j]], 0.0) for j in range(m)]

    if stages[0] == "geometric_median":
        nu, max_iter, tol = options.get("nu", 1e-6), options.get("max_iter", 100), options.get("tol", 1e-7)
        if _gm_start(options.get("start", "median")):
            # From the origin: row j's distance to the start is |x_j| at every node, and later
            # iterates are convex combinations of the node's rows, so the globally centred
            # sub-Gram gi serves every step: no per-node start, no second N x N product.
            nrm = jnp.sqrt(_row_ssq(xc))
            gl = jnp.where(ok[:, :, None] & ok[:, None, :], gi, 0.0)
            a = _weiszfeld(gl, ok, nu, max_iter, tol, d0=nrm[idx])
            w = jnp.where(ok, a, 0.0)
            # z = (sum a) center + aᵀy = sum_j a_j xc_j, the clamp redone per block (not stored)
            return _gathered_blocks(
                x,
                idx,
                lambda r: sum(
                    w[:, j, None] * jnp.where(finite[idx[:, j], None], jnp.clip(r[j], -c, c), 0.0) for j in range(m)
                ),
            )
        rows = gathered()
        # Weiszfeld from each neighbourhood's coordinate-wise median z0ᵢ: the Gram matrix of its
        # rows centred at z0ᵢ is (r_a - uᵢ)·(r_b - uᵢ) with r = y (centred globally) and
        # uᵢ = z0ᵢ - center, i.e. G_ab - (r uᵀ)_{a,i} - (r uᵀ)_{b,i} + |uᵢ|²: one more N x N
        # product, r uᵀ, instead of m(m+1)/2 passes per node.
        z0 = _cw_median(rows, ok.T)
        u = z0 - center
        ru = _cross(y, u)  # [N, N]: r_j . u_i
        rui = ru[idx, jnp.arange(n_nodes)[:, None]]  # [N, m]
        uu = jnp.sum(u * u, axis=-1)
        gl = gi - rui[:, :, None] - rui[:, None, :] + uu[:, None, None]
        gl = jnp.where(ok[:, :, None] & ok[:, None, :], gl, 0.0)
        a = _weiszfeld(gl, ok, nu, max_iter, tol)
        return z0 + sum(a[:, j, None] * jnp.where(ok[:, j, None], rows[j] - z0, 0.0) for j in range(m))
    if stages[0] in ("krum", "multi_krum"):
        scores = _krum_scores(dist, valid, ok, n_eff - f - 2)
        ss = jnp.sort(scores, axis=-1)
        has_tie = jnp.any((ss[:, 1:] == ss[:, :-1]) & jnp.isfinite(ss[:, 1:]))

        def tie_key(_):
            # The one-node rule's key: squared distance to the neighbourhood's coordinate-wise
            # median (computed only when some score is tied: m passes over the gathered rows).
            rows = gathered()
            med = _cw_median(rows, ok.T)
            return jnp.stack(
                [jnp.where(ok[:, j], jnp.sum(jnp.square(rows[j] - med), axis=-1), jnp.inf) for j in range(m)], axis=1
            )

        tie = lax.cond(has_tie, tie_key, lambda _: jnp.zeros_like(scores), None)
        if stages[0] == "krum":
            best = _lex_argmin(scores, tie)
            return xc[jnp.take_along_axis(idx, best[:, None], axis=1)[:, 0]]
        sel = ((_lex_rank(scores, tie) < (n_eff - f)[:, None]) & ok).astype(x.dtype)
        rows = gathered()
        total = sum(sel[:, j, None] * rows[j] for j in range(m))
        return total / jnp.maximum(jnp.sum(sel, axis=1), 1.0)[:, None]
    # NNM (Allouah et al. 2023): slot a becomes the mean of its n_eff - f nearest slots.
    dn = jnp.where(valid[:, None, :], dist, jnp.inf)
    dn = jnp.where(eye, -1.0, dn)
    rank = jnp.argsort(jnp.argsort(dn, axis=-1, stable=True), axis=-1, stable=True)
    w = ((rank < (n_eff - f)[:, None, None]) & ok[:, None, :]).astype(x.dtype)  # [N, m, m]
    cnt = jnp.maximum(jnp.sum(w, axis=-1), 1.0)
    rows = gathered()
    raw = [x] + [x[idx[:, j]] for j in range(1, m)]
    mixed = [
        jnp.where(ok[:, a, None], sum(w[:, a, b, None] * rows[b] for b in range(m)) / cnt[:, a, None], raw[a])
        for a in range(m)
    ]
    if stages[1] == "mean":
        total = sum(jnp.where(valid[:, j, None], mixed[j], 0.0) for j in range(m))
        return total / jnp.maximum(n_eff, 1).astype(x.dtype)[:, None]
    return _coordinate_wise(stages[1], mixed, f, valid)


def _coordinate_wise(name, rows, f, valid):
    """A coordinate-wise rule over slot-major rows (a list of m arrays [N, d]). Each row is
    mapped to its ranked values before stacking: the same map on the stacked [m, N, d] array is
    a fusion XLA cannot slice back into its rows (48 ms against 7 ms, m = 9, N = 64, d = 1e5)."""
    c = _big(len(rows), rows[0].shape[-1], rows[0].dtype)
    v = jnp.stack([jnp.where(jnp.isnan(r), c, jnp.clip(r, -c, c)) for r in rows])
    return _IMPL[name](v, f, valid.T, ranked=True)


# ----------------------------------------------------------------------------- (f, kappa)-robustness

# The coefficients are theory: they live in rj.theory, re-exported here for convenience.
kappa_lower_bound = _theory.kappa_lower_bound
kappa_bound = _theory.kappa_bound


def kappa_ratio(out, honest):
    """|F(x) - mean_S|^2 / ((1/|S|) sum_{i in S} |x_i - mean_S|^2) for the honest rows S."""
    mu = jnp.mean(honest, axis=0)
    var = jnp.mean(jnp.sum(jnp.square(honest - mu), axis=1))
    return jnp.sum(jnp.square(out - mu)) / jnp.maximum(var, jnp.finfo(honest.dtype).tiny)


def _fixed_attacks(honest, f, key):
    """Byzantine blocks [A, f, d] from the standard attacks against this honest set."""
    h, d = honest.shape
    mu = jnp.mean(honest, axis=0)
    sd = jnp.std(honest, axis=0, ddof=1)
    spread = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(honest - mu), axis=1))) + 1e-12
    e = jax.random.normal(key, (d,))
    e = e / jnp.linalg.norm(e)
    cands = [mu + z * sd for z in (-3.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 3.0)]  # ALIE-like
    cands += [mu + t * spread * e for t in (0.5, 1.0, 2.0, 5.0, 100.0)]  # far point
    cands += [-mu, -0.1 * mu, -2.0 * mu, honest[0], honest[jnp.argmax(jnp.sum(jnp.square(honest - mu), 1))]]
    return jnp.stack([jnp.broadcast_to(c, (f, d)) for c in cands])


def empirical_kappa(
    rule, n: int, f: int, *, d: int = 5, trials: int = 4, steps: int = 60, key=None, **options
) -> float:
    """Search adversarial inputs for the worst ratio |F(x) - mean_S|^2 / var_S (the (f, kappa)-
    robustness of Allouah et al. 2023, Def. 2) with S the n - f honest rows.

    Per trial: Gaussian honest rows, the fixed attacks (ALIE with several z, far points, sign
    flip, IPM, mimic), the lower-bound construction (n - 2f rows at 0, f at ±u, both labellings),
    then hill climbing over the f Byzantine rows from the best attack: normalised gradient steps
    (jax.grad through the rule where it is differentiable) alternating with random steps,
    accepted only if the ratio grows. Returns the worst ratio found (a lower estimate of kappa)."""
    fn = get(rule) if isinstance(rule, str) else rule
    key = jax.random.PRNGKey(0) if key is None else key
    h = n - f

    def ratio(byz, honest):
        return kappa_ratio(fn(jnp.concatenate([honest, byz]), f, **options), honest)

    def lb_ratio():
        # n - 2f at 0, f at u, f at -u: exact ratio >= f/(n-2f) for one of the two labellings.
        u = jnp.zeros((d,)).at[0].set(1.0)
        base = jnp.zeros((n - 2 * f, d))
        plus, minus = jnp.broadcast_to(u, (f, d)), jnp.broadcast_to(-u, (f, d))
        # One input, two labellings: the rule cannot tell who is honest, so it must miss one.
        # (Re-ordering the rows per labelling would let index tie-breaks "know" the answer.)
        out = fn(jnp.concatenate([base, plus, minus]), f, **options)
        r1 = kappa_ratio(out, jnp.concatenate([base, plus]))
        r2 = kappa_ratio(out, jnp.concatenate([base, minus]))
        return jnp.maximum(r1, r2)

    if f == 0:
        honest = jax.random.normal(key, (trials, n, d))
        return float(jnp.max(jax.vmap(lambda hs: ratio(jnp.zeros((0, d)), hs))(honest)))

    grad_fn = jax.grad(ratio)
    try:
        jax.eval_shape(grad_fn, jnp.zeros((f, d)), jnp.zeros((h, d)))
        has_grad = True
    except Exception:  # noqa: BLE001 - e.g. reverse-mode through lax.while_loop
        has_grad = False

    def one_trial(k):
        k1, k2, k3 = jax.random.split(k, 3)
        honest = jax.random.normal(k1, (h, d)) + jax.random.normal(k2, (d,))
        atk = _fixed_attacks(honest, f, k3)
        rs = jax.vmap(lambda b: ratio(b, honest))(atk)
        rs = jnp.where(jnp.isfinite(rs), rs, -1.0)
        byz0 = atk[jnp.argmax(rs)]
        spread = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(honest - honest.mean(0)), 1)))

        def body(t, carry):
            byz, best, step, kk = carry
            kk, kn = jax.random.split(kk)
            noise = jax.random.normal(kn, byz.shape)
            if has_grad:
                g = grad_fn(byz, honest)
                gn = jnp.linalg.norm(g)
                usable = jnp.isfinite(gn) & (gn > 0) & (t % 2 == 0)
                direction = jnp.where(usable, g / jnp.where(usable, gn, 1.0), noise / jnp.linalg.norm(noise))
            else:
                direction = noise / jnp.linalg.norm(noise)
            cand = byz + step * spread * direction
            r = ratio(cand, honest)
            acc = jnp.isfinite(r) & (r > best)
            return (
                jnp.where(acc, cand, byz),
                jnp.where(acc, r, best),
                jnp.where(acc, step * 1.5, jnp.maximum(step * 0.6, 1e-3)),
                kk,
            )

        init = (byz0, jnp.max(rs), jnp.asarray(1.0), jax.random.fold_in(k, 1))
        _, best, _, _ = lax.fori_loop(0, steps, body, init)
        return best

    worst = jnp.max(jax.jit(jax.vmap(one_trial))(jax.random.split(key, trials)))
    return float(jnp.maximum(worst, lb_ratio()))
