"""Models as flat rows: shapes, masking, causality, and the loss conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redeem_jax import models


@pytest.mark.parametrize(
    "name,shape,classes,task",
    [
        ("linear", (8, 8, 1), 10, "classification"),
        ("mlp", (8, 8, 1), 10, "classification"),
        ("cnn", (8, 8, 1), 10, "classification"),
        ("cnn", (40,), 10, "classification"),
        ("linear", (5,), 1, "regression"),
        ("logistic", (5,), 2, "classification"),
        ("transformer", (16,), 256, "language"),
    ],
)
def test_flat_rows_roundtrip_and_output_shapes(name, shape, classes, task):
    m = models.get(name, shape, classes, task, d_model=16, num_heads=2, num_layers=1)
    flat = m.init(jax.random.PRNGKey(1))
    assert flat.shape == (m.num_params,) and flat.dtype == jnp.float32
    # unravel ∘ ravel is the identity: the pytree is fully described by the row.
    again = jax.flatten_util.ravel_pytree(m.unravel(flat))[0]
    np.testing.assert_array_equal(again, flat)
    x = jnp.zeros((3, *shape), jnp.int32 if task == "language" else jnp.float32)
    out = m.apply(flat, x)
    if task == "language":
        assert out.shape == (3, shape[0], 256)
    elif m.task in ("regression", "binary"):
        assert out.shape == (3, 1)
    else:
        assert out.shape == (3, classes)


def test_masked_examples_do_not_change_the_loss():
    m = models.get("mlp", (4,), 3, hidden=(8,))
    p = m.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    y = jnp.array([0, 1, 2, 0, 1, 2])
    mask = jnp.array([True, True, True, False, False, False])
    full, _ = models.loss_and_metrics(m, p, x[:3], y[:3], jnp.ones(3, bool))
    # Padded rows carry garbage: the mask must make them irrelevant.
    x_bad = x.at[3:].set(1e6)
    masked, _ = models.loss_and_metrics(m, p, x_bad, y, mask)
    np.testing.assert_allclose(masked, full, rtol=1e-6)


def test_transformer_is_causal():
    m = models.get("transformer", (12,), 256, "language", d_model=16, num_heads=2, num_layers=2)
    p = m.init(jax.random.PRNGKey(0))
    t = jax.random.randint(jax.random.PRNGKey(1), (1, 12), 0, 256)
    t2 = t.at[0, 7:].set((t[0, 7:] + 13) % 256)
    a, b = m.apply(p, t), m.apply(p, t2)
    np.testing.assert_allclose(a[0, :7], b[0, :7], atol=1e-5)  # the past ignores the future
    assert not np.allclose(a[0, 7:], b[0, 7:])


def test_regression_loss_is_half_squared_error_and_l2_term():
    m = models.get("linear", (3,), 1, "regression", l2=0.5)
    w = jnp.array([1.0, -2.0, 0.5])
    x = jnp.eye(3)
    y = jnp.array([0.0, 0.0, 0.0])
    loss, _ = models.loss_and_metrics(m, w, x, y, jnp.ones(3, bool))
    expected = 0.5 * np.mean(np.asarray(w) ** 2) + 0.25 * np.sum(np.asarray(w) ** 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_bad_model_requests_name_the_problem():
    with pytest.raises(ValueError, match="model.name"):
        models.get("resnet", (4,), 2)
    with pytest.raises(ValueError, match="logistic"):
        models.get("logistic", (4,), 10)
    with pytest.raises(ValueError, match="divisible"):
        models.get("transformer", (8,), 256, "language", d_model=10, num_heads=3)
