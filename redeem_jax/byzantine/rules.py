"""Robust gossip rules at one node: what an honest node computes from its own row and the
per-edge messages it received (``messages [K, d]``, ``weights [K]``, ``mask [K]``).

ClippedGossip (He, Karimireddy & Jaggi 2022), IOS (Wu, Chen, Ling & Xu 2023) and CS+ (Gaucher,
Dieuleveut & Hendrikx 2025); ``rj.channels.robust_gossip`` vmaps them over nodes inside the
round. Non-finite messages (NaN, ±inf) are treated as infinitely far: they are clipped or cut
away, never averaged in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DECENTRALIZED_RULES", "clipped_gossip", "ios", "cs_plus", "byzantine_weight_budget", "laplacian_step"]

DECENTRALIZED_RULES = ("gossip", "clipped_gossip", "ios", "cs_plus")


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

    keep = jax.lax.fori_loop(0, max(int(b), 0), body, ok)
    return average(keep)


def laplacian_step(topology) -> float:
    """η = 1/λ_max(I − W) over the topology's period (CS+ step size, Gaucher et al. 2025)."""
    lam = 0.0
    for t in range(topology.period):
        W = topology.mixing_matrix(round=t)
        L = np.eye(W.shape[0]) - 0.5 * (W + W.T)
        lam = max(lam, float(np.linalg.eigvalsh(L)[-1]))
    return 1.0 / max(lam, 1e-12)
