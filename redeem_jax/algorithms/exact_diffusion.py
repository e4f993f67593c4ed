"""Exact diffusion (Yuan, Ying, Zhao & Sayed 2019) and D² (Tang, Lian, Yan, Zhang & Liu 2018).

Adapt–correct–combine with ψ₀ = X₀:

    ψ_{t+1} = X_t + u_t            (u_t the optimizer's step on G_t = ∇F(X_t); SGD: −α G_t)
    φ_{t+1} = ψ_{t+1} + X_t − ψ_t  (correction)
    X_{t+1} = W̄ φ_{t+1}           (combine)

which for SGD is X_{t+1} = W̄(2X_t − X_{t−1} − α(G_t − G_{t−1})), X₁ = W̄(X₀ − αG₀). Exact
diffusion uses W̄ = (I + W)/2; D² uses W itself and needs λ_min(W) > −1/3. The network mean runs
exact gradient descent on the mean gradient and the fixed point is the optimum. Both need a
symmetric W: on a doubly stochastic but non-symmetric matrix (a directed ring) they diverge
at every step size, so :func:`exact_diffusion` refuses one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import optax

from redeem_jax.core import Algorithm, Exchange
from redeem_jax.metrics import masked_mean

__all__ = ["DiffusionState", "exact_diffusion", "d2"]


class DiffusionState(NamedTuple):
    """Exact diffusion's and D²'s state: the models X_t, the last adapt step ψ_t, the optimizer."""

    x: Any  # f32[N, d] models X_t
    psi: Any  # f32[N, d] ψ_t
    opt: Any


def _check_symmetric(topology, name: str):
    if topology is None:
        return
    if not topology.is_symmetric:
        raise ValueError(
            f"{name} needs a symmetric mixing matrix (it diverges on non-symmetric ones, e.g. a "
            f"directed ring); {topology.name!r} is not symmetric: use diging or dsgd"
        )


def _diffusion(optimizer, lazy: bool, name: str, validate) -> Algorithm:
    def init(x0, ctx):
        del ctx
        return DiffusionState(x0, x0, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        loss, g = oracle(a.x, ctx)
        # A straggler skips the adapt step (psi = X, optimizer state kept); correct and combine run.
        step, opt = ctx.skip_step(*optimizer.update(g, a.opt, a.x, ctx), a.opt)
        psi = optax.apply_updates(a.x, step)
        phi = psi + (a.x - a.psi)  # the small correction first: (ψ + X) − ψ_prev would cancel
        mixed = channels["model"](phi, ctx)
        x = 0.5 * (phi + mixed) if lazy else mixed
        return DiffusionState(x, psi, opt), {"train_loss": masked_mean(loss, ctx.honest)}

    exchanges = {"model": Exchange(robust=True, doc="the corrected iterates φ")}
    return Algorithm(init, update, lambda a: a.x, exchanges, name, optimizer.hypers, validate)


def exact_diffusion(optimizer) -> Algorithm:
    """Exact diffusion (Yuan et al. 2019, Alg. 1) with W̄ = (I + W)/2 and any optax optimizer."""
    return _diffusion(optimizer, True, "exact_diffusion", lambda topo: _check_symmetric(topo, "exact_diffusion"))


def d2(optimizer) -> Algorithm:
    """D² (Tang et al. 2018, Alg. 1): exact diffusion's recursion with W itself (λ_min(W) > −1/3)."""

    def validate(topo):
        _check_symmetric(topo, "d2")
        if topo is not None and topo.n <= 4096:
            lam = min(float(np.linalg.eigvalsh(topo.mixing_matrix(round=t)).min()) for t in range(topo.period))
            if lam <= -1.0 / 3.0:
                raise ValueError(
                    f"d2 needs λ_min(W) > -1/3 (Tang et al. 2018), {topo.name!r} has {lam:.4f}: use "
                    "exact_diffusion, whose (I + W)/2 always qualifies"
                )

    return _diffusion(optimizer, False, "d2", validate)
