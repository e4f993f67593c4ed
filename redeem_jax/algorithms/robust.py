"""Byzantine-robust communication, inside the same jitted round as plain D-SGD.

Two settings, each a ``communicate(x_local, x_prev, round, key) -> x_new`` for
:func:`redeem_jax.algorithms.dsgd.make_round`:

* **Federated** (:func:`server_robust_communication`): every node sends its update
  Δᵢ = x_localᵢ − x_prevᵢ (with a momentum optimizer this is −η·mᵢ, the worker momentum of
  Karimireddy, He & Jaggi 2021 and Farhadkhani et al. 2022); Byzantine rows are replaced by
  the attack, which sees every honest update; the server applies a robust rule and
  broadcasts x̄ + F(Δ).
* **Decentralized** (:func:`robust_gossip_communication`): every node receives its
  neighbours' rows as per-edge messages ``[N, K, d]`` (``rj.gossip.gather``); Byzantine
  senders' slots are overwritten by an edge attack (a different vector on every edge is
  allowed); every node then applies a rule to its own row and what it received, vmapped
  over nodes. Rules: any ``rj.aggregators`` rule over {xᵢ} ∪ neighbours (BRIDGE when it is the
  trimmed mean, Yang & Bajwa 2019), ClippedGossip (He, Karimireddy & Jaggi 2022), IOS
  (Wu et al. 2023) and CS+ (Gaucher, Dieuleveut & Hendrikx 2025).

Non-finite messages (NaN, ±inf) are treated as infinitely far: they are clipped or cut away,
never averaged in.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax import gossip as _gossip

__all__ = [
    "DECENTRALIZED_RULES",
    "clipped_gossip",
    "ios",
    "cs_plus",
    "byzantine_weight_budget",
    "laplacian_step",
    "global_edge_attack",
    "robust_gossip_communication",
    "server_robust_communication",
]

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


def global_edge_attack(vector_attack: Callable, byzantine: np.ndarray) -> Callable:
    """Edge attack from a vector attack that sees every honest row (the omniscient attacker of
    DESIGN.md): the f Byzantine vectors are computed once from all honest rows and Byzantine
    node k sends its vector to every neighbour."""
    byz = np.asarray(byzantine, bool)
    honest_idx = np.flatnonzero(~byz)
    byz_idx = np.flatnonzero(byz)
    rank = np.zeros(byz.size, np.int32)
    rank[byz_idx] = np.arange(byz_idx.size)
    f = int(byz_idx.size)

    def attack(messages, x, neighbors, weights, self_weight, edge_mask, byzantine_mask, key):
        del weights, self_weight, byzantine_mask
        vectors = vector_attack(x[honest_idx], f, key)  # [f, d]
        sender_byz = jnp.asarray(byz)[neighbors] & edge_mask
        forged = vectors[jnp.asarray(rank)[neighbors]]  # [N, K, d]
        return jnp.where(sender_byz[..., None], forged.astype(messages.dtype), messages)

    return attack


def robust_gossip_communication(topology, rule: str | Callable, b: int, byzantine: np.ndarray,
                                edge_attack: Callable | None = None) -> Callable:
    """Decentralized robust communication: gather → attack Byzantine edges → rule at every node.

    ``rule``: "gossip" (plain weighted mean, not robust), "clipped_gossip", "ios", "cs_plus",
    or an aggregator callable ``agg(x[m, d], f, mask=...)`` applied to {xᵢ} ∪ neighbours
    (own row first). ``b``: the number of Byzantine neighbours the rule tolerates.
    """
    byz = jnp.asarray(np.asarray(byzantine, bool))
    step = laplacian_step(topology) if rule == "cs_plus" else None

    def communicate(x_local, x_prev, round, key):
        del x_prev
        nbr, w, sw, em = topology.edge_arrays(round)
        messages = _gossip.gather(topology, x_local, round)
        if edge_attack is not None:
            messages = edge_attack(messages, x_local, nbr, w, sw, em, byz, key)
        if rule == "gossip":
            return _gossip.combine(x_local, messages, w, sw)
        if rule == "clipped_gossip":
            fn = lambda xi, m, wi, si, mi: clipped_gossip(xi, m, wi, si, mi, b)  # noqa: E731
        elif rule == "ios":
            fn = lambda xi, m, wi, si, mi: ios(xi, m, wi, si, mi, b)  # noqa: E731
        elif rule == "cs_plus":
            fn = lambda xi, m, wi, si, mi: cs_plus(xi, m, wi, si, mi, b, step)  # noqa: E731
        elif callable(rule):
            def fn(xi, m, wi, si, mi):
                del wi, si
                stack = jnp.concatenate([xi[None], m], axis=0)
                valid = jnp.concatenate([jnp.ones((1,), bool), mi])
                return rule(stack, b, mask=valid)
        else:
            raise ValueError(f"aggregation.rule: {rule!r} is not a decentralized rule ({', '.join(DECENTRALIZED_RULES)}) "
                             "or an aggregator")
        return jax.vmap(fn)(x_local, messages, w.astype(x_local.dtype), sw.astype(x_local.dtype), em)

    return communicate


def server_robust_communication(rule: Callable | None, f: int, byzantine: np.ndarray,
                                vector_attack: Callable | None = None) -> Callable:
    """Federated robust aggregation of updates (Karimireddy et al. 2021; Allouah et al. 2023).

    x⁺ = x̄_prev + F(Δ₁, …, Δ_N) for every node, Δᵢ = x_localᵢ − x_prevᵢ, the Byzantine rows of Δ
    replaced by ``vector_attack(honest Δ, f, key)``; ``rule=None`` is the plain mean (FedAvg).
    x̄_prev is the honest mean, equal to every honest row after the first round.
    """
    byz = np.asarray(byzantine, bool)
    honest_idx = np.flatnonzero(~byz)
    byz_idx = np.flatnonzero(byz)

    def communicate(x_local, x_prev, round, key):
        del round
        delta = x_local - x_prev
        if vector_attack is not None and byz_idx.size:
            delta = delta.at[byz_idx].set(vector_attack(delta[honest_idx], int(byz_idx.size), key).astype(delta.dtype))
        agg = jnp.mean(delta, axis=0) if rule is None else rule(delta, f)
        base = jnp.mean(x_prev[honest_idx], axis=0)
        return jnp.broadcast_to(base + agg, x_local.shape)

    return communicate
