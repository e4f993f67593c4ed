"""The network-level statistics every module shares: one masked mean, one consensus distance."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["weighted_rows", "masked_mean", "consensus_distance", "perplexity"]

_HI = jax.lax.Precision.HIGHEST
_UNROLL_MAX_ROWS = 16


def weighted_rows(w: jax.Array, x: jax.Array) -> jax.Array:
    """Σᵢ wᵢ xᵢ over the leading (node) axis of ``x [n, ...]``, as a matrix–vector product.

    A reduction along the node axis of ``[n, d]`` rows is a column reduction, which XLA's default
    CPU fusion runs ~50× slower than the same sum as a GEMV (0.16 s against 3 ms for
    n = 256, d = 1e5; benchmarks/round_throughput.py): every node-axis sum of the library goes
    through here. Rows with weight 0 still contribute 0·xᵢ (NaN for a non-finite row): callers
    that may hold non-finite rows mask them first.
    """
    x = jnp.asarray(x)
    w = jnp.asarray(w).astype(jnp.promote_types(x.dtype, jnp.float32))
    out_dtype = jnp.result_type(x.dtype, w.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else w.dtype
    if 0 < x.shape[0] <= _UNROLL_MAX_ROWS:
        # Few rows (a neighbourhood, vmapped over nodes): one fused elementwise pass; a GEMV
        # batched by vmap is a slow loop of tiny dots on CPU.
        out = w[0] * x[0].astype(w.dtype)
        for i in range(1, x.shape[0]):
            out = out + w[i] * x[i].astype(w.dtype)
        return out.astype(out_dtype)
    flat = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    out = jnp.matmul(w, flat.astype(w.dtype), precision=_HI)
    return out.reshape(x.shape[1:]).astype(out_dtype)


def masked_mean(v: jax.Array, mask: jax.Array | None = None, axis: int = 0) -> jax.Array:
    """Mean of ``v`` over the node axis ``axis`` restricted to ``mask`` (all nodes when None).

    The honest mean x̄_H of robust-learning analyses (e.g. Farhadkhani et al. 2022) with
    ``mask`` the honest set; an empty mask gives 0, not NaN. Over the leading axis of rows
    this is a GEMV (:func:`weighted_rows`).
    """
    v = jnp.asarray(v)
    axis = axis % v.ndim
    n = v.shape[axis]
    dt = jnp.promote_types(v.dtype, jnp.float32)  # float64 rows keep float64 weights (exact 1/n)
    if mask is None:
        w = jnp.full((n,), 1.0, dt) / max(n, 1)
    else:
        m = jnp.asarray(mask).astype(dt)
        w = m / jnp.maximum(jnp.sum(m), 1.0)
    if axis == 0 and v.ndim >= 2:
        return weighted_rows(w, v)
    shape = [1] * v.ndim
    shape[axis] = n
    return jnp.sum(v * w.astype(v.dtype).reshape(shape), axis=axis)


def consensus_distance(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Ξ = (1/|H|) Σ_{i∈H} ‖x_i − x̄_H‖² over the node axis (axis −2 of ``x [..., n, d]``; a 1-D
    ``x [n]`` is one coordinate per node), H the nodes in ``mask`` (all when None).

    The disagreement of Koloskova et al. (2020), which one gossip step contracts by ρ²:
    ``‖XW − X̄‖²_F ≤ (1 − p)‖X − X̄‖²_F``. Leading axes of ``x`` are batch axes.
    """
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    xbar = masked_mean(x, mask, axis=-2)
    sq = jnp.sum(jnp.square(x - jnp.expand_dims(xbar, -2)), axis=-1)
    return masked_mean(sq, mask, axis=-1)


def perplexity(
    model, flat: jax.Array, tokens: jax.Array, targets: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Perplexity of a language model on held-out text: ``exp`` of the mean per-token
    cross-entropy (nats), ``exp(−(1/T) Σ_t log p(y_t | x_≤t))`` (Jelinek et al. 1977), over the
    ``[B, L]`` windows ``tokens`` → ``targets`` (``mask [B]`` drops padded windows).

    One parameter row ``flat`` of ``model`` (an ``rj.models.Model`` with task "language"): the
    runner logs it for the honest-average model (``test_perplexity``) and per node."""
    from redeem_jax.models import loss_and_metrics

    if model.task != "language":
        raise ValueError(f"perplexity: model {model.name!r} is not a language model (task {model.task!r})")
    mask = jnp.ones(tokens.shape[:1], bool) if mask is None else mask
    return jnp.exp(loss_and_metrics(model, flat, tokens, targets, mask)[1]["loss"])
