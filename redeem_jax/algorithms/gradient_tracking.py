"""Gradient tracking: DIGing in its CTA and ATC forms (Nedić, Olshevsky & Shi 2017).

Every node keeps a tracker yᵢ of the network's average gradient next to its model:

* CTA (DIGing):  Y_t = W Y_{t−1} + G_t − G_{t−1},   X_{t+1} = W X_t − α Y_t;
* ATC:           Y_t = W(Y_{t−1} + G_t − G_{t−1}),  X_{t+1} = W(X_t − α Y_t),

with G_t = ∇F(X_t) and Y_{−1} = G_{−1} = 0, which is the paper's Y₀ = G₀ in the CTA form
(Y₀ = W G₀ in the ATC form): one gradient per round, at the current models. For a doubly
stochastic W the invariant mean(Y_t) = mean(G_t) holds every round, so at a fixed point every
node has the same model and the average gradient vanishes: no consensus bias, unlike D-SGD.
That invariant needs the tracker's exchange to preserve the network sum, so the tracker is
declared non-robust (plain gossip); robust rules and attacks apply to the model exchange.
With another optimizer the step −αY becomes its update of the tracked gradient (e.g. heavy
ball or Adam on Y).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from redeem_jax.core import Algorithm, Exchange
from redeem_jax.metrics import masked_mean

__all__ = ["TrackingState", "diging"]


class TrackingState(NamedTuple):
    """DIGing's state: the models, the gradient trackers y and the last local gradients."""

    x: Any  # f32[N, d] models
    y: Any  # f32[N, d] trackers of the average gradient
    g: Any  # f32[N, d] each node's last gradient G_{t-1}
    opt: Any  # optimizer state, vmapped over nodes


def diging(optimizer, order: str = "cta") -> Algorithm:
    """DIGing (Nedić, Olshevsky & Shi 2017, Alg. 1; ATC form as in their Sec. 3) with any
    optax optimizer applied to the tracked gradient."""
    if order not in ("atc", "cta"):
        raise ValueError(f"algorithm.order: {order!r} is not one of atc, cta")

    def init(x0, ctx):
        del ctx
        zeros = jnp.zeros_like(x0)
        return TrackingState(x0, zeros, zeros, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        loss, g = oracle(a.x, ctx)
        # A straggler keeps its last gradient (its tracker gets no new G - G_prev, so the sum
        # invariant holds) and takes no model step; it still gossips both.
        g = ctx.where_active(g, a.g)
        if order == "cta":
            y = channels["tracker"](a.y, ctx) + (g - a.g)
            step, opt = ctx.skip_step(*optimizer.update(y, a.opt, a.x, ctx), a.opt)
            x = optax.apply_updates(channels["model"](a.x, ctx), step)
        else:
            y = channels["tracker"](a.y + (g - a.g), ctx)
            step, opt = ctx.skip_step(*optimizer.update(y, a.opt, a.x, ctx), a.opt)
            x = channels["model"](optax.apply_updates(a.x, step), ctx)
        return TrackingState(x, y, g, opt), {"train_loss": masked_mean(loss, ctx.honest)}

    exchanges = {
        "model": Exchange(robust=True, doc="the models"),
        "tracker": Exchange(robust=False, doc="the gradient trackers: their sum must be preserved"),
    }
    return Algorithm(init, update, lambda a: a.x, exchanges, "diging", optimizer.hypers)
