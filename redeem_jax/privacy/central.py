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

from redeem_jax.privacy import secure_agg
from redeem_jax.privacy.dp_sgd import clip_by_norm

__all__ = ["noisy_secure_sum"]


def noisy_secure_sum(delta, key, clip_norm, noise_multiplier, secure: bool = True, scale_bits: int = 20):
    """Σᵢ clip(Δᵢ, C) learnt through secure aggregation, plus N(0, σ²C²) once (McMahan et al.
    2018, DP-FedAvg with full participation). The server stage of ``rj.channels.server(
    central_dp=...)``, which composes it with local steps, rounding and the rest of the round.

    ``secure``: sum through pairwise-masked fixed-point inputs (exact in Z_{2^32}; the
    quantisation error is at most n·2^-(scale_bits+1) per coordinate), else a plain sum.
    ``clip_norm`` and ``noise_multiplier`` may be traced.
    """
    clipped = jax.vmap(clip_by_norm, in_axes=(0, None))(delta, clip_norm)
    mask_key, noise_key = jax.random.split(key)
    if secure:
        total = secure_agg.secure_sum(clipped, mask_key, None, scale_bits, clip_norm).astype(delta.dtype)
    else:
        total = jnp.sum(clipped, axis=0)
    return total + noise_multiplier * clip_norm * jax.random.normal(noise_key, total.shape, total.dtype)
