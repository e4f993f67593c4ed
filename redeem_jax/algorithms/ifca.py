"""IFCA: the Iterative Federated Clustering Algorithm (Ghosh, Chung, Yin & Ramchandran 2020,
"An efficient framework for clustered federated learning", Alg. 1), on any topology.

Every node keeps a copy of all k cluster models, ``x f32[k, N, d]`` (row ``x[j, i]`` is node i's
copy of model j). One round:

1. *Cluster estimate* (Alg. 1, line 6): every node evaluates the loss of each of its k copies on
   one minibatch (the same minibatch for all k: the oracle's key depends on the round and local
   step only) and picks ĵᵢ = argmin_j fᵢ(x[j, i]).
2. *Local update*: ``local_steps`` optimizer steps on the chosen copy only (the gradient of the
   first step is the one computed with the loss in 1); the other k − 1 copies do not move.
3. *Exchange*, one of the paper's two options, written for a graph with mixing matrix W
   (on the server, i.e. the complete graph with uniform weights, each is the paper's exactly):

   * ``averaging = "gradient"`` (option I, θⱼ⁺ = θⱼ − (η/m) Σᵢ sᵢⱼ gᵢ): plain gossip of all k
     copies, xⱼ⁺ = W x̃ⱼ. A node that did not choose j contributes its unchanged copy, i.e. a
     zero gradient, which is option I's division by the number of machines m; it is D-SGD on
     Σᵢ sᵢⱼ fᵢ for each j and preserves the network sum (conserving gossip, robust rules apply).
     Each model goes through its own exchange ``model_j`` of ``[N, d]`` rows, so any channel
     (the server, robust rules with their state, attacks) sees model-shaped messages.
   * ``averaging = "model"`` (option II, θⱼ⁺ = Σᵢ sᵢⱼ θ̃ᵢ / Σᵢ sᵢⱼ): the masked mean becomes
     one ratio-consensus step (numerator and denominator gossiped together, as in push-sum),
     xᵢⱼ⁺ = [W(sⱼ ⊙ x̃ⱼ)]ᵢ / [W sⱼ]ᵢ wherever [W sⱼ]ᵢ > 0 (some in-neighbour of i, or i itself,
     chose j: the average over the choosers i hears from). Where none did, i has no fresh
     information about j and takes the plain gossip average [W xⱼ]ᵢ of the copies, which keeps
     the copies of an unchosen model in consensus. The numerators, the choices sⱼ and the
     copies travel as one row of k(2d + 1) floats through the exchange ``model``: a row wider
     than the model, so this option runs over the graph only (plain or robust gossip, whose
     state does not depend on the row width); the server's masked mean is option II on the
     complete graph.

``models(state)`` is every node's chosen model ``x[ĵᵢ, i]``. The k models start from the run's
x₀: model 0 at x₀ itself (so k = 1 is D-SGD in ATC order exactly) and model j ≥ 1 at
x₀ + ``init_scale`` · ξⱼ with ξⱼ ~ N(0, I) shared by all nodes (IFCA needs distinct starts:
identical models would never separate). The k losses cost k gradient evaluations per round.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from redeem_jax.core import Algorithm, Exchange, tag
from redeem_jax.metrics import masked_mean

__all__ = ["IFCAState", "ifca", "AVERAGING"]

AVERAGING = ("gradient", "model")


class IFCAState(NamedTuple):
    """IFCA's state: every node's copies of the k models, their optimizer states, the choices."""

    x: Any  # f32[k, N, d]: x[j, i] is node i's copy of cluster model j
    opt: Any  # the optimizer state of every copy, leaves [k, N, ...]
    choice: Any  # i32[N]: the cluster each node picked last round (0 before the first round)


def _rows(tree, choice):
    """Each node's leaf row of its chosen cluster: ``leaf[choice[i], i]`` for every leaf [k, N, ...]."""
    rows = jnp.arange(choice.shape[0])
    return jax.tree.map(lambda a: a[choice, rows], tree)


def _scatter(tree, new, onehot):
    """``tree`` with row i of cluster ``choice[i]`` replaced by ``new``'s row i (``onehot`` [k, N])."""

    def put(a, b):
        return jnp.where(onehot.reshape(onehot.shape + (1,) * (a.ndim - 2)), b[None], a)

    return jax.tree.map(put, tree, new)


def ifca(
    optimizer,
    clusters: int = 2,
    local_steps: int = 1,
    averaging: str = "gradient",
    init_scale: float = 0.1,
    over: str = "graph",
) -> Algorithm:
    """IFCA (Ghosh et al. 2020, Alg. 1) with ``clusters`` = k models, ``local_steps`` optimizer
    steps on the chosen one, and the exchange of option I (``"gradient"``) or II (``"model"``)
    written as gossip (module docstring); ``init_scale`` spreads the k starting models; ``over``:
    "graph" (gossip over the topology) or "server" (the paper's federated setting)."""
    k = int(clusters)
    if k < 1:
        raise ValueError(f"algorithm.clusters: must be >= 1, got {clusters}")
    if local_steps < 1:
        raise ValueError(f"algorithm.local_steps: must be >= 1, got {local_steps}")
    if over not in ("graph", "server"):
        raise ValueError(f"algorithm.over: {over!r} is not one of graph, server")
    if averaging not in AVERAGING:
        raise ValueError(f"algorithm.averaging: {averaging!r} is not one of {', '.join(AVERAGING)}")
    if averaging == "model" and over != "graph":
        raise ValueError(
            "algorithm.averaging: 'model' (option II) sends rows wider than the model and runs over the graph only; "
            "on the server use the complete topology or averaging = 'gradient'"
        )
    hypers = tuple(optimizer.hypers) + tuple(h for h in (init_scale,) if not isinstance(h, (int, float)))

    def init(x0, ctx):
        x0 = jnp.asarray(x0)
        key = jax.random.fold_in(ctx.key, tag("ifca"))
        # ξ_j is one [d] draw per model, broadcast to every node: the k models are shared.
        xi = jax.random.normal(key, (k, 1) + x0.shape[1:], x0.dtype).at[0].set(0.0)
        x = x0[None] + jnp.asarray(ctx.value(init_scale), x0.dtype) * xi
        opt = jax.tree.map(lambda a: jnp.stack([a] * k), optimizer.init(x0))
        return IFCAState(x, opt, jnp.zeros((x0.shape[0],), jnp.int32))

    def update(a, oracle, channels, ctx):
        n = a.choice.shape[0]
        c0 = ctx.at_step(0)
        # 1. the k losses on one minibatch (k is small and static: a loop over models, not nodes)
        evals = [oracle(a.x[j], c0) for j in range(k)]
        losses = jnp.stack([e[0] for e in evals])  # [k, N]
        grads = jnp.stack([e[1] for e in evals])  # [k, N, d]
        choice = jnp.argmin(losses, axis=0).astype(jnp.int32)
        # A straggler takes no local step, so it also keeps its previous estimate.
        choice = ctx.where_active(choice, a.choice)
        x_c, opt_c, g_c, loss = _rows((a.x, a.opt, grads, losses), choice)
        x_old, opt_old = x_c, opt_c
        # 2. local steps on the chosen copy; the first reuses the gradient of step 1.
        updates, opt_c = optimizer.update(g_c, opt_c, x_c, c0)
        x_c = optax.apply_updates(x_c, updates)
        if local_steps > 1:

            def step(carry, h):
                x, opt = carry
                lo, g = oracle(x, ctx.at_step(h))
                up, opt = optimizer.update(g, opt, x, ctx)
                return (optax.apply_updates(x, up), opt), lo

            (x_c, opt_c), ls = oracle.scan(step, (x_c, opt_c), jnp.arange(1, local_steps))
            loss = ls[-1]
        x_c, opt_c = ctx.where_active((x_c, opt_c), (x_old, opt_old))
        onehot = jnp.arange(k)[:, None] == choice[None, :]  # [k, N]: s_ij of the paper
        x_loc = _scatter(a.x, x_c, onehot)
        opt = _scatter(a.opt, opt_c, onehot)
        # 3. the exchange
        d = x_loc.shape[2]
        if averaging == "gradient":  # option I: every model through its own model-shaped exchange
            x = jnp.stack([channels[f"model_{j}"](x_loc[j], ctx) for j in range(k)])
        else:  # option II: one ratio-consensus row [s⊙x̃ | s | x] per node
            rows = jnp.moveaxis(x_loc, 0, 1).reshape(n, k * d)
            s = jnp.moveaxis(onehot, 0, 1).astype(x_loc.dtype)  # [N, k]
            num = (jnp.moveaxis(x_loc, 0, 1) * s[..., None]).reshape(n, k * d)
            y = channels["model"](jnp.concatenate([num, s, rows], axis=1), ctx)
            w_num = y[:, : k * d].reshape(n, k, d)
            w_den = y[:, k * d : k * d + k]
            plain = y[:, k * d + k :].reshape(n, k, d)
            heard = w_den > 0
            ratio = w_num / jnp.where(heard, w_den, 1.0)[..., None]
            x = jnp.moveaxis(jnp.where(heard[..., None], ratio, plain), 1, 0)
        h = ctx.honest
        used = jnp.sum(jnp.any(onehot & h[None, :], axis=1)).astype(jnp.int32)
        return IFCAState(x, opt, choice), {"train_loss": masked_mean(loss, h), "clusters_used": used}

    if averaging == "gradient":
        exchanges = {
            f"model_{j}": Exchange(robust=True, over=over, doc=f"every node's copy of cluster model {j}")
            for j in range(k)
        }
    else:
        exchanges = {
            "model": Exchange(
                robust=True, doc="[s⊙x̃ | s | x]: the choosers' models, the choices and all k copies, one row per node"
            )
        }
    return Algorithm(init, update, lambda a: _rows(a.x, a.choice), exchanges, "ifca", hypers)
