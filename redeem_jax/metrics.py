"""The network-level statistics every module shares: one masked mean, one consensus distance."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["masked_mean", "consensus_distance"]


def masked_mean(v: jax.Array, mask: jax.Array | None = None, axis: int = 0) -> jax.Array:
    """Mean of ``v`` over the node axis ``axis`` restricted to ``mask`` (all nodes when None).

    The honest mean x̄_H of robust-learning analyses (e.g. Farhadkhani et al. 2022) with
    ``mask`` the honest set; an empty mask gives 0, not NaN.
    """
    v = jnp.asarray(v)
    axis = axis % v.ndim
    if mask is None:
        return jnp.mean(v, axis=axis)
    shape = [1] * v.ndim
    shape[axis] = v.shape[axis]
    m = jnp.asarray(mask).astype(v.dtype).reshape(shape)
    return jnp.sum(v * m, axis=axis) / jnp.maximum(jnp.sum(jnp.asarray(mask)), 1).astype(v.dtype)


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
