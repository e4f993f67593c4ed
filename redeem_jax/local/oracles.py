"""Per-node gradient oracles of the round protocol: minibatch SGD and DP-SGD.

An :class:`~redeem_jax.core.Oracle` takes the rows ``x [N, d]`` of the whole network and the
node data (an argument of the step) and returns every node's loss and gradient, vmapped over
nodes: no loop over nodes or examples. Keys: :func:`minibatch` draws every node's indices at
local step h of round t from the one key ``fold_in(fold_in(k_t, tag("minibatch")), h)``
(counter-based: node i's words are the hash of (i, ·)); :func:`dp_sgd` gives node i the key
``fold_in(split(k_t, N)[i], h)`` split into a batch key and a noise key, as the first engine did.
Either way a run's random stream does not depend on how it was chunked or which algorithm
consumes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from redeem_jax import _threefry
from redeem_jax.core import Hyper, Oracle, tag
from redeem_jax.data import sampling as _sampling
from redeem_jax.models import Model, loss_and_metrics

_threefry.install()  # same random bits, drawn ~10x faster on CPU (docs/performance.md)

__all__ = ["gradient_fn", "minibatch", "dp_sgd", "with_gradient_noise"]


def gradient_fn(model: Model, grad_accum: int = 1) -> Callable:
    """Minibatch gradient of one node's loss: ``(flat, x, y, mask, key) -> (loss, grad)``.

    The key is unused here; private variants (DP-SGD) draw their noise from it.
    ``grad_accum = k > 1`` splits the batch into k equal microbatches and sums their gradients
    in a ``lax.scan`` (activations of one microbatch alive at a time), each weighted by its share
    of the unmasked rows, so the result is the full batch's masked-mean gradient (up to the order
    of float additions).
    """

    def value_and_grad(flat, xb, yb, mask):
        (loss, _), grad = jax.value_and_grad(lambda p: loss_and_metrics(model, p, xb, yb, mask), has_aux=True)(flat)
        return loss, grad

    def fn(flat, xb, yb, mask, key):
        del key
        if grad_accum == 1:
            return value_and_grad(flat, xb, yb, mask)
        split = lambda a: a.reshape(grad_accum, a.shape[0] // grad_accum, *a.shape[1:])  # noqa: E731
        total = jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)

        def micro(acc, batch):
            xm, ym, mm = batch
            w = jnp.sum(mm.astype(jnp.float32)) / total  # masked mean = Σ_j (n_j / n) · mean_j
            loss, grad = value_and_grad(flat, xm, ym, mm)
            return (acc[0] + w * loss, acc[1] + w * grad), None

        (loss, grad), _ = jax.lax.scan(
            micro, (jnp.zeros((), flat.dtype), jnp.zeros_like(flat)), tuple(map(split, (xb, yb, mask)))
        )
        return loss, grad

    return fn


def _node_keys(ctx):
    n = ctx.num_nodes
    keys = jax.vmap(lambda k: jax.random.fold_in(k, ctx.step))(jax.random.split(ctx.key, n))
    batch_keys, grad_keys = jnp.split(jax.vmap(jax.random.split)(keys), 2, axis=1)
    return batch_keys[:, 0], grad_keys[:, 0]


class _OneDraw(NamedTuple):
    """The sampler of :func:`minibatch` and fixed-size :func:`dp_sgd`: ``batch_size`` rows per
    node by ``rj.data.subset_indices``, all nodes from one key. ``noise_keys``: the gradient
    function still gets per-node keys (DP-SGD's noise), derived as before."""

    batch_size: int
    noise_keys: bool = False


def _oracle(make_fns: Callable, hypers: tuple = ()) -> Oracle:
    """An oracle from ``make_fns(ctx) -> (sample_fn, gradient_fn)`` (hyper-parameters resolved in ctx)."""

    def init(x0):
        del x0
        return ()

    def update(x, s, ctx, data):
        sample_fn, grad_fn = make_fns(ctx)
        if isinstance(sample_fn, _OneDraw):  # every node's indices from one counter-based draw
            key = jax.random.fold_in(jax.random.fold_in(ctx.key, tag("minibatch")), ctx.step)
            xb, yb, mask = _sampling.sample_network_batches(key, data, sample_fn.batch_size)
            if sample_fn.noise_keys:
                grad_keys = _node_keys(ctx)[1]
            else:
                grad_keys = jnp.zeros((x.shape[0], 2), jnp.uint32)  # unused by gradient_fn
        else:
            batch_keys, grad_keys = _node_keys(ctx)
            xb, yb, mask = jax.vmap(sample_fn)(batch_keys, data.x, data.y, data.sizes)
        loss, grads = jax.vmap(grad_fn)(x, xb, yb, mask, grad_keys)
        return loss, grads, s

    return Oracle(init, update, tuple(hypers))


def minibatch(model: Model, batch_size: int, grad_accum: int = 1) -> Oracle:
    """Every node's minibatch gradient: ``batch_size`` rows of its own shard drawn without
    replacement (``rj.data.subset_indices``: Floyd's algorithm, every node from one draw keyed by
    ``fold_in(fold_in(k_t, tag("minibatch")), h)``), the model's mean loss over them (Lian et al.
    2017's stochastic gradient oracle). ``grad_accum``: see :func:`gradient_fn`."""
    grad = gradient_fn(model, int(grad_accum))
    return _oracle(lambda ctx: (_OneDraw(int(batch_size)), grad))


def dp_sgd(
    model: Model,
    batch_size: int,
    *,
    clip_norm,
    noise_multiplier,
    sampling: str = "fixed",
    sample_rate: float = 1.0,
    m_max: int | None = None,
    expected_batch_size: float | None = None,
    microbatch: int = 0,
    clipping: str = "auto",
) -> Oracle:
    """DP-SGD at every node (Abadi et al. 2016, Alg. 1): per-example gradients clipped to C,
    summed, N(0, σ²C²) added, divided by the expected batch size.

    ``sampling="fixed"``: ``batch_size`` rows without replacement; ``"poisson"``: the whole
    padded shard (``m_max`` rows) under a Bernoulli(``sample_rate``) mask
    (:func:`~redeem_jax.privacy.dp_sgd.poisson_mask`). ``clip_norm`` and ``noise_multiplier``
    may be :class:`~redeem_jax.core.Hyper`. Accounting: ``rj.privacy.accounting``.
    """
    from redeem_jax.privacy import dp_sgd as _dp

    if sampling == "poisson":
        if m_max is None:
            raise ValueError("dp_sgd oracle: Poisson sampling needs m_max (the padded shard length)")

        def sample_fn(key, node_x, node_y, size):
            return node_x, node_y, _dp.poisson_mask(key, size, m_max, sample_rate)

        expected = float(sample_rate * (m_max if expected_batch_size is None else expected_batch_size))
        if expected_batch_size is not None:
            expected = float(expected_batch_size)
    else:
        # The same rows as the non-private oracle draws (one draw for all nodes), so DP-SGD with
        # no noise and no clipping is the plain run; the noise keeps its per-node keys.
        sample_fn = _OneDraw(int(batch_size), noise_keys=True)
        expected = float(batch_size if expected_batch_size is None else expected_batch_size)

    def make(ctx):
        grad = _dp.make_dp_gradient_fn(
            model, ctx.value(clip_norm), ctx.value(noise_multiplier), expected, microbatch, clipping
        )
        return sample_fn, grad

    hypers = tuple(v for v in (clip_norm, noise_multiplier) if isinstance(v, Hyper))
    return _oracle(make, hypers)


def with_gradient_noise(oracle: Oracle, sigma) -> Oracle:
    """``oracle`` whose every node's gradient gets i.i.d. ``N(0, σ² I)`` added at every local step.

    The stochastic-gradient model of Lian et al. (2017, Assumption 1.3) and Koloskova et al.
    (2020, Assumption 3): ``g_i = ∇f_i(x_i) + ξ_i`` with ``E ξ_i = 0`` and ``E‖ξ_i‖² = σ² d``,
    here Gaussian, independent over nodes and steps. Node i's noise at local step h of round t
    comes from ``split(fold_in(fold_in(k_t, tag("grad_noise")), h), N)[i]``, a stream of its own,
    so the inner oracle's minibatches (and DP-SGD's noise) are those of the run without it.
    ``sigma`` may be a :class:`~redeem_jax.core.Hyper` (``oracle.grad_noise``: swept by vmap).
    With a noiseless full-batch inner oracle on ``f_i = ½‖x − b‖²`` this is the setting of the
    closed forms ``rj.theory.dsgd_noise_average_variance`` / ``dsgd_noise_consensus_distance``.
    """

    def update(x, s, ctx, data):
        loss, grads, s = oracle.update(x, s, ctx, data)
        key = jax.random.fold_in(jax.random.fold_in(ctx.key, tag("grad_noise")), ctx.step)
        keys = jax.random.split(key, x.shape[0])
        noise = jax.vmap(lambda k: jax.random.normal(k, grads.shape[1:], grads.dtype))(keys)
        return loss, grads + jnp.asarray(ctx.value(sigma), grads.dtype) * noise, s

    extra = (sigma,) if isinstance(sigma, Hyper) else ()
    return Oracle(oracle.init, update, tuple(oracle.hypers) + extra)
