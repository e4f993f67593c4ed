"""APFL (Deng, Kamani & Mahdavi 2020, "Adaptive personalized federated learning", Alg. 1):
a learned per-node mixture of a local model and the shared one.

Every node i keeps the shared row wᵢ (trained and exchanged exactly as ATC D-SGD, so any
channel applies), a local row vᵢ that never leaves the node and a mixing weight αᵢ ∈ [0, 1].
Its personalized model is v̄ᵢ = αᵢvᵢ + (1 − αᵢ)wᵢ. Each local step h does, from the same
iterates (their Alg. 1 and the α-gradient of their Sec. 3):

    wᵢ ← wᵢ − η∇fᵢ(wᵢ),
    vᵢ ← vᵢ − η∇_v fᵢ(v̄ᵢ) = vᵢ − ηαᵢ∇fᵢ(v̄ᵢ),
    αᵢ ← Π_[0,1](αᵢ − η_α ∇_α fᵢ(v̄ᵢ)),   ∇_α fᵢ(v̄ᵢ) = ⟨vᵢ − wᵢ, ∇fᵢ(v̄ᵢ)⟩,

then the shared rows go through the channel. With ``alpha_lr = 0`` α stays at ``alpha``:
α = 0 is the shared-model algorithm and α = 1 local training, exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from redeem_jax.core import Algorithm, Exchange, Hyper
from redeem_jax.metrics import masked_mean

__all__ = ["APFLState", "apfl"]


class APFLState(NamedTuple):
    """APFL's state: shared and local models, mixing weights and an optimizer state for each model."""

    w: Any  # f32[N, d]: every node's copy of the shared model
    v: Any  # f32[N, d]: every node's local model (never exchanged)
    alpha: Any  # f32[N]: every node's mixing weight
    opt: Any  # optimizer state of w, vmapped over nodes
    opt_v: Any  # optimizer state of v, vmapped over nodes


def _mix(alpha, v, w):
    return alpha[:, None] * v + (1.0 - alpha[:, None]) * w


def apfl(
    optimizer,
    alpha: float | Hyper = 0.5,
    alpha_lr: float | Hyper = 0.1,
    local_steps: int = 1,
    *,
    over: str = "graph",
    name: str = "apfl",
) -> Algorithm:
    """APFL (Deng et al. 2020, Alg. 1; ∇α as in their Sec. 3): ATC D-SGD on the shared model,
    ``optimizer`` steps on the local model through the mixture, projected SGD with step
    ``alpha_lr`` on the mixing weight (initially ``alpha``). ``models`` are the mixtures."""
    if local_steps < 1:
        raise ValueError(f"algorithm.local_steps: must be >= 1, got {local_steps}")
    if over not in ("graph", "server"):
        raise ValueError(f"algorithm.over: {over!r} is not one of graph, server")
    if not isinstance(alpha, Hyper) and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"algorithm.alpha: must be in [0, 1], got {alpha}")

    def init(x0, ctx):
        a0 = jnp.clip(jnp.asarray(ctx.value(alpha), x0.dtype), 0.0, 1.0)
        return APFLState(x0, x0, jnp.full(x0.shape[:1], a0), optimizer.init(x0), optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        eta_a = ctx.value(alpha_lr)

        def step(carry, h):
            w, v, al, opt, opt_v = carry
            loss, g = oracle(w, ctx.at_step(h))
            upd, opt_n = optimizer.update(g, opt, w, ctx)
            # The mixture's gradient at the start of the step, with its own minibatch.
            loss_p, gp = oracle(_mix(al, v, w), ctx.at_step(local_steps + h))
            upd_v, opt_vn = optimizer.update(al[:, None] * gp, opt_v, v, ctx)
            al_n = jnp.clip(al - eta_a * jnp.sum((v - w) * gp, axis=1), 0.0, 1.0)
            w_n, v_n = optax.apply_updates(w, upd), optax.apply_updates(v, upd_v)
            return (w_n, v_n, al_n, opt_n, opt_vn), (loss, loss_p)

        carry0 = (a.w, a.v, a.alpha, a.opt, a.opt_v)
        carry, (losses, losses_p) = oracle.scan(step, carry0, jnp.arange(local_steps))
        # A straggler skips its local steps and still gossips its shared model.
        w, v, al, opt, opt_v = ctx.where_active(carry, carry0)
        w = channels["model"](w, ctx)
        metrics = {
            "train_loss": masked_mean(losses[-1], ctx.honest),
            "personal_loss": masked_mean(losses_p[-1], ctx.honest),
            "alpha": masked_mean(al, ctx.honest),
        }
        return APFLState(w, v, al, opt, opt_v), metrics

    exchanges = {"model": Exchange(robust=True, over=over, doc="the shared models, after the local steps")}
    hyp = tuple(optimizer.hypers) + tuple(h for h in (alpha, alpha_lr) if isinstance(h, Hyper))
    return Algorithm(init, update, lambda a: _mix(a.alpha, a.v, a.w), exchanges, name, hyp)
