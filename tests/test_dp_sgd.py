"""DP-SGD inside the round: clipping, the clipped sum, the noise law, and the non-private limit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import redeem_jax as rj
from redeem_jax import models
from redeem_jax.privacy import dp_sgd

MODEL = models.get("mlp", (6,), 3, hidden=(8,))
P = MODEL.init(jax.random.PRNGKey(0))
X = jax.random.normal(jax.random.PRNGKey(1), (10, 6)) * 3.0
Y = jnp.arange(10) % 3
MASK = jnp.arange(10) < 8  # two padded rows


def _reference_clipped_sum(C):
    # Per-example gradients one by one, in plain Python: the definition (Abadi et al. 2016).
    total = np.zeros(P.shape)
    for i in range(8):
        g = jax.grad(lambda p: models.loss_and_metrics(MODEL, p, X[i : i + 1], Y[i : i + 1], jnp.ones(1, bool))[0])(P)
        g = np.asarray(g, np.float64)
        total += g * min(1.0, C / np.linalg.norm(g))
    return total


@pytest.mark.parametrize("method", ["vmap", "ghost"])
@pytest.mark.parametrize("C", [0.1, 1.0, np.inf])
def test_clipped_sum_matches_a_per_example_reference(C, method):
    total, _ = dp_sgd.clipped_grad_sum(MODEL, P, X, Y, MASK, C, method=method)
    np.testing.assert_allclose(total, _reference_clipped_sum(C), rtol=2e-5, atol=1e-6)


def test_every_clipped_per_example_gradient_is_within_the_clip_norm():
    g = dp_sgd.per_example_grads(MODEL, P, X, Y)
    clipped = jax.vmap(dp_sgd.clip_by_norm, in_axes=(0, None))(g, 0.05)
    assert np.all(np.linalg.norm(np.asarray(clipped), axis=1) <= 0.05 + 1e-6)
    assert np.any(np.linalg.norm(np.asarray(g), axis=1) > 0.05)  # the clipping did something


def test_microbatching_gives_the_same_sum():
    full, _ = dp_sgd.clipped_grad_sum(MODEL, P, X, Y, MASK, 1.0)
    for mb in (1, 3, 4):
        part, _ = dp_sgd.clipped_grad_sum(MODEL, P, X, Y, MASK, 1.0, microbatch=mb)
        np.testing.assert_allclose(part, full, rtol=1e-5, atol=1e-7)


def test_added_noise_is_gaussian_with_std_sigma_c():
    sigma, C, B = 1.3, 0.7, 8.0
    noisy = jax.jit(dp_sgd.make_dp_gradient_fn(MODEL, C, sigma, B))
    clean = dp_sgd.make_dp_gradient_fn(MODEL, C, 0.0, B)
    base = clean(P, X, Y, MASK, jax.random.PRNGKey(0))[1]
    # 30 draws x 83 coordinates: N(0, σ²C²) per coordinate, before the 1/B scaling.
    noise = np.concatenate(
        [np.asarray((noisy(P, X, Y, MASK, jax.random.PRNGKey(s))[1] - base) * B, np.float64) for s in range(30)]
    )
    z = noise / (sigma * C)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # The variance pins the scale: within 4 standard errors of 1, which a 15% wrong σ is not.
    se = np.sqrt(2.0 / z.size)
    assert abs(z.var() - 1.0) < 4 * se
    assert abs((z / 1.15).var() - 1.0) > 4 * se


def test_no_noise_and_no_clipping_is_the_plain_gradient():
    dp = dp_sgd.make_dp_gradient_fn(MODEL, np.inf, 0.0, expected_batch_size=8.0)
    plain = rj.oracles.gradient_fn(MODEL)
    np.testing.assert_allclose(dp(P, X, Y, MASK, None)[1], plain(P, X, Y, MASK, None)[1], rtol=1e-5, atol=1e-7)


def test_poisson_mask_only_selects_real_rows_at_the_right_rate():
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    masks = jax.vmap(lambda k: dp_sgd.poisson_mask(k, 30, 40, 0.25))(keys)
    assert not np.any(np.asarray(masks)[:, 30:])
    counts = np.asarray(masks).sum(1)
    # Binomial(30, 0.25): mean 7.5, var 5.625; the mean of 4000 draws is within 4 standard errors.
    assert abs(counts.mean() - 7.5) < 4 * np.sqrt(5.625 / 4000)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="clip_norm"):
        dp_sgd.make_dp_gradient_fn(MODEL, 0.0, 1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        dp_sgd.make_dp_gradient_fn(MODEL, 1.0, -1.0)


@pytest.mark.parametrize(
    "name,shape,classes,task",
    [("linear", (4,), 1, "regression"), ("logistic", (4,), 2, "classification"), ("mlp", (2, 3), 5, "classification")],
)
def test_ghost_clipping_equals_per_example_clipping(name, shape, classes, task):
    m = models.get(name, shape, classes, task, hidden=(7, 5))
    p = m.init(jax.random.PRNGKey(3)) + 0.1 * jax.random.normal(jax.random.PRNGKey(4), (m.num_params,))
    x = jax.random.normal(jax.random.PRNGKey(5), (9, *shape))
    y = (
        jax.random.normal(jax.random.PRNGKey(6), (9,))
        if task == "regression"
        else jax.random.randint(jax.random.PRNGKey(6), (9,), 0, classes)
    )
    mask = jnp.arange(9) < 7
    assert dp_sgd.supports_ghost_clipping(m)
    for C in (0.05, 0.5, np.inf):
        a, _ = dp_sgd.clipped_grad_sum(m, p, x, y, mask, C, method="ghost")
        b, _ = dp_sgd.clipped_grad_sum(m, p, x, y, mask, C, method="vmap")
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_ghost_clipping_refuses_models_it_cannot_handle():
    cnn = models.get("cnn", (6, 6, 1), 3)
    assert not dp_sgd.supports_ghost_clipping(cnn)
    with pytest.raises(ValueError, match="ghost"):
        dp_sgd.clipped_grad_sum(
            cnn,
            cnn.init(jax.random.PRNGKey(0)),
            jnp.zeros((2, 6, 6, 1)),
            jnp.zeros(2, int),
            jnp.ones(2, bool),
            1.0,
            method="ghost",
        )
