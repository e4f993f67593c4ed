"""Collaborative learning of personalized models over a similarity graph (Vanhaesebrouck,
Bellet & Tommasi 2017, "Decentralized collaborative learning of personalized models over
networks", AISTATS).

Every node i keeps its own model θᵢ; together they minimise

    Q(Θ) = Σᵢ cᵢ Lᵢ(θᵢ) + (μ/2) Σᵢ Σⱼ Wᵢⱼ ‖θᵢ − θⱼ‖²            (paper's Eq. 2 with μ ↔ 1/μ)

over the similarity graph W (the topology's symmetric mixing weights; self-weights drop out),
with cᵢ > 0 node i's confidence in its local loss (the paper takes cᵢ ∝ its sample count).
∂Q/∂θᵢ = cᵢ∇Lᵢ(θᵢ) + 2μ Σⱼ Wᵢⱼ(θᵢ − θⱼ) = cᵢ∇Lᵢ(θᵢ) + 2μ(θᵢ − [WΘ]ᵢ) for a row-stochastic W,
so one synchronous round is one gossip exchange (the neighbour average [WΘ]ᵢ) and one local
optimizer step on that gradient: a decentralized gradient method on Q whose fixed point is
Q's minimiser exactly (the Laplacian term vanishes on consensus, so there is no consensus bias
to remove). μ = 0 is local training; μ → ∞ forces consensus on argmin Σᵢ cᵢLᵢ.

Model propagation (the paper's Sec. 3, quadratic Lᵢ(θ) = ½‖θ − bᵢ‖²): the stationarity
condition cᵢ(θᵢ − bᵢ) + 2μ(θᵢ − [WΘ]ᵢ) = 0 for every i is the linear system

    (C + 2μ(I − W)) Θ* = C B,      C = diag(c),

which :func:`closed_form` solves densely (the paper's Θ* = ᾱ(I − ᾱ(I−C) − αP)⁻¹CΘˢᵒˡ in its
parametrisation). The system matrix is symmetric positive definite when every cᵢ > 0, and the
c-weighted mean Σᵢcᵢθᵢ* = Σᵢcᵢbᵢ for every μ (1ᵀ(I − W) = 0). A constant-step round converges
to it when η(max cᵢ + 4μ) < 2 (λ_max(I − W) ≤ 2).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import optax

from redeem_jax.core import Algorithm, Exchange
from redeem_jax.metrics import masked_mean

__all__ = ["CollabState", "collab", "closed_form"]


class CollabState(NamedTuple):
    """The personal models θᵢ and their optimizer states."""

    x: Any  # f32[N, d]: every node's personal model
    opt: Any  # the optimizer state, vmapped over nodes


def collab(optimizer, mu: float = 1.0, confidence: tuple = (), over: str = "graph") -> Algorithm:
    """Graph-regularized collaborative learning (Vanhaesebrouck et al. 2017, Eq. 2), one round:
    θᵢ ← θᵢ − η·[cᵢ∇Lᵢ(θᵢ) + 2μ(θᵢ − [WΘ]ᵢ)] with the optimizer in place of −η (module
    docstring). ``mu`` is μ (a swept hyper-parameter from a config); ``confidence`` the cᵢ, one
    per node (empty: every cᵢ = 1); ``over = "server"`` takes W = 11ᵀ/N (the server's mean)."""
    if over not in ("graph", "server"):
        raise ValueError(f"algorithm.over: {over!r} is not one of graph, server")
    conf = tuple(float(c) for c in confidence)
    if any(c <= 0 for c in conf):
        raise ValueError(f"algorithm.confidence: every c_i must be > 0, got {confidence}")
    if not hasattr(mu, "name") and float(mu) < 0:
        raise ValueError(f"algorithm.mu: must be >= 0, got {mu}")
    hypers = tuple(optimizer.hypers) + tuple(h for h in (mu,) if not isinstance(h, (int, float)))

    def init(x0, ctx):
        if conf and len(conf) != x0.shape[0]:
            raise ValueError(f"algorithm.confidence: {len(conf)} values for {x0.shape[0]} nodes")
        return CollabState(x0, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        loss, g = oracle(a.x, ctx)
        c = jnp.asarray(conf, a.x.dtype)[:, None] if conf else 1.0
        # The gossip gives [WΘ]ᵢ; θᵢ − [WΘ]ᵢ = Σⱼ Wᵢⱼ(θᵢ − θⱼ) is the Laplacian term's gradient / 2μ.
        pull = a.x - channels["model"](a.x, ctx)
        grad = c * g + 2.0 * ctx.value(mu) * pull
        step, opt = ctx.skip_step(*optimizer.update(grad, a.opt, a.x, ctx), a.opt)
        return CollabState(optax.apply_updates(a.x, step), opt), {"train_loss": masked_mean(loss, ctx.honest)}

    exchanges = {"model": Exchange(robust=True, over=over, doc="the personal models: their neighbour average [WΘ]ᵢ")}
    return Algorithm(init, update, lambda a: a.x, exchanges, "collab", hypers)


def closed_form(W, b, c, mu: float) -> np.ndarray:
    """Model propagation's fixed point (Vanhaesebrouck et al. 2017, Sec. 3, quadratic losses
    Lᵢ(θ) = ½‖θ − bᵢ‖²): Θ* = (C + 2μ(I − W))⁻¹ C B, dense (float64)."""
    W = np.asarray(W, np.float64)
    b = np.asarray(b, np.float64)
    c = np.broadcast_to(np.asarray(c, np.float64), (W.shape[0],))
    return np.linalg.solve(np.diag(c) + 2.0 * mu * (np.eye(W.shape[0]) - W), c[:, None] * b)
