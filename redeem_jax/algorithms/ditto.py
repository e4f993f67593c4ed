"""Ditto (Li, Hu, Beirami & Smith 2021, "Ditto: fair and robust federated learning through
personalization", Alg. 1): a shared model trained like D-SGD plus a personal model per node.

Every node i keeps the shared row xᵢ (trained and exchanged exactly as D-SGD in ATC order, so
any channel applies: gossip, a server, a robust rule under attack) and a personal row vᵢ that
never leaves the node. Each round vᵢ takes ``local_steps`` optimizer steps on the Ditto
objective (their Eq. 2)

    hᵢ(v) = fᵢ(v) + (λ/2)‖v − xᵢ‖²,    ∇hᵢ(v) = ∇fᵢ(v) + λ(v − xᵢ),

at the shared model xᵢ of the start of the round (Alg. 1 pulls toward the global model wᵗ the
node received). λ = 0 is local training; λ → ∞ pins vᵢ to xᵢ. On fᵢ = ½‖v − bᵢ‖² the personal
fixed point is vᵢ = (bᵢ + λxᵢ*)/(1 + λ) with xᵢ* the shared fixed point (``rj.theory.ditto_mse``
gives its error on Gaussian mean estimation). ``models`` are the personal rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from redeem_jax.algorithms.dsgd import _local
from redeem_jax.core import Algorithm, Exchange, Hyper
from redeem_jax.metrics import masked_mean

__all__ = ["DittoState", "ditto"]


class DittoState(NamedTuple):
    """Ditto's state: the shared models, the personal models and an optimizer state for each."""

    x: Any  # f32[N, d]: every node's copy of the shared model
    v: Any  # f32[N, d]: every node's personal model (never exchanged)
    opt: Any  # optimizer state of the shared model, vmapped over nodes
    opt_v: Any  # optimizer state of the personal model, vmapped over nodes


def ditto(
    optimizer,
    lam: float | Hyper = 1.0,
    local_steps: int = 1,
    *,
    over: str = "graph",
    name: str = "ditto",
) -> Algorithm:
    """Ditto (Li et al. 2021, Alg. 1 and Eq. 2): ATC D-SGD on the shared model and
    ``local_steps`` steps of ``optimizer`` per round on fᵢ(v) + (λ/2)‖v − xᵢ‖² for the personal
    model. ``lam`` (config ``algorithm.lam``) may be a :class:`~redeem_jax.core.Hyper`."""
    if local_steps < 1:
        raise ValueError(f"algorithm.local_steps: must be >= 1, got {local_steps}")
    if over not in ("graph", "server"):
        raise ValueError(f"algorithm.over: {over!r} is not one of graph, server")
    if not isinstance(lam, Hyper) and float(lam) < 0:
        raise ValueError(f"algorithm.lam: must be >= 0, got {lam}")

    def init(x0, ctx):
        del ctx
        return DittoState(x0, x0, optimizer.init(x0), optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        lam_t = ctx.value(lam)
        x_local, opt, loss = _local(optimizer, a.x, a.opt, oracle, ctx, local_steps)

        def personal(carry, h):
            v, opt_v = carry
            # Steps after the shared ones (indices local_steps + h) draw their own minibatches.
            loss_v, g = oracle(v, ctx.at_step(local_steps + h))
            updates, opt_v = optimizer.update(g + lam_t * (v - a.x), opt_v, v, ctx)
            return (optax.apply_updates(v, updates), opt_v), loss_v

        (v, opt_v), losses_v = oracle.scan(personal, (a.v, a.opt_v), jnp.arange(local_steps))
        # A straggler skips both models' local steps and still gossips its shared model.
        x_local, opt, v, opt_v = ctx.where_active((x_local, opt, v, opt_v), (a.x, a.opt, a.v, a.opt_v))
        x = channels["model"](x_local, ctx)
        metrics = {"train_loss": masked_mean(loss, ctx.honest), "personal_loss": masked_mean(losses_v[-1], ctx.honest)}
        return DittoState(x, v, opt, opt_v), metrics

    exchanges = {"model": Exchange(robust=True, over=over, doc="the shared models, after the local steps")}
    hyp = tuple(optimizer.hypers) + ((lam,) if isinstance(lam, Hyper) else ())
    return Algorithm(init, update, lambda a: a.v, exchanges, name, hyp)
