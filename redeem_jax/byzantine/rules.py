"""Robust gossip rules at one node: what an honest node computes from its own row and the
per-edge messages it received (``messages [K, d]``, ``weights [K]``, ``mask [K]``).

ClippedGossip (He, Karimireddy & Jaggi 2022), IOS (Wu, Chen, Ling & Xu 2023) and CS+ (Gaucher,
Dieuleveut & Hendrikx 2025); ``rj.channels.robust_gossip`` vmaps them over nodes inside the
round. Non-finite messages (NaN, ±inf) are treated as infinitely far: they are clipped or cut
away, never averaged in.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DECENTRALIZED_RULES",
    "clipped_gossip",
    "ios",
    "cs_plus",
    "byzantine_weight_budget",
    "laplacian_step",
    "min_inputs",
]

DECENTRALIZED_RULES = ("gossip", "clipped_gossip", "ios", "cs_plus")


def min_inputs(rule, b: int) -> int:
    """The fewest live inputs (own row + live in-neighbours) ``rule`` needs at a node that
    tolerates ``b`` Byzantine neighbours; below it ``rj.channels.robust_gossip`` keeps the
    node's own value for that round.

    * "gossip", "clipped_gossip", "ios", "cs_plus": 1, they are defined at any degree. Each is
      xᵢ plus a weighted sum over the neighbours, and the own row is never cut or clipped.
      ClippedGossip (He, Karimireddy & Jaggi 2022) keeps the closest neighbours of weight
      Σⱼ Wᵢⱼ − δᵢ unclipped, and when δᵢ covers every neighbour its radius is 0. IOS (Wu et al.
      2023) removes at most b neighbours and, with ≤ b of them, averages the own row alone. CS+
      (Gaucher et al. 2025) clips the farthest neighbours of weight 2δᵢ; when that is all of
      them the radius is 0. So a low-degree node keeps xᵢ by the rule itself. Their papers'
      guarantees rest on graph-level conditions (δᵢ small against the honest subgraph's
      spectral gap / algebraic connectivity), not on a per-node count.
    * an aggregator (a name, or a callable from ``rj.aggregators.get``, possibly wrapped with
      its ``__name__`` kept): ``rj.aggregators.min_inputs(rule, b)``: 2b + 1 for the median,
      trimmed mean and the other honest-majority rules, 2b + 3 for Krum, 4b + 3 for Bulyan,
      1 for the mean.
    * a custom callable the registry does not know: 1 (its precondition is unknown; no
      fallback).
    """
    if isinstance(rule, str) and rule in DECENTRALIZED_RULES:
        return 1
    from redeem_jax.byzantine import aggregators

    fn = getattr(aggregators, "min_inputs", None)
    if fn is None:  # pragma: no cover - an older aggregators module
        return 1
    for candidate in (rule, getattr(rule, "__name__", None)):
        if candidate is None:
            continue
        try:
            return int(fn(candidate, int(b)))
        except (TypeError, ValueError):
            continue
    return 1


def _float_rule(fn):
    """Run a rule in ``promote(dtype, float32)``: distances and weighted sums of float16 /
    bfloat16 rows overflow or lose the small clipped terms; the result comes back in the
    inputs' dtype. Integer or bool rows are refused."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(x_i, messages, weights, self_weight, mask, *args, **kwargs):
        x_i, messages = jnp.asarray(x_i), jnp.asarray(messages)
        for a in (x_i, messages):
            if not jnp.issubdtype(a.dtype, jnp.floating):
                raise TypeError(
                    f"rules.{name}: got {a.dtype.name} rows; robust gossip averages floats, "
                    "cast them to a float dtype (float32, bfloat16, ...) first"
                )
        dt = jnp.result_type(x_i.dtype, messages.dtype)
        ct = jnp.promote_types(dt, jnp.float32)
        out = fn(
            x_i.astype(ct),
            messages.astype(ct),
            jnp.asarray(weights).astype(ct),
            jnp.asarray(self_weight).astype(ct),
            jnp.asarray(mask, bool),
            *args,
            **kwargs,
        )
        return out.astype(dt)

    return wrapper


def _finite_rows(m):
    return jnp.all(jnp.isfinite(m), axis=-1)


def _distances(x_i, messages, mask):
    """‖mₖ − xᵢ‖ per slot, +inf for padded or non-finite messages."""
    ok = mask & _finite_rows(messages)
    diff = jnp.where(ok[:, None], messages - x_i, 0.0)
    dist = jnp.sqrt(jnp.sum(diff**2, axis=-1))
    return diff, jnp.where(ok & jnp.isfinite(dist), dist, jnp.inf), ok


def _clip_sum(diff, dist, weights, ok, tau):
    """Σₖ wₖ·clip(diffₖ, τ) with clip(u, τ) = u·min(1, τ/‖u‖); dropped slots contribute 0."""
    scale = jnp.where(dist > tau, tau / jnp.where(dist > 0, dist, 1.0), 1.0)
    scale = jnp.where(ok & jnp.isfinite(dist), scale, 0.0)
    return jnp.sum((weights * scale)[:, None] * diff, axis=0)


def byzantine_weight_budget(weights, mask, b: int):
    """δᵢ: the largest weight b neighbours can hold (sum of the b largest weights at node i)."""
    w = jnp.where(mask, weights, 0.0)
    if b <= 0:
        return jnp.zeros((), w.dtype)
    return jnp.sum(jax.lax.top_k(w, min(b, w.shape[-1]))[0])


@_float_rule
def clipped_gossip(x_i, messages, weights, self_weight, mask, b: int):
    """ClippedGossip at one node (He, Karimireddy & Jaggi 2022, Alg. 1, adaptive radius).

    xᵢ⁺ = xᵢ + Σⱼ Wᵢⱼ clip(xⱼ − xᵢ, τᵢ). The radius keeps the closest neighbours of total weight
    up to (Σⱼ Wᵢⱼ − δᵢ) unclipped, δᵢ the weight b Byzantine neighbours could hold (their
    "practical rule"; the oracle radius needs the honest set, which no node knows).
    """
    del self_weight
    diff, dist, ok = _distances(x_i, messages, mask)
    w = jnp.where(mask, weights, 0.0)
    keep_weight = jnp.sum(w) - byzantine_weight_budget(weights, mask, b)
    order = jnp.argsort(dist)
    cum = jnp.cumsum(w[order])
    kept = (cum <= keep_weight * (1 + 1e-6)) & jnp.isfinite(dist[order])
    tau = jnp.max(jnp.where(kept, dist[order], 0.0))
    return x_i + _clip_sum(diff, dist, w, ok, tau)


@_float_rule
def cs_plus(x_i, messages, weights, self_weight, mask, b: int, step):
    """CS+ robust gossip at one node (Gaucher, Dieuleveut & Hendrikx 2025).

    xᵢ⁺ = xᵢ + η Σⱼ Wᵢⱼ clip(xⱼ − xᵢ, τᵢ), where τᵢ clips exactly the farthest neighbours of total
    weight 2δᵢ (δᵢ as in :func:`byzantine_weight_budget`) and η = 1/λ_max(I − W), the inverse
    largest eigenvalue of the gossip Laplacian (:func:`laplacian_step`).
    """
    del self_weight
    diff, dist, ok = _distances(x_i, messages, mask)
    w = jnp.where(mask, weights, 0.0)
    budget = 2.0 * byzantine_weight_budget(weights, mask, b)
    order = jnp.argsort(-jnp.where(mask, dist, -1.0))  # farthest first, padding last
    cum = jnp.cumsum(w[order])
    clipped = (cum <= budget * (1 + 1e-6)) & mask[order]
    tau = jnp.max(jnp.where(~clipped & mask[order], dist[order], 0.0))
    tau = jnp.where(jnp.isfinite(tau), tau, 0.0)
    return x_i + step * _clip_sum(diff, dist, w, ok, tau)


@_float_rule
def ios(x_i, messages, weights, self_weight, mask, b: int):
    """Iterative outlier scissor at one node (Wu, Chen, Ling & Xu 2023, IOS).

    b times: form the weighted average of the rows still kept (own row included) and drop the
    neighbour farthest from it; return the weighted average of the rest, weights renormalised.
    """
    ok = mask & _finite_rows(messages)
    safe = jnp.where(ok[:, None], messages, 0.0)
    w = jnp.where(ok, weights, 0.0)

    def average(keep):
        wk = jnp.where(keep, w, 0.0)
        return (self_weight * x_i + wk @ safe) / (self_weight + jnp.sum(wk))

    def body(_, keep):
        centre = average(keep)
        dev = safe - centre
        # Scaled norm: 1e38 entries would overflow a plain sum of squares to inf for every row.
        scale = jnp.max(jnp.abs(dev), axis=-1)
        dist = scale * jnp.sqrt(jnp.sum((dev / jnp.where(scale > 0, scale, 1.0)[:, None]) ** 2, axis=-1))
        dist = jnp.where(keep, dist, -1.0)
        # A non-finite message is already out (ok False); the farthest kept one goes next.
        drop = jnp.argmax(dist)
        return keep.at[drop].set(keep[drop] & (dist[drop] < 0))

    keep = ok
    if int(b) <= 8:  # unrolled: no loop to compile per call outside jit, the same program inside
        for t in range(max(int(b), 0)):
            keep = body(t, keep)
    else:
        keep = jax.lax.fori_loop(0, int(b), body, ok)
    return average(keep)


_DENSE_EIG_MAX_N = 2048  # above this, λ_max by ARPACK on the sparse Laplacian (as topology's spectral norms)


def _laplacian(W):
    """I − (W + Wᵀ)/2 as a sparse matrix (the symmetric part: CS+'s analysis is for symmetric W)."""
    import scipy.sparse as sp

    W = sp.csr_matrix(W)
    return (sp.identity(W.shape[0], format="csr") - 0.5 * (W + W.T)).tocsr()


def gershgorin_bound(L) -> float:
    """max_i Σⱼ |Lᵢⱼ| ≥ λ_max(L) for symmetric L (Gershgorin's disc theorem). For L = I − W with W
    nonnegative, symmetric and stochastic it is max_i 2(1 − wᵢᵢ)."""
    import scipy.sparse as sp

    return float(np.asarray(abs(sp.csr_matrix(L)).sum(axis=1)).max())


def _lambda_max(L, dense: bool) -> float:
    import scipy.sparse.linalg as spla

    if dense:
        return float(np.linalg.eigvalsh(L.toarray())[-1])
    try:
        # The Ritz value is a Rayleigh quotient (≤ λ_max) and with tol 1e-3 is within ~1e-4 of
        # it: CS+'s gossip step needs η < 2/λ_max, so η = 1/θ keeps a margin of ~2. A tighter tol
        # costs seconds on a 20,000-node ring, whose top eigenvalues cluster.
        val = spla.eigsh(L, k=1, which="LA", tol=1e-3, maxiter=2000, return_eigenvectors=False)
        return float(val[-1])
    except spla.ArpackError:
        return gershgorin_bound(L)  # a larger λ: a smaller, still convergent step


def laplacian_step(topology, method: str = "auto") -> float:
    """η = 1/λ_max(I − W) over the topology's period (CS+ step size, Gaucher et al. 2025), W's
    symmetric part.

    ``method``: "dense" (``eigvalsh`` of the dense n × n Laplacian; refused above gossip's dense
    limit, ``n > 16384``, with gossip's message), "sparse" (ARPACK ``eigsh`` on the sparse
    Laplacian to relative tolerance 1e-3, O(nnz) memory; if it does not converge, Gershgorin's bound
    max_i Σⱼ|Lᵢⱼ| ≥ λ_max, i.e. a smaller step), "gershgorin" (that bound alone), or "auto"
    (dense up to n = 2048, sparse above). No n × n array is formed except by "dense".
    """
    from redeem_jax.network import gossip as _gossip

    if method not in ("auto", "dense", "sparse", "gershgorin"):
        raise ValueError(f"laplacian_step: method must be 'auto', 'dense', 'sparse' or 'gershgorin', got {method!r}")
    n = int(topology.n)
    if method == "dense" and n > _gossip._DENSE_MAX_N:
        raise _gossip.dense_limit_error(n, "CS+'s dense Laplacian eigensolver")
    # ARPACK needs a few more rows than its Krylov basis: tiny graphs are solved exactly.
    dense = method == "dense" or (method == "auto" and n <= _DENSE_EIG_MAX_N) or (method == "sparse" and n < 8)
    lam = 0.0
    for t in range(topology.period):  # host-side, once per channel: one Laplacian per round of the period
        L = _laplacian(topology.sparse_mixing_matrix(round=t))
        lam = max(lam, gershgorin_bound(L) if method == "gershgorin" else _lambda_max(L, dense))
    return 1.0 / max(lam, 1e-12)
