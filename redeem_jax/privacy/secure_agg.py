"""Secure aggregation (Bonawitz et al. 2017), simulated inside one XLA program.

"Practical Secure Aggregation for Privacy-Preserving Machine Learning"
(Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal & Seth,
CCS 2017), §3 / Fig. 4.  Every node u holds a vector x_u.  The server must learn
Σ_u x_u over the nodes that survive the round and nothing else.  Each node

1. *quantizes* x_u to fixed point in Z_{2^32}: ``x̄_u = round(clip(x_u) · 2^k)``
   (two's complement, so negative values work and sums wrap correctly);
2. adds *pairwise masks* that cancel in the sum (§3.1, "masking with one-time
   pads"): for every other node v, ``s_{u,v} = PRG(key_{min(u,v), max(u,v)})``
   is added if u < v and subtracted if u > v, all mod 2^32, so
   Σ_u Σ_v ±s_{u,v} = 0 exactly;
3. optionally adds a *self mask* ``PRG(b_u)`` (§3.2 "double masking"), so
   that a node that is late rather than dropped does not reveal x_u when the
   server reconstructs its pairwise masks:

       y_u = x̄_u + PRG(b_u) + Σ_{v>u} PRG(s_{u,v}) − Σ_{v<u} PRG(s_{v,u})  (mod 2^32)

The server sums the y_u it received.  Pairs of surviving nodes cancel; for a
node v that dropped out, the masks s_{u,v} of survivors u no longer cancel, so
the server reconstructs them (and the self masks b_u of survivors) and
subtracts them: the result is exactly Σ_{u present} x̄_u mod 2^32.

**What is simulated.**  In the protocol the pair seeds come from
Diffie–Hellman key agreement and the server recovers a dropped node's seeds
(and survivors' b_u) from t-out-of-n Shamir shares held by the survivors.  Here
every seed is derived from one simulation key: ``key_{u,v} =
fold_in(fold_in(k_pair, min(u,v)), max(u,v))`` and ``b_u = fold_in(k_self, u)``,
and the server's "reconstruction" recomputes them from that key.  This
preserves everything the arithmetic depends on — exact cancellation, exact
recovery after dropouts, a masked vector that is uniform on Z_{2^32}^d to anyone
without the seeds — but it is *not* a cryptographic implementation (no key
agreement, no secret sharing, no threshold t, no authenticated channels) and
``jax.random``'s threefry is a PRG for simulation, not a vetted CSPRNG.

**Overflow.**  The sum of n quantized values lies in [−n·B, n·B] with
B = ⌊clip · 2^k⌋; it decodes uniquely from Z_{2^32} only if n·B < 2^31.
:func:`check_overflow` enforces this before anything runs.

Cost: O(n²·d) PRG work (every node expands n − 1 pair seeds, as in the
protocol), O(n·d) memory — nodes are vmapped, the loop over partners is a
``lax.fori_loop``.

Public API::

    check_overflow(num_nodes, clip, scale_bits)
    quantize(x, scale_bits=16, clip=1.0) -> uint32
    dequantize(q, scale_bits=16) -> float32
    pairwise_masks(key, num_nodes, dim, partners=None) -> uint32[n, d]
    self_masks(key, num_nodes, dim) -> uint32[n, d]
    mask_inputs(x, key, scale_bits=16, clip=1.0, double_mask=True) -> uint32[n, d]
    unmask_sum(masked, present, key, double_mask=True) -> uint32[d]
    secure_sum(x, key, present=None, scale_bits=16, clip=1.0, double_mask=True) -> float32[d]
    secure_mean(...) -> float32[d]
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_SCALE_BITS",
    "check_overflow",
    "quantization_error_bound",
    "quantize",
    "dequantize",
    "pairwise_masks",
    "self_masks",
    "mask_inputs",
    "unmask_sum",
    "secure_sum",
    "secure_mean",
]

DEFAULT_SCALE_BITS = 16
_MODULUS_HALF = 2**31  # sums must stay in the signed half-range of Z_{2^32}


# --------------------------------------------------------------------------
# fixed point
# --------------------------------------------------------------------------
def _bound(clip: float, scale_bits: int) -> int:
    if not isinstance(scale_bits, (int, np.integer)) or isinstance(scale_bits, bool):
        raise TypeError(f"scale_bits must be an int, got {scale_bits!r}")
    if not 0 <= int(scale_bits) <= 30:
        raise ValueError(f"scale_bits must be in [0, 30], got {scale_bits}")
    clip = float(clip)
    if not (clip > 0 and math.isfinite(clip)):
        raise ValueError(f"clip must be finite and > 0, got {clip}")
    return int(math.floor(clip * 2.0 ** int(scale_bits)))


def check_overflow(num_nodes: int, clip: float, scale_bits: int = DEFAULT_SCALE_BITS) -> int:
    """Raise unless n·⌊clip·2^k⌋ < 2^31 (Bonawitz et al. 2017, §3: inputs in Z_R).

    The protocol sums in Z_{2^32}; a sum of n values each in [−B, B] is
    recovered without wrap-around iff n·B < 2^31.  Returns B.
    """
    if int(num_nodes) < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    b = _bound(clip, scale_bits)
    if int(num_nodes) * b >= _MODULUS_HALF:
        max_bits = math.floor(math.log2((_MODULUS_HALF - 1) / (int(num_nodes) * float(clip))))
        raise ValueError(
            f"secure aggregation overflow: num_nodes * clip * 2**scale_bits = "
            f"{num_nodes} * {clip} * 2**{scale_bits} = {int(num_nodes) * b} does "
            f"not fit in 2**31 (the signed half of uint32). Lower scale_bits "
            f"(<= {max_bits}) or clip."
        )
    return b


def quantization_error_bound(num_nodes: int, scale_bits: int = DEFAULT_SCALE_BITS) -> float:
    """Worst-case |dequantized sum − float sum| for unclipped inputs: n·2^−(k+1).

    Round-to-nearest to the grid 2^−k (Bonawitz et al. 2017, §3 fixed point)
    errs by at most half a grid step per value.
    """
    return int(num_nodes) * 2.0 ** (-int(scale_bits) - 1)


def quantize(x: jax.Array, scale_bits: int = DEFAULT_SCALE_BITS, clip: float = 1.0) -> jax.Array:
    """Fixed-point encode floats into Z_{2^32} (Bonawitz et al. 2017, §3).

    ``x̄ = round(clip_{[-clip, clip]}(x) · 2^k)`` as two's-complement uint32.
    NaN is encoded as 0 (a NaN would otherwise make the int cast undefined);
    ±inf saturate to ±clip.
    """
    b = _bound(clip, scale_bits)
    # float32(b) may round above b (b up to 2^31); clamp to a float32 <= b so
    # the int32 cast never sees an out-of-range value.
    b_f32 = np.float32(b)
    if float(b_f32) > b:
        b_f32 = np.nextafter(b_f32, np.float32(0))
    return _quantize(jnp.asarray(x), float(2.0 ** int(scale_bits)), float(b_f32))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _quantize(x, scale, b):
    x = jnp.nan_to_num(x.astype(jnp.float32), nan=0.0)
    q = jnp.clip(jnp.round(x * scale), -b, b).astype(jnp.int32)
    return jax.lax.bitcast_convert_type(q, jnp.uint32)


def dequantize(q: jax.Array, scale_bits: int = DEFAULT_SCALE_BITS, dtype=jnp.float32) -> jax.Array:
    """Decode Z_{2^32} fixed point (a value or a sum) back to floats (Bonawitz §3).

    Reads the uint32 as two's-complement int32 and divides by 2^k; correct for a
    sum of n inputs whenever :func:`check_overflow` passed for n.
    """
    q = jnp.asarray(q)
    if q.dtype != jnp.uint32:
        raise TypeError(f"q must be uint32, got {q.dtype}")
    signed = jax.lax.bitcast_convert_type(q, jnp.int32)
    return signed.astype(dtype) / jnp.asarray(2.0 ** int(scale_bits), dtype)


# --------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------
def _split_roles(key):
    # Pair seeds and self-mask seeds come from independent streams so a
    # reconstructed pair seed says nothing about any b_u.
    k_pair = jax.random.fold_in(key, 0)
    k_self = jax.random.fold_in(key, 1)
    return k_pair, k_self


def _pair_key(k_pair, u, v):
    lo = jnp.minimum(u, v)
    hi = jnp.maximum(u, v)
    # Symmetric in (u, v): both endpoints derive the same seed, like the
    # Diffie–Hellman agreed secret s_{u,v} of the protocol.
    return jax.random.fold_in(jax.random.fold_in(k_pair, lo), hi)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _pairwise_masks(k_pair, num_nodes, dim, partners):
    def row(u):
        def body(v, acc):
            r = jax.random.bits(_pair_key(k_pair, u, v), (dim,), jnp.uint32)
            # u < v adds, u > v subtracts: the two ends of a pair cancel mod 2^32.
            signed = jnp.where(u < v, r, jnp.uint32(0) - r)
            keep = (u != v) & partners[v]
            return acc + jnp.where(keep, signed, jnp.uint32(0))

        return jax.lax.fori_loop(0, num_nodes, body, jnp.zeros((dim,), jnp.uint32))

    return jax.vmap(row)(jnp.arange(num_nodes))


def pairwise_masks(key: jax.Array, num_nodes: int, dim: int, partners: jax.Array | None = None) -> jax.Array:
    """Each node's net pairwise mask (Bonawitz et al. 2017, §3.1, eq. for y_u).

    Row u is ``Σ_{v>u} PRG(s_{u,v}) − Σ_{v<u} PRG(s_{v,u})`` mod 2^32, summed
    over the partners v with ``partners[v]`` (all by default).  With all
    partners the rows sum to exactly 0 mod 2^32.  ``key`` is the round's
    simulation key (the same one given to :func:`mask_inputs`).
    """
    if partners is None:
        partners = jnp.ones((num_nodes,), bool)
    partners = jnp.asarray(partners, bool)
    if partners.shape != (num_nodes,):
        raise ValueError(f"partners must have shape ({num_nodes},), got {partners.shape}")
    k_pair, _ = _split_roles(key)
    return _pairwise_masks(k_pair, int(num_nodes), int(dim), partners)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _self_masks(k_self, num_nodes, dim):
    return jax.vmap(lambda u: jax.random.bits(jax.random.fold_in(k_self, u), (dim,), jnp.uint32))(jnp.arange(num_nodes))


def self_masks(key: jax.Array, num_nodes: int, dim: int) -> jax.Array:
    """Self masks PRG(b_u) of double masking (Bonawitz et al. 2017, §3.2)."""
    _, k_self = _split_roles(key)
    return _self_masks(k_self, int(num_nodes), int(dim))


# --------------------------------------------------------------------------
# protocol
# --------------------------------------------------------------------------
def mask_inputs(
    x: jax.Array, key: jax.Array, scale_bits: int = DEFAULT_SCALE_BITS, clip: float = 1.0, double_mask: bool = True
) -> jax.Array:
    """Masked inputs y_u of every node (Bonawitz et al. 2017, §3.2, Fig. 4 round 2).

    ``x``: ``[n, d]`` floats (quantized here with ``scale_bits`` / ``clip``,
    after :func:`check_overflow` for n nodes) or already-quantized ``uint32``
    (used as is; then the caller is responsible for the overflow bound).
    Returns ``uint32[n, d]``; each row alone is uniform on Z_{2^32}^d.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape [n, d], got {x.shape}")
    n, d = x.shape
    if x.dtype != jnp.uint32:
        check_overflow(n, clip, scale_bits)
        x = quantize(x, scale_bits, clip)
    masked = x + pairwise_masks(key, n, d)
    if double_mask:
        masked = masked + self_masks(key, n, d)
    return masked


def unmask_sum(masked: jax.Array, present: jax.Array | None, key: jax.Array, double_mask: bool = True) -> jax.Array:
    """Server side: exact Σ_{u present} x̄_u mod 2^32 (Bonawitz et al. 2017, §3.2, Fig. 4 round 4).

    Sums the masked inputs of present nodes, then removes what does not cancel:
    survivors' self masks PRG(b_u) and, for every dropped node v, the masks
    ±PRG(s_{u,v}) it shared with survivors u.  In the protocol the server
    rebuilds those seeds from Shamir shares held by the survivors; here they are
    recomputed from ``key`` (see the module docstring).  ``present``: ``bool[n]``
    (None: everyone), may be traced (jit-friendly).
    """
    masked = jnp.asarray(masked)
    if masked.dtype != jnp.uint32 or masked.ndim != 2:
        raise TypeError(f"masked must be uint32[n, d], got {masked.dtype}{list(masked.shape)}")
    n, d = masked.shape
    if present is None:
        present = jnp.ones((n,), bool)
    present = jnp.asarray(present, bool)
    if present.shape != (n,):
        raise ValueError(f"present must have shape ({n},), got {present.shape}")
    zero = jnp.uint32(0)
    total = jnp.sum(jnp.where(present[:, None], masked, zero), axis=0, dtype=jnp.uint32)
    # Pair masks between two survivors already cancelled; only survivor–dropped
    # pairs are left, i.e. survivors' masks restricted to dropped partners.
    residual = pairwise_masks(key, n, d, partners=~present)
    total = total - jnp.sum(jnp.where(present[:, None], residual, zero), axis=0, dtype=jnp.uint32)
    if double_mask:
        total = total - jnp.sum(jnp.where(present[:, None], self_masks(key, n, d), zero), axis=0, dtype=jnp.uint32)
    return total


def secure_sum(
    x: jax.Array,
    key: jax.Array,
    present: jax.Array | None = None,
    scale_bits: int = DEFAULT_SCALE_BITS,
    clip: float = 1.0,
    double_mask: bool = True,
) -> jax.Array:
    """Σ of the present nodes' rows of ``x [n, d]`` through secure aggregation (Bonawitz et al. 2017).

    quantize → mask → (drop) → unmask → dequantize.  Equal to the sum of the
    present nodes' quantized inputs exactly, hence within
    :func:`quantization_error_bound` of their float sum when |x| <= clip.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape [n, d], got {x.shape}")
    check_overflow(x.shape[0], clip, scale_bits)
    masked = mask_inputs(x, key, scale_bits, clip, double_mask)
    return dequantize(unmask_sum(masked, present, key, double_mask), scale_bits)


def secure_mean(
    x: jax.Array,
    key: jax.Array,
    present: jax.Array | None = None,
    scale_bits: int = DEFAULT_SCALE_BITS,
    clip: float = 1.0,
    double_mask: bool = True,
) -> jax.Array:
    """Mean over present nodes via :func:`secure_sum` (Bonawitz et al. 2017).

    The server knows who is present, so dividing by the count leaks nothing new.
    Returns NaN where no node is present.
    """
    x = jnp.asarray(x)
    n = x.shape[0]
    count = n if present is None else jnp.sum(jnp.asarray(present, bool))
    total = secure_sum(x, key, present, scale_bits, clip, double_mask)
    return total / jnp.asarray(count, total.dtype)
