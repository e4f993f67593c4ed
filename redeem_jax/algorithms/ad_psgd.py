"""AD-PSGD as a vectorized round (Lian, Zhang, Zhang & Liu 2018, "Asynchronous decentralized
parallel stochastic gradient descent", ICML, Alg. 1).

In the paper each worker, whenever it is free, (1) computes a stochastic gradient on the model
it read when it started (stale by the updates that landed meanwhile: the delay τ, bounded by
T), (2) averages its model with one random neighbour, x_i, x_j ← (x_i + x_j)/2, and (3) applies
the gradient, x_i ← x_i − γ g. The whole network in one synchronous round (FIELD_NOTES: "a
random matching per round plus bounded staleness") is

    X_{t+1} = W_t X_t − γ · diag(a_t) · ∇F(X_{t−τ_t}),

* ``W_t``: a random matching of the graph (matched pairs average, Boyd et al. 2006): the round's
  own edges when the topology is drawn, which must then be a matching (``random_matching``,
  ``pairwise``, also with stragglers: K = 1; wider drawn graphs are refused), else a locally
  dominant random matching of the static graph (``rj.network.random_graphs.random_matching``)
  drawn from the algorithm's key;
* ``a_t``: the awake nodes, each independently with probability ``wake`` (and active under the
  topology's own mask: stragglers, churn); a sleeping node still averages when matched (the
  paper's passive neighbour) but applies no gradient and keeps its optimizer state;
* ``τ_{t,i}``: each node's delay, uniform on {0, …, max_delay} every round (bounded staleness,
  the paper's Assumption 1.5 with T = max_delay), read from a ring buffer of the last
  ``max_delay + 1`` models kept in the state (``[N, max_delay + 1, d]``: node axis first, as
  every per-node array, so sharding splits it). Before round τ the buffer holds X₀, so the
  effective delay is min(τ, t); the ``staleness`` metric is its mean over awake nodes.

With ``max_delay = 0`` and ``wake = 1`` a round is D-SGD in CTA order on the matching, exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from redeem_jax.core import Algorithm, Edges, Exchange, materialize, resolve
from redeem_jax.metrics import masked_mean

__all__ = ["ADPSGDState", "ad_psgd"]


class ADPSGDState(NamedTuple):
    """AD-PSGD's state: the models, the ring buffer of past models and the optimizer state."""

    """AD-PSGD's state: the models, the ring buffer of past models read with delay, the optimizer."""

    x: Any  # f32[N, d] models X_t
    buf: Any  # f32[N, max_delay + 1, d]: X_{t-max_delay} .. X_{t-1} by slot round % (max_delay+1); () when 0
    opt: Any  # optimizer state, vmapped over nodes


_MATCHINGS: dict[int, tuple] = {}  # id(static topology) -> (topology, its RandomMatching): built once per graph


def _matching_of(topology):
    from redeem_jax.network.random_graphs import random_matching

    hit = _MATCHINGS.get(id(topology))
    if hit is None or hit[0] is not topology:
        hit = _MATCHINGS[id(topology)] = (topology, random_matching(topology))
    return hit[1]


def _round_edges(ctx, awake) -> Edges:
    """This round's matching with the awake mask: the drawn edges as they are, or a random
    matching of the static graph from the algorithm's own key."""
    e = ctx.edges
    if e.topology is not None:
        arrays = _matching_of(e.topology).draw(ctx.round, ctx.fold("matching").key)
    else:
        if e.neighbors.shape[1] != 1:
            raise ValueError(_NOT_A_MATCHING)
        arrays = (e.neighbors, e.weights, e.self_weight, e.mask)
    return Edges(*arrays, topology=None, round=ctx.round, active=awake)


_NOT_A_MATCHING = (
    "ad_psgd averages over one random neighbour: on a graph drawn every round it needs a matching "
    "(topology.name = random_matching or pairwise, K = 1); a static graph gets its own random "
    "matching. Failures or stragglers on a static graph (K > 1) are refused: ad_psgd's wake "
    "probability already idles nodes, and random_matching with topology.straggle combines both"
)


def _validate(topology):
    if topology is None:
        return
    if getattr(topology, "is_drawn", False):
        if int(topology.K) != 1:
            raise ValueError(_NOT_A_MATCHING)
        return
    if getattr(topology, "period", 1) != 1:
        raise ValueError(
            f"ad_psgd draws a random matching of a static graph; {topology.name!r} is periodic "
            "(use its static base, or topology.name=random_matching)"
        )
    _matching_of(topology)  # raises ValueError for a directed graph: pairs average both ways


def ad_psgd(optimizer, max_delay: int = 0, wake: float = 1.0) -> Algorithm:
    """AD-PSGD (Lian et al. 2018, Alg. 1) as a synchronous surrogate (module docstring):
    ``X ← W_match X − γ a ⊙ ∇F(X_{t−τ})``, delays τ uniform on {0..max_delay} per node and round,
    nodes awake with probability ``wake`` (a float or a swept ``Hyper``). ``max_delay`` is
    structural (the ring buffer's size); ``optimizer`` applies its update to the stale gradient."""
    max_delay = int(max_delay)
    if max_delay < 0:
        raise ValueError(f"algorithm.max_delay: must be >= 0, got {max_delay}")
    w0 = float(resolve(wake, None))
    if not 0.0 < w0 <= 1.0:
        raise ValueError(f"algorithm.wake: must be in (0, 1], got {w0}")
    slots = max_delay + 1

    def init(x0, ctx):
        del ctx
        buf = jnp.repeat(x0[:, None, :], slots, axis=1) if max_delay else ()
        return ADPSGDState(x0, buf, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        n = a.x.shape[0]
        p_wake = jnp.asarray(ctx.value(wake), jnp.float32)
        awake = jax.random.uniform(ctx.fold("wake").key, (n,)) < p_wake
        if ctx.active is not None:
            awake = awake & ctx.active
        awake = materialize(awake)  # else XLA recomputes its random bits per element of [N, d]
        if max_delay:
            slot = ctx.round % slots
            buf = jax.lax.dynamic_update_slice_in_dim(a.buf, a.x[:, None, :], slot, axis=1)
            tau = materialize(jax.random.randint(ctx.fold("delay").key, (n,), 0, slots))
            stale = buf[jnp.arange(n), (ctx.round - tau) % slots]
            staleness = jnp.minimum(tau, ctx.round).astype(jnp.float32)
        else:
            buf, stale, staleness = (), a.x, jnp.zeros((n,), jnp.float32)
        loss, g = oracle(stale, ctx)
        actx = ctx._replace(edges=_round_edges(ctx, awake))
        step, opt = optimizer.update(g, a.opt, a.x, actx)
        # x_local - x as in D-SGD's CTA round, so max_delay = 0, wake = 1 is that round bit for bit.
        x_local, opt = actx.where_active((optax.apply_updates(a.x, step), opt), (a.x, a.opt))
        x = channels["model"](a.x, actx) + (x_local - a.x)
        live = awake & ctx.honest
        return ADPSGDState(x, buf, opt), {
            "train_loss": masked_mean(loss, ctx.honest),
            "staleness": masked_mean(staleness, live),
            "awake_nodes": jnp.sum(awake).astype(jnp.int32),
        }

    exchanges = {"model": Exchange(robust=True, doc="the models, averaged over the round's random matching")}
    hyp = tuple(optimizer.hypers) + tuple(h for h in (wake,) if not isinstance(h, (int, float)))
    return Algorithm(init, update, lambda a: a.x, exchanges, "ad_psgd", hyp, _validate)
