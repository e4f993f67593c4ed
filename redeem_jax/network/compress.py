"""Message compressors for compressed gossip (Choco-SGD, DeepSqueeze).

A :class:`Compressor` maps the rows a node would send, ``x [..., d]``, to the value the receiver
reconstructs, same shape and dtype. Choco-Gossip / Choco-SGD (Koloskova, Stich & Jaggi 2019,
"Decentralized Stochastic Optimization and Gossip Algorithms with Compressed Communication",
Alg. 1 and 2) sends ``Q(x − x̂)`` and DeepSqueeze (Tang et al. 2019) sends ``Q(v)`` with error
feedback; both only need ``compress`` plus the quality ω and the wire cost.

**ω convention** (Koloskova et al. 2019, Assumption 1): ``E‖Q(x) − x‖² ≤ (1 − ω)‖x‖²`` for all x,
ω ∈ (0, 1]; ω = 1 is no compression. ``omega(d)`` is the worst case over x. An unbiased compressor
with variance ``E‖Q(x) − x‖² ≤ c‖x‖²`` satisfies the contract with ω = 1 − c only when c < 1;
for c ≥ 1 ``omega`` raises ValueError (ω would be ≤ 0, and a step size built from it would be
silently wrong). Dividing by τ = 1 + c turns it into a contraction with ω = 1/τ (Koloskova et al.
2019, examples after Assumption 1): that is ``qsgd(scaled=True)``, and for rand-k it gives exactly
``random_k(scaled=False)``.

================================  ======================================  ========================  ========
compressor                        ω (worst case)                          bits per d-vector         unbiased
================================  ======================================  ========================  ========
``identity()``                    1                                       32 d                      yes
``top_k(ratio | k)``              k/d                                     k (32 + ⌈log2 d⌉)         no
``random_k(ratio | k)``           k/d; E‖Q(x)−x‖² = (1−k/d)‖x‖²           32 k + 32 (seed)          no
``random_k(..., scaled=True)``    2 − d/k if k > d/2, else raises         32 k + 32 (seed)          yes
``qsgd(levels=s)``                1/τ, τ = 1 + min(d/s², √d/s)            32 + d (1 + ⌈log2(s+1)⌉)  no
``qsgd(levels=s, scaled=False)``  1 − min(d/s², √d/s) if > 0, else raise  32 + d (1 + ⌈log2(s+1)⌉)  yes
``sign()``                        1/d (at x: ‖x‖₁²/(d‖x‖²))               d + 32                    no
================================  ======================================  ========================  ========

k = max(1, round(ratio · d)) (halves round up), capped at d. Bits assume float32 values and are
fixed-length codes (bytes = bits / 8, :func:`bits_to_bytes`); Elias coding of QSGD is shorter.

**Randomness.** ``compress(x, key)`` takes ONE PRNG key (``jax.random.PRNGKey`` raw uint32[2] or a
typed ``jax.random.key``). A single row ``[d]`` uses ``key`` as is; a batch ``[..., d]`` is
flattened to R rows and row r uses ``jax.random.split(key, R)[r]``, so
``compress(X, key)[i] == compress(X[i], jax.random.split(key, N)[i])`` for ``X [N, d]`` and rows are
independent. Deterministic compressors ignore ``key`` (it may be None). Everything is jittable and
vmappable (``jax.vmap(c.compress)(X, keys)`` with one key per row also works) and never loops in
Python over rows or coordinates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from redeem_jax import _threefry

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = [
    "Compressor",
    "COMPRESSORS",
    "get",
    "identity",
    "top_k",
    "random_k",
    "qsgd",
    "sign",
    "bits_to_bytes",
    "empirical_omega",
]

_VALUE_BITS = 32  # float32 on the wire
_SEED_BITS = 32  # rand-k: the receiver regenerates the indices from a shared seed


class Compressor(NamedTuple):
    """A compression operator Q (Koloskova et al. 2019, Assumption 1).

    ``compress(x [..., d], key) -> [..., d]``: the decompressed value the receiver reconstructs.
    ``omega(d)``: worst-case ω with ``E‖Q(x) − x‖² ≤ (1 − ω)‖x‖²``. ``bits(d)``: wire cost of one
    compressed d-vector. ``unbiased``: ``E[Q(x)] = x``. ``name`` describes the options, e.g.
    ``"top_k(ratio=0.1)"``; the registry key is ``name.split("(")[0]``.
    """

    name: str
    compress: Callable
    omega: Callable
    bits: Callable
    unbiased: bool


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #
def _as_float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim == 0:
        raise ValueError("compress needs x of shape [..., d], got a scalar")
    return x


def _rowwise(row_fn, name, needs_key):
    """Lift ``row_fn(x [d], key) -> [d]`` to ``[..., d]`` with one split key per row."""

    def compress(x, key=None):
        x = _as_float(x)
        if needs_key and key is None:
            raise ValueError(f"{name} is randomized: compress(x, key) needs a PRNG key")
        # bf16/f16 norms and thresholds lose too much; compute in >= float32, hand back x.dtype
        cdt = jnp.promote_types(x.dtype, jnp.float32)
        xc = x.astype(cdt)
        if x.ndim == 1:
            return row_fn(xc, key).astype(x.dtype)
        rows = xc.reshape(-1, x.shape[-1])
        if needs_key:
            out = jax.vmap(row_fn)(rows, jax.random.split(key, rows.shape[0]))
        else:
            out = jax.vmap(lambda r: row_fn(r, None))(rows)
        return out.reshape(x.shape).astype(x.dtype)

    return compress


def _check_ratio_k(ratio, k, name):
    if (ratio is None) == (k is None):
        raise ValueError(f"{name}: give exactly one of ratio (in (0, 1]) or k (int >= 1), got ratio={ratio!r}, k={k!r}")
    if ratio is not None:
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float, np.integer, np.floating))
            or not 0.0 < float(ratio) <= 1.0
        ):
            raise ValueError(f"{name}: ratio must be a number in (0, 1], got ratio={ratio!r}")
        return float(ratio), None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name}: k must be an int >= 1, got k={k!r}")
    return None, int(k)


def _k_of(d, ratio, k):
    """Static number of kept coordinates: nearest to ratio·d (halves up), in [1, d]."""
    d = int(d)
    kk = k if k is not None else int(math.floor(ratio * d + 0.5))
    return max(1, min(int(kk), d))


def _check_bool(value, option, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: {option} must be True or False, got {option}={value!r}")
    return bool(value)


def _omega_unbiased(c, what):
    """ω = 1 − c of an unbiased Q with E‖Q(x) − x‖² ≤ c‖x‖²; raise when that is not in (0, 1]."""
    if c < 1.0:
        return 1.0 - c
    raise ValueError(
        f"{what} is unbiased with E‖Q(x) − x‖² ≤ {c:.4g}·‖x‖² (≥ ‖x‖²): not a contraction, "
        f"ω ≤ 0 (Koloskova et al. 2019, Assumption 1); divide by τ = 1 + {c:.4g} for ω = 1/τ"
    )


def _scatter_keep(x, idx):
    return jnp.zeros_like(x).at[idx].set(x[idx])


# --------------------------------------------------------------------------- #
# Compressors
# --------------------------------------------------------------------------- #
def identity() -> Compressor:
    """No compression: Q(x) = x, ω = 1, 32·d bits."""
    return Compressor(
        "identity",
        _rowwise(lambda x, key: x, "identity", False),
        lambda d: 1.0,
        lambda d: float(_VALUE_BITS * int(d)),
        True,
    )


def top_k(ratio: float | None = None, k: int | None = None) -> Compressor:
    """Top-k sparsification (Stich, Cordonnier & Jaggi 2018, "Sparsified SGD with memory"):
    keep the k largest |x_i|, zero the rest.

    Deterministic and biased. ‖Q(x) − x‖² ≤ (1 − k/d)‖x‖² for every x (the dropped d − k
    coordinates are the smallest, so they hold at most a (d − k)/d share of ‖x‖²; Stich et al. 2018,
    Koloskova et al. 2019), hence ω = k/d. Ties go to the lower index
    (``jax.lax.top_k``). Bits: k values plus k indices of ⌈log2 d⌉ bits.
    """
    ratio, k = _check_ratio_k(ratio, k, "top_k")

    def row(x, key):
        _, idx = jax.lax.top_k(jnp.abs(x), _k_of(x.shape[-1], ratio, k))
        return _scatter_keep(x, idx)

    name = f"top_k(ratio={ratio})" if ratio is not None else f"top_k(k={k})"
    return Compressor(
        name,
        _rowwise(row, "top_k", False),
        lambda d: _k_of(d, ratio, k) / int(d),
        lambda d: float(_k_of(d, ratio, k) * (_VALUE_BITS + math.ceil(math.log2(int(d))))),
        False,
    )


def random_k(ratio: float | None = None, k: int | None = None, scaled: bool = False) -> Compressor:
    """Random-k sparsification (Stich, Cordonnier & Jaggi 2018): keep k coordinates drawn uniformly
    without replacement.

    ``scaled=False`` (the Choco variant, Koloskova et al. 2019): biased, and
    E‖Q(x) − x‖² = (1 − k/d)‖x‖² exactly, so ω = k/d. ``scaled=True`` multiplies by d/k: unbiased,
    but E‖Q(x) − x‖² = (d/k − 1)‖x‖², so ``omega`` returns 2 − d/k when k > d/2 and raises
    otherwise (dividing the scaled version by τ = d/k gives back the unscaled one, ω = k/d). Bits:
    k values plus a 32-bit seed from which the receiver regenerates the indices.
    """
    ratio, k = _check_ratio_k(ratio, k, "random_k")
    scaled = _check_bool(scaled, "scaled", "random_k")

    def row(x, key):
        d = x.shape[-1]
        kk = _k_of(d, ratio, k)
        idx = jax.random.permutation(key, d)[:kk]  # exactly uniform k-subset, static shape
        out = _scatter_keep(x, idx)
        return out * (d / kk) if scaled else out

    def omega(d):
        kk = _k_of(d, ratio, k)
        return (
            _omega_unbiased(int(d) / kk - 1.0, f"random_k(k={kk}, d={int(d)}, scaled=True)") if scaled else kk / int(d)
        )

    opt = f"ratio={ratio}" if ratio is not None else f"k={k}"
    return Compressor(
        f"random_k({opt}, scaled={scaled})",
        _rowwise(row, "random_k", True),
        omega,
        lambda d: float(_VALUE_BITS * _k_of(d, ratio, k) + _SEED_BITS),
        scaled,
    )


def qsgd(levels: int = 16, scaled: bool = True) -> Compressor:
    """QSGD stochastic quantization with s = ``levels`` (Alistarh et al. 2017):
    Q(x)_i = ‖x‖₂ · sign(x_i) · ξ_i / s, ξ_i = ⌊s|x_i|/‖x‖⌋ + Bernoulli(fractional part).

    Unscaled Q is unbiased with E‖Q(x) − x‖² ≤ min(d/s², √d/s)‖x‖² (Alistarh et al. 2017,
    Lemma 3.1). ``scaled=True`` returns Q(x)/τ, τ = 1 + min(d/s², √d/s), which satisfies
    E‖Q/τ − x‖² ≤ (1 − 1/τ)‖x‖², ω = 1/τ (Koloskova et al. 2019); it is biased.
    ``scaled=False``: ω = 1 − min(d/s², √d/s) when that is positive, else ``omega`` raises.
    Bits: a 32-bit norm plus per coordinate a sign bit and a ⌈log2(s+1)⌉-bit level (fixed length;
    Elias coding, Alistarh et al. 2017, is shorter for small s). Q(0) = 0.
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"qsgd: levels must be an int >= 1, got levels={levels!r}")
    s = int(levels)
    scaled = _check_bool(scaled, "scaled", "qsgd")

    def var_factor(d):
        d = int(d)
        return min(d / s**2, math.sqrt(d) / s)

    def row(x, key):
        norm = jnp.linalg.norm(x)
        safe = jnp.where(norm > 0, norm, 1.0)
        # rounding can put |x_i|/‖x‖ a hair above 1: clip so ξ never exceeds s
        r = jnp.clip(jnp.abs(x) / safe, 0.0, 1.0) * s
        low = jnp.floor(r)
        xi = low + (jax.random.uniform(key, x.shape, x.dtype) < (r - low)).astype(x.dtype)
        q = jnp.where(norm > 0, norm, 0.0) * jnp.sign(x) * xi / s
        return q / (1.0 + var_factor(x.shape[-1])) if scaled else q

    def omega(d):
        c = var_factor(d)
        return 1.0 / (1.0 + c) if scaled else _omega_unbiased(c, f"qsgd(levels={s}, d={int(d)}, scaled=False)")

    return Compressor(
        f"qsgd(levels={s}, scaled={scaled})",
        _rowwise(row, "qsgd", True),
        omega,
        lambda d: float(_VALUE_BITS + int(d) * (1 + math.ceil(math.log2(s + 1)))),
        not scaled,
    )


def sign() -> Compressor:
    """Scaled sign Q(x) = (‖x‖₁/d) · sign(x) (Karimireddy et al. 2019, "Error feedback fixes SignSGD",
    EF-SignSGD; used by Koloskova et al. 2019 and DeepSqueeze, Tang et al. 2019).

    Deterministic and biased. For x with no zero coordinate ‖Q(x) − x‖² = (1 − ‖x‖₁²/(d‖x‖²))‖x‖²
    exactly; sign(0) = 0, so exact zeros only shrink the error. The ω at x, ‖x‖₁²/(d‖x‖²), depends
    on x; its worst case 1/d (approached by a near one-hot x) is what ``omega(d)`` returns. Bits: d
    signs plus a 32-bit scale.
    """

    def row(x, key):
        return jnp.sum(jnp.abs(x)) / x.shape[-1] * jnp.sign(x)

    return Compressor(
        "sign", _rowwise(row, "sign", False), lambda d: 1.0 / int(d), lambda d: float(int(d) + _VALUE_BITS), False
    )


# --------------------------------------------------------------------------- #
# Registry and helpers
# --------------------------------------------------------------------------- #
COMPRESSORS: dict[str, Callable[..., Compressor]] = {
    "identity": identity,
    "top_k": top_k,
    "random_k": random_k,
    "qsgd": qsgd,
    "sign": sign,
}

_OPTIONS = {
    "identity": (),
    "top_k": ("ratio", "k"),
    "random_k": ("ratio", "k", "scaled"),
    "qsgd": ("levels", "scaled"),
    "sign": (),
}


def get(name, **options) -> Compressor:
    """Build the compressor registered as ``name`` with ``options``; a :class:`Compressor` passes
    through (options not allowed). Raises ValueError naming the bad name or option."""
    if isinstance(name, Compressor):
        if options:
            raise ValueError(f"get: options {sorted(options)} given with an already built {name.name}")
        return name
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; allowed: {sorted(COMPRESSORS)}")
    bad = sorted(set(options) - set(_OPTIONS[name]))
    if bad:
        raise ValueError(f"{name}: unknown option(s) {bad}; allowed: {list(_OPTIONS[name])}")
    return COMPRESSORS[name](**options)


def bits_to_bytes(bits: float) -> float:
    """Bytes on the wire: bits / 8."""
    return bits / 8.0


@functools.lru_cache(maxsize=32)
def _over_keys(compressor):
    # cached per compressor so repeated estimates compile once per shape
    return jax.jit(jax.vmap(compressor.compress, in_axes=(None, 0)))


def empirical_omega(compressor: Compressor, x, key, trials: int = 1000):
    """Monte Carlo ω at x: 1 − mean_t ‖Q_t(x) − x‖² / ‖x‖² over ``trials`` keys split from ``key``.

    ``x [..., d]`` gives one estimate per row, shape ``x.shape[:-1]``; a zero row gives 1 (Q(0) = 0).
    """
    x = _as_float(x)
    qs = _over_keys(compressor)(x, jax.random.split(key, int(trials)))
    err = jnp.mean(jnp.sum((qs - x) ** 2, axis=-1), axis=0)
    sq = jnp.sum(x**2, axis=-1)
    return jnp.where(sq > 0, 1.0 - err / jnp.where(sq > 0, sq, 1.0), 1.0)
