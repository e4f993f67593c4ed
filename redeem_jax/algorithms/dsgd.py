"""Decentralized SGD and FedAvg (local steps, then one exchange of the models).

* Adapt-then-combine (ATC): x⁺ = W·(x − η∇F(x)) (Lian et al. 2017; D-PSGD as in Koloskova et al.
  2020, Alg. 1 with the gossip after the update).
* Combine-then-adapt (CTA): x⁺ = W·x − η∇F(x) (Nedić & Ozdaglar 2009; Lian et al. 2017).

With ``local_steps = H`` both become local SGD with periodic gossip (Koloskova et al. 2020);
FedAvg (McMahan et al. 2017) is ATC whose exchange goes through a server (exact averaging,
equal to gossip on the complete graph with uniform weights). Choco-SGD (Koloskova, Stich &
Jaggi 2019) and DeepSqueeze (Tang et al. 2019) are ATC D-SGD whose model exchange is
compressed: they declare it, and the exchange's channel does the compression.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from redeem_jax.core import Algorithm, Exchange
from redeem_jax.metrics import masked_mean

__all__ = ["DSGDState", "dsgd", "fedavg", "choco_sgd", "deepsqueeze"]


class DSGDState(NamedTuple):
    """D-SGD's and FedAvg's state: every node's model and its optimizer state."""

    x: Any  # f32[N, d]: every node's model
    opt: Any  # the optimizer state, vmapped over nodes


def _local(optimizer, x, opt, oracle, ctx, local_steps: int):
    """``local_steps`` optimizer steps of every node on its own minibatches (a ``lax.scan``)."""

    def step(carry, h):
        x, opt = carry
        loss, g = oracle(x, ctx.at_step(h))
        updates, opt = optimizer.update(g, opt, x, ctx)
        return (optax.apply_updates(x, updates), opt), loss

    (x, opt), losses = oracle.scan(step, (x, opt), jnp.arange(local_steps))
    return x, opt, losses[-1]


def dsgd(
    optimizer,
    order: str = "atc",
    local_steps: int = 1,
    *,
    over: str = "graph",
    compression: str | None = None,
    name: str = "dsgd",
) -> Algorithm:
    """D-SGD in ATC or CTA order with ``local_steps`` local optimizer steps per round
    (``optimizer`` an ``rj.local.optim.LocalOptimizer``: SGD, momentum, Adam, ...)."""
    if order not in ("atc", "cta"):
        raise ValueError(f"algorithm.order: {order!r} is not one of atc, cta")
    if local_steps < 1:
        raise ValueError(f"algorithm.local_steps: must be >= 1, got {local_steps}")

    def init(x0, ctx):
        del ctx
        return DSGDState(x0, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        x_local, opt, loss = _local(optimizer, a.x, a.opt, oracle, ctx, local_steps)
        # A straggler (ctx.active False) skips its local steps but still gossips its model.
        x_local, opt = ctx.where_active((x_local, opt), (a.x, a.opt))
        if order == "atc":
            x = channels["model"](x_local, ctx)
        else:
            x = channels["model"](a.x, ctx) + (x_local - a.x)
        return DSGDState(x, opt), {"train_loss": masked_mean(loss, ctx.honest)}

    exchanges = {
        "model": Exchange(
            robust=True,
            compression=compression,
            over=over,
            doc="the models, after (ATC) or before (CTA) the local steps",
        )
    }
    return Algorithm(init, update, lambda a: a.x, exchanges, name, optimizer.hypers)


def fedavg(optimizer, local_steps: int = 1) -> Algorithm:
    """FedAvg (McMahan et al. 2017): local steps, then the server's average of the models."""
    return dsgd(optimizer, "atc", local_steps, over="server", name="fedavg")


def choco_sgd(optimizer, local_steps: int = 1) -> Algorithm:
    """Choco-SGD (Koloskova, Stich & Jaggi 2019, Alg. 2): ATC D-SGD whose gossip goes through
    Choco-Gossip's public copies with compressed differences (``config.compression``)."""
    return dsgd(optimizer, "atc", local_steps, compression="choco", name="choco_sgd")


def deepsqueeze(optimizer, local_steps: int = 1) -> Algorithm:
    """DeepSqueeze (Tang et al. 2019, Alg. 1): ATC D-SGD whose gossip sends compressed models
    with error feedback (``config.compression``)."""
    return dsgd(optimizer, "atc", local_steps, compression="error_feedback", name="deepsqueeze")
