"""Central DP in the federated setting: noise added once, to a securely aggregated sum.

DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018, Alg. 1 with full participation): every node
clips its round update Δᵢ to norm C, the server learns only Σᵢ Δᵢ through secure aggregation
(Bonawitz et al. 2017; simulated exactly with uint32 masks in ``secure_agg``), adds
N(0, σ²C²) once and broadcasts x̄ + (ΣΔᵢ + noise)/n. Node-level DP: adding or removing one
node changes the sum by at most C, so each round is a Gaussian mechanism with noise
multiplier σ; the accountant composes ``num_rounds`` of them (sampling rate 1). Against
local DP, where each node noises its own message, the noise std on the average is √n
smaller for the same guarantee.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax.privacy import secure_agg
from redeem_jax.privacy.dp_sgd import clip_by_norm

__all__ = ["central_dp_communication"]


def central_dp_communication(clip_norm: float, noise_multiplier: float, num_nodes: int, secure: bool = True,
                             scale_bits: int = 20):
    """``communicate(x_local, x_prev, round, key)`` for DP-FedAvg with secure aggregation.

    ``secure``: sum through pairwise-masked fixed-point inputs (exact in Z_{2^32}; the
    quantisation error is at most n·2^-(scale_bits+1) per coordinate), else a plain sum.
    """
    if not np.isfinite(clip_norm) or clip_norm <= 0:
        raise ValueError(f"privacy.clip_norm: central DP needs a finite clip norm > 0, got {clip_norm}")
    if secure:
        secure_agg.check_overflow(num_nodes, clip_norm, scale_bits)

    def communicate(x_local, x_prev, round, key):
        del round
        delta = jax.vmap(clip_by_norm, in_axes=(0, None))(x_local - x_prev, clip_norm)
        mask_key, noise_key = jax.random.split(key)
        if secure:
            total = secure_agg.secure_sum(delta, mask_key, None, scale_bits, clip_norm).astype(delta.dtype)
        else:
            total = jnp.sum(delta, axis=0)
        noisy = total + noise_multiplier * clip_norm * jax.random.normal(noise_key, total.shape, total.dtype)
        return jnp.broadcast_to(jnp.mean(x_prev, axis=0) + noisy / x_local.shape[0], x_local.shape)

    return communicate
