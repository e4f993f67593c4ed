"""DP-SGD at every node, inside the jitted round (Abadi et al. 2016, Alg. 1).

Per node: per-example gradients (a vmap over the node's examples, itself inside the vmap over
nodes), each clipped to norm C, summed over the examples in the batch, Gaussian noise
N(0, σ²C²) added to the sum (add/remove adjacency), divided by the expected batch size. The
result is a drop-in ``gradient_fn`` for :func:`redeem_jax.algorithms.dsgd.make_round`, so it
composes with every algorithm, topology and robust rule (a robust rule then aggregates noisy
messages).

Sampling: the batch the round samples is used as is. For fixed-size batches (``batch_size``
rows without replacement) the expected batch size is ``batch_size``; for Poisson sampling
the round passes the whole padded shard with a Bernoulli(q) mask (:func:`poisson_mask`), so
shapes stay static and the expected batch size is q·|Dᵢ|. Accounting for both is in
``rj.privacy.accounting``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from redeem_jax import _threefry, models
from redeem_jax.models import Model, loss_and_metrics

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = [
    "clip_by_norm",
    "per_example_grads",
    "clipped_grad_sum",
    "ghost_clipped_grad_sum",
    "supports_ghost_clipping",
    "make_dp_gradient_fn",
    "poisson_mask",
]


def clip_by_norm(g: jax.Array, clip_norm: float) -> jax.Array:
    """g·min(1, C/‖g‖) (Abadi et al. 2016, Alg. 1 line 'clip gradient'); C = inf leaves g as is."""
    norm = jnp.sqrt(jnp.sum(g * g))
    return g * jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-30))


def per_example_grads(model: Model, flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Gradients of the loss of each example separately: ``[B, d]`` (a vmap of ``grad``)."""

    def one(xi, yi):
        loss = lambda p: loss_and_metrics(model, p, xi[None], yi[None], jnp.ones((1,), bool))[0]  # noqa: E731
        return jax.grad(loss)(flat)

    return jax.vmap(one)(x, y)


def supports_ghost_clipping(model: Model) -> bool:
    """True for chains of dense layers (linear, logistic, MLP) without a regulariser in the loss."""
    if model.name not in ("linear", "logistic", "mlp") or model.l2 or model.task == "language":
        return False
    params = model.unravel(jnp.zeros((model.num_params,), jnp.float32))["params"]
    return all(k == f"Dense_{i}" for i, k in enumerate(sorted(params, key=lambda k: int(k.split("_")[-1]))))


def ghost_clipped_grad_sum(model: Model, flat, x, y, mask, clip_norm: float):
    """Σᵢ clip(∇ℓᵢ, C) without per-example gradients (ghost clipping: Goodfellow 2015;
    Lee & Kifer 2021; Li et al. 2022, Sec. 4).

    For a dense layer z = a·W + b, example i's gradient is aᵢᵀδᵢ (and δᵢ for the bias), so
    ‖∇ᵢ‖² = Σ_layers (‖aᵢ‖² + 1)·‖δᵢ‖², with δᵢ = ∂ℓᵢ/∂zᵢ from one backward pass through zero
    perturbations added to every pre-activation. The clipped sum is then the gradient of the
    reweighted loss Σᵢ cᵢℓᵢ, cᵢ = min(1, C/‖∇ᵢ‖) held constant: two backward passes, no [B, d].
    """
    params = model.unravel(flat)["params"]
    layers = [params[f"Dense_{i}"] for i in range(len(params))]
    h0 = x.reshape((x.shape[0], -1)).astype(flat.dtype)

    def forward(perturb):
        h, acts = h0, []
        for i, (layer, e) in enumerate(zip(layers, perturb)):
            acts.append(h)
            z = h @ layer["kernel"] + (layer["bias"] if "bias" in layer else 0.0) + e
            h = jax.nn.relu(z) if i < len(layers) - 1 else z
        return models.per_example_loss(model, h, y), acts

    zeros = [jnp.zeros((h0.shape[0], layer["kernel"].shape[1]), flat.dtype) for layer in layers]
    _, vjp, acts = jax.vjp(forward, zeros, has_aux=True)
    (deltas,) = vjp(mask.astype(flat.dtype))
    sq = sum(
        (jnp.sum(a * a, axis=1) + ("bias" in layer)) * jnp.sum(d * d, axis=1)
        for a, d, layer in zip(acts, deltas, layers)
    )
    scale = jnp.where(mask, jnp.minimum(1.0, clip_norm / jnp.maximum(jnp.sqrt(sq), 1e-30)), 0.0)
    scale = jax.lax.stop_gradient(scale)

    def weighted(p):
        out = model.apply(p, x)
        return jnp.sum(scale * models.per_example_loss(model, out, y))

    total = jax.grad(weighted)(flat)
    return total, models.loss_and_metrics(model, flat, x, y, mask)[0]


def clipped_grad_sum(model: Model, flat, x, y, mask, clip_norm: float, microbatch: int = 0, method: str = "auto"):
    """Σ_{i in batch} clip(∇ℓ(θ; xᵢ), C) over the unmasked examples, and the mean loss.

    ``method``: "ghost" (:func:`ghost_clipped_grad_sum`, dense chains only), "vmap" (explicit
    per-example gradients), or "auto" (ghost where supported). With "vmap", ``microbatch`` > 0
    bounds memory to ``microbatch × d`` per-example gradients at a time (a ``lax.map`` over
    chunks); the result is the same sum.
    """
    if method not in ("auto", "ghost", "vmap"):
        raise ValueError(f"privacy.clipping: {method!r} is not one of auto, ghost, vmap")
    if method == "ghost" or (method == "auto" and supports_ghost_clipping(model)):
        if not supports_ghost_clipping(model):
            raise ValueError(f"ghost clipping needs a chain of dense layers without l2; model {model.name!r} is not")
        return ghost_clipped_grad_sum(model, flat, x, y, mask, clip_norm)
    b = x.shape[0]
    mb = b if microbatch <= 0 or microbatch >= b else int(microbatch)
    pad = (-b) % mb
    if pad:  # pad to whole microbatches with masked-out rows
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
        y = jnp.concatenate([y, jnp.zeros((pad,) + y.shape[1:], y.dtype)])
        mask = jnp.concatenate([mask, jnp.zeros((pad,), bool)])

    def chunk(args):
        xc, yc, mc = args
        g = per_example_grads(model, flat, xc, yc)
        g = jax.vmap(clip_by_norm, in_axes=(0, None))(g, clip_norm)
        return jnp.sum(jnp.where(mc[:, None], g, 0.0), axis=0)

    n_chunks = x.shape[0] // mb
    shaped = (
        x.reshape((n_chunks, mb) + x.shape[1:]),
        y.reshape((n_chunks, mb) + y.shape[1:]),
        mask.reshape(n_chunks, mb),
    )
    total = jnp.sum(jax.lax.map(chunk, shaped), axis=0)
    loss = loss_and_metrics(model, flat, x, y, mask)[0]
    return total, loss


def poisson_mask(key: jax.Array, size, m_max: int, sample_rate: float) -> jax.Array:
    """Poisson subsampling of one node's shard: every real row independently with probability q,
    as a static-shape mask over the ``m_max`` padded rows (Abadi et al. 2016; Mironov et al. 2019)."""
    return (jax.random.uniform(key, (m_max,)) < sample_rate) & (jnp.arange(m_max) < size)


def make_dp_gradient_fn(
    model: Model,
    clip_norm: float,
    noise_multiplier: float,
    expected_batch_size: float | Callable | None = None,
    microbatch: int = 0,
    method: str = "auto",
):
    """DP-SGD ``gradient_fn(flat, x, y, mask, key) -> (loss, noisy gradient)`` for one node.

    (Σ clip(gᵢ, C) + N(0, σ²C²·I)) / B, with B = ``expected_batch_size`` (a number, or a
    function of the batch mask), defaulting to the batch's row count. σ = 0 and C = inf give
    the plain minibatch mean gradient (up to float summation order). ``method`` picks ghost
    clipping or explicit per-example gradients (:func:`clipped_grad_sum`).
    """
    if isinstance(clip_norm, (int, float)) and clip_norm <= 0:
        raise ValueError(f"privacy.clip_norm: must be > 0, got {clip_norm}")
    # σ may be a traced scalar (rj.sweep vmaps whole runs over it); then the noise is always drawn.
    static_sigma = isinstance(noise_multiplier, (int, float))
    if static_sigma and noise_multiplier < 0:
        raise ValueError(f"privacy.noise_multiplier: must be >= 0, got {noise_multiplier}")

    def normal(key, shape, dtype):
        z = jax.random.normal(key, shape, dtype)
        # The model's dead padding (Model.pad) gets no noise: it stays exactly zero, and the live
        # coordinates keep the draw of the unpadded row (threefry's first d values).
        return jnp.where(jnp.arange(shape[-1]) < model.num_live, z, 0.0) if model.pad else z

    def fn(flat, x, y, mask, key):
        total, loss = clipped_grad_sum(model, flat, x, y, mask, clip_norm, microbatch, method)
        if static_sigma and noise_multiplier > 0:
            total = total + noise_multiplier * clip_norm * normal(key, total.shape, total.dtype)
        elif not static_sigma:
            # σ = 0 with C = inf (the non-private limit) must add 0, not 0·inf = NaN.
            std = jnp.where(noise_multiplier > 0, noise_multiplier * clip_norm, 0.0)
            total = total + std * normal(key, total.shape, total.dtype)
        if expected_batch_size is None:
            b = x.shape[0]
        elif callable(expected_batch_size):
            b = expected_batch_size(mask)
        else:
            b = expected_batch_size
        return loss, total / b

    return fn
