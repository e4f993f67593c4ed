"""Push-sum averaging and the optimizers built on it, for directed graphs (column-stochastic A).

With a column-stochastic A (``rj.network.directed``: A[j, i] = 1/(outdeg_i + 1)) the gossip
step ``x ← A x`` preserves the network sum but not the average of a node's value, so every
node also carries a weight w (w₀ = 1) mixed by the same A. Since ``A^t → π1ᵀ``,
``x_t → π Σᵢ xᵢ`` and ``w_t → n π``: the de-biased ``z = x / w`` reaches the average at every
node (Kempe, Dobra & Gehrke 2003), at the rate of A's second-largest eigenvalue modulus.

* :func:`push_sum` — averaging only: ``X ← AX``, ``w ← Aw``; models ``Z = X / w``.
* :func:`sgp` — Stochastic Gradient Push (Assran et al. 2019, Alg. 1):
  ``X ← A(X − α ∇F(Z))``, ``w ← Aw``; a constant step keeps an O(α) bias.
* :func:`push_diging` — Push-DIGing (Nedić, Olshevsky & Shi 2017, Alg. 2): gradient tracking
  with push-sum weights, exact on directed (and time-varying) graphs:
  ``U ← A(U − αY)``, ``v ← Av``, ``X = U / v``, ``Y ← AY + ∇F(X_new) − ∇F(X_old)``.

One exchange per round: everything a node pushes is stacked into one array and mixed by one
call of the ``"push"`` channel — ``[x | w]`` (d + 1 floats per edge) for push-sum and SGP,
``[u − αy | y | v]`` (2d + 1 floats per edge) for push-DIGing — so a round sends one message
per live edge, never two. The exchange is declared non-robust (:class:`~redeem_jax.core.Exchange`
``robust=False``): its sums (Σx, Σw, and push-DIGing's Σy = Σ∇F) are invariants that a robust
rule or an attack on the weights would break (DESIGN: push-sum weights are never tampered
with), so it must be plain gossip with the column-stochastic A. With another optimizer the step
−α∇F becomes its update (momentum, Adam) of the same gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import optax

from redeem_jax.core import Algorithm, Exchange
from redeem_jax.metrics import masked_mean

__all__ = ["PushSumState", "PushDIGingState", "push_sum", "sgp", "push_diging", "check_column_stochastic"]


class PushSumState(NamedTuple):
    """Push-sum's (and SGP's) state: numerators x, weights w; the de-biased models are x / w."""

    x: Any  # f32[N, d] push-sum numerators
    w: Any  # f32[N] push-sum weights (w₀ = 1)
    opt: Any  # optimizer state, vmapped over nodes (() for plain averaging)


class PushDIGingState(NamedTuple):
    """Push-DIGing's state: model numerators u, push-sum weights v, the mixed trackers y."""

    u: Any  # f32[N, d] numerators of the models
    v: Any  # f32[N] push-sum weights
    y: Any  # f32[N, d] A·Y of the last round (the mixed trackers, before this round's gradient)
    g: Any  # f32[N, d] each node's last gradient ∇F(X_{t-1})
    opt: Any  # optimizer state, vmapped over nodes


_PUSH_DOC = (
    "what every node pushes, stacked into one [N, ·] array (one message per edge): "
    "its sums are invariants, so plain gossip with a column-stochastic A, never a robust rule"
)


def check_column_stochastic(topology) -> None:
    """Raise ValueError unless every mixing matrix of a static/periodic topology is column
    stochastic (push-sum's requirement, Kempe et al. 2003). Drawn topologies are not checked."""
    if getattr(topology, "is_drawn", False) or not hasattr(topology, "sparse_mixing_matrix"):
        return
    for t in range(topology.period):
        cols = np.asarray(topology.sparse_mixing_matrix(t).sum(axis=0)).reshape(-1)
        if np.any(np.abs(cols - 1.0) > 1e-6):
            bad = int(np.argmax(np.abs(cols - 1.0)))
            raise ValueError(
                f"push-sum needs column-stochastic weights; {topology.name} round {t} column {bad} "
                f"sums to {cols[bad]:.6g} (use rj.network.directed)"
            )


def _push(channels, ctx, *parts):
    """Mix ``parts`` (each [N, k] or [N]) with one exchange; split them back."""
    cols = [p[:, None] if p.ndim == 1 else p for p in parts]
    widths = [c.shape[1] for c in cols]
    mixed = channels["push"](jnp.concatenate(cols, axis=1), ctx)
    out, at = [], 0
    for p, k in zip(parts, widths):
        out.append(mixed[:, at] if p.ndim == 1 else mixed[:, at : at + k])
        at += k
    return out


def _debias(x, w):
    return x / w[:, None]


def push_sum(optimizer=None) -> Algorithm:
    """Push-sum averaging (Kempe, Dobra & Gehrke 2003, Protocol Push-Sum; Nedić & Olshevsky
    2015, Eq. 2 without gradients): ``x ← Ax``, ``w ← Aw`` (w₀ = 1), models ``x / w``.
    ``optimizer`` is ignored (no step is taken; the registry's factories all take one). The
    round reports the training loss of the de-biased models (one oracle call, its gradient
    unused), so a run from a config logs the same columns as every other algorithm."""
    del optimizer

    def init(x0, ctx):
        del ctx
        return PushSumState(x0, jnp.ones(x0.shape[:1], x0.dtype), ())

    def update(a, oracle, channels, ctx):
        loss, _ = oracle(_debias(a.x, a.w), ctx)
        x, w = _push(channels, ctx, a.x, a.w)
        return PushSumState(x, w, ()), {"train_loss": masked_mean(loss, ctx.honest)}

    return Algorithm(
        init,
        update,
        lambda a: _debias(a.x, a.w),
        {"push": Exchange(robust=False, doc=_PUSH_DOC)},
        "push_sum",
        (),
        check_column_stochastic,
    )


def sgp(optimizer) -> Algorithm:
    """Stochastic Gradient Push (Assran, Loizou, Ballas & Rabbat 2019, Alg. 1): a local step on
    the numerator with the gradient at the de-biased model, ``x ← x − α∇F(x/w)``, then push-sum
    mixing of (x, w). With a constant step the fixed point is off the optimum by O(α)."""

    def init(x0, ctx):
        del ctx
        return PushSumState(x0, jnp.ones(x0.shape[:1], x0.dtype), optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        z = _debias(a.x, a.w)
        loss, g = oracle(z, ctx)
        step, opt = ctx.skip_step(*optimizer.update(g, a.opt, z, ctx), a.opt)  # a straggler only pushes
        x, w = _push(channels, ctx, optax.apply_updates(a.x, step), a.w)
        return PushSumState(x, w, opt), {"train_loss": masked_mean(loss, ctx.honest)}

    return Algorithm(
        init,
        update,
        lambda a: _debias(a.x, a.w),
        {"push": Exchange(robust=False, doc=_PUSH_DOC)},
        "sgp",
        optimizer.hypers,
        check_column_stochastic,
    )


def push_diging(optimizer) -> Algorithm:
    """Push-DIGing (Nedić, Olshevsky & Shi 2017, Alg. 2): ``u_{t+1} = A(u_t − α y_t)``,
    ``v_{t+1} = A v_t``, ``x_{t+1} = u_{t+1}/v_{t+1}``, ``y_{t+1} = A y_t + ∇F(x_{t+1}) − ∇F(x_t)``,
    y₀ = ∇F(x₀), v₀ = 1. Column-stochastic A keeps Σy = Σ∇F every round, so it is exact."""

    def init(x0, ctx):
        del ctx
        zeros = jnp.zeros_like(x0)
        # y = g = 0 before round 0 makes round 0's tracker ∇F(x₀), the paper's y₀.
        return PushDIGingState(x0, jnp.ones(x0.shape[:1], x0.dtype), zeros, zeros, optimizer.init(x0))

    def update(a, oracle, channels, ctx):
        x = _debias(a.u, a.v)
        loss, g = oracle(x, ctx)
        g = ctx.where_active(g, a.g)  # a straggler keeps its last gradient: Σy = Σg still holds
        y = a.y + (g - a.g)
        step, opt = ctx.skip_step(*optimizer.update(y, a.opt, x, ctx), a.opt)
        u, y_mixed, v = _push(channels, ctx, optax.apply_updates(a.u, step), y, a.v)
        return PushDIGingState(u, v, y_mixed, g, opt), {"train_loss": masked_mean(loss, ctx.honest)}

    return Algorithm(
        init,
        update,
        lambda a: _debias(a.u, a.v),
        {"push": Exchange(robust=False, doc=_PUSH_DOC)},
        "push_diging",
        optimizer.hypers,
        check_column_stochastic,
    )
