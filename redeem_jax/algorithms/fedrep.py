"""Shared body, personal head: FedPer and FedRep (personalized federated / decentralized learning).

Every node's flat row splits by a static mask into shared coordinates (the body, a common
representation) and personal ones (the head, its last layer: ``rj.models.head_mask``). Only
the body is exchanged: the experiment layer wraps each of the algorithm's channels in
``rj.channels.shared_coordinates``, ``X ← m⊙E(X[:, m]) + (1−m)⊙X``, so gossip, a server, a
robust rule and its attack, compression and the bytes sent see only the body columns.

* FedPer (Arivazhagan et al. 2019, Alg. 1): ``local_steps`` local steps on all parameters,
  then the exchange of the body.
* FedRep (Collins et al. 2021, Alg. 1): per round, ``head_steps`` local steps on the head with
  the body fixed (the paper's τ_h), then ``local_steps`` steps on the body with the head fixed
  (its τ_b), then the exchange of the body.

With the server exchange (``over = "server"``) these are the papers' algorithms; on a graph the
body is gossiped instead of averaged (any topology). A phase's step moves only its own
coordinates: the gradient of the other block is zeroed before the optimizer and the update
masked after it (weight decay or momentum would otherwise move the fixed block). The oracle is
called once per local step (DP-SGD clips and noises the whole gradient, of which the fixed
block is then discarded: post-processing, the accounting is per oracle call).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import optax

from redeem_jax.core import Algorithm, Exchange
from redeem_jax.metrics import masked_mean

__all__ = ["FedRepState", "fedrep", "fedper"]


class FedRepState(NamedTuple):
    """FedPer's and FedRep's state: every node's whole row (shared body and personal head)."""

    x: Any  # f32[N, d]: every node's model; the head columns never leave the node
    opt: Any  # the optimizer state, vmapped over nodes


def _phase(optimizer, x, opt, oracle, ctx, steps: int, first: int, move):
    """``steps`` optimizer steps (a ``lax.scan``) that move only the coordinates where ``move``
    (``f32[d]`` of 0/1, or None for all); local step numbers ``first, first+1, ...`` key the
    oracle, so the head and body phases draw different minibatches."""

    def step(carry, h):
        x, opt = carry
        loss, g = oracle(x, ctx.at_step(h))
        if move is not None:
            g = g * move
        updates, opt = optimizer.update(g, opt, x, ctx)
        if move is not None:
            updates = updates * move
        return (optax.apply_updates(x, updates), opt), loss

    (x, opt), losses = oracle.scan(step, (x, opt), first + jnp.arange(steps))
    return x, opt, losses[-1]


def fedrep(
    optimizer,
    shared_mask,
    head_steps: int = 1,
    local_steps: int = 1,
    *,
    over: str = "graph",
    name: str = "fedrep",
) -> Algorithm:
    """FedRep (Collins et al. 2021, Alg. 1, lines 5–10): ``head_steps`` steps on the personal
    coordinates (``~shared_mask``) with the body fixed, ``local_steps`` steps on the shared ones
    with the head fixed, then one exchange of the body (``channels["body"]``, which the caller
    restricts to ``shared_mask``). ``head_steps = 0`` with steps on every coordinate is FedPer
    (:func:`fedper`)."""
    return _personal(optimizer, shared_mask, head_steps, local_steps, alternate=True, over=over, name=name)


def fedper(optimizer, shared_mask, local_steps: int = 1, *, over: str = "graph", name: str = "fedper") -> Algorithm:
    """FedPer (Arivazhagan et al. 2019, Alg. 1): ``local_steps`` steps on all coordinates, then
    one exchange of the body only (``channels["body"]``, restricted to ``shared_mask``)."""
    return _personal(optimizer, shared_mask, 0, local_steps, alternate=False, over=over, name=name)


def _personal(optimizer, shared_mask, head_steps, local_steps, *, alternate, over, name) -> Algorithm:
    if head_steps < 0:
        raise ValueError(f"algorithm.head_steps: must be >= 0, got {head_steps}")
    if local_steps < 1:
        raise ValueError(f"algorithm.local_steps: must be >= 1, got {local_steps}")
    if over not in ("graph", "server"):
        raise ValueError(f"algorithm.over: {over!r} is not one of graph, server")
    body = None if shared_mask is None else jnp.asarray(np.asarray(shared_mask, bool), jnp.float32)

    def init(x0, ctx):
        del ctx
        return FedRepState(x0, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        if body is None:
            raise ValueError(f"{name}: build it with the shared (body) mask of the model")
        x, opt = a.x, a.opt
        if alternate:
            if head_steps:
                x, opt, _ = _phase(optimizer, x, opt, oracle, ctx, head_steps, 0, 1.0 - body)
            x, opt, loss = _phase(optimizer, x, opt, oracle, ctx, local_steps, head_steps, body)
        else:
            x, opt, loss = _phase(optimizer, x, opt, oracle, ctx, local_steps, 0, None)
        # A straggler skips its local steps but still sends its body.
        x, opt = ctx.where_active((x, opt), (a.x, a.opt))
        x = channels["body"](x, ctx)
        return FedRepState(x, opt), {"train_loss": masked_mean(loss, ctx.honest)}

    exchanges = {
        "body": Exchange(
            robust=True, over=over, doc="the shared coordinates (body) only; the personal head stays on the node"
        )
    }
    return Algorithm(init, update, lambda a: a.x, exchanges, name, optimizer.hypers)
