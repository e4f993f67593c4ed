"""Local-only training: every node trains on its own data and never communicates.

The baseline of personalized learning (e.g. Collins et al. 2021, Table 1 "Local Only";
Marfoq et al. 2021): what a node reaches alone. No exchange is declared, so no bytes are sent
and no attack can reach an honest node's model (only its own data, e.g. label flipping).
"""

from __future__ import annotations

from redeem_jax.algorithms.dsgd import DSGDState, _local
from redeem_jax.core import Algorithm
from redeem_jax.metrics import masked_mean

__all__ = ["local_only"]


def local_only(optimizer, local_steps: int = 1) -> Algorithm:
    """``local_steps`` optimizer steps per round of every node on its own minibatches, and no
    exchange: N independent runs of the local optimizer, one per node."""
    if local_steps < 1:
        raise ValueError(f"algorithm.local_steps: must be >= 1, got {local_steps}")

    def init(x0, ctx):
        del ctx
        return DSGDState(x0, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        del channels
        x, opt, loss = _local(optimizer, a.x, a.opt, oracle, ctx, local_steps)
        x, opt = ctx.where_active((x, opt), (a.x, a.opt))
        return DSGDState(x, opt), {"train_loss": masked_mean(loss, ctx.honest)}

    return Algorithm(init, update, lambda a: a.x, {}, "local_only", optimizer.hypers)
