"""DP-SGD with per-example clipping on the transformer LM (issue 15, item 5, private half).

One tiny transformer (d_model 16, one layer, 16-byte windows, 4 nodes, 2 rounds); the three
compiled runs (plain, DP with C = 1e6 and σ = 0, DP with σ = 1) are built once per module.
experiments/lm_private.py --quick is run by tests/test_experiments_lm_private.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_lm import LM as _LM

import redeem_jax as rj
from redeem_jax.config import ConfigError
from redeem_jax.privacy import dp_sgd

# test_lm's tiny transformer on fewer nodes and rounds.
LM = {**_LM, "num_nodes": 4, "num_rounds": 2, "eval_every": 1, "checkpoint_every": 0, "eval.max_test_examples": 32}
DP = {"privacy.mode": "dp_sgd", "privacy.clipping": "vmap", "perf.microbatch": 3}


def lm_config(**overrides):
    c = rj.config.base_config()
    for k, v in {**LM, **overrides}.items():
        rj.config.set_field(c, k, v)
    return c


@pytest.fixture(scope="module")
def runs():
    return {
        "plain": rj.run(lm_config()),
        "no_noise": rj.run(lm_config(**DP, **{"privacy.clip_norm": 1e6, "privacy.noise_multiplier": 0.0})),
        "private": rj.run(lm_config(**DP, **{"privacy.clip_norm": 1.0, "privacy.noise_multiplier": 1.0})),
    }


def _reference_grads(model, flat, x, y):
    """Each example's gradient of its own hand-written mean per-token cross-entropy, by a
    Python loop over examples (float64 rows)."""

    def loss(p, xi, yi):
        logits = model.apply(p, xi[None])[0]  # [seq, 256]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yi[:, None], axis=1))

    grad = jax.jit(jax.grad(loss))
    return np.stack([np.asarray(grad(flat, x[i], y[i]), np.float64) for i in range(x.shape[0])])


def test_per_example_clipped_sum_on_the_transformer_equals_a_loop_over_examples():
    ex = rj.build(lm_config())
    model = ex.model
    assert model.task == "language" and not dp_sgd.supports_ghost_clipping(model)
    flat = jnp.asarray(ex.models(ex.init_state(0))[0])
    x, y = ex.node_data.x[0, :5], ex.node_data.y[0, :5]
    mask = np.array([True, True, False, True, True])  # a masked-out example contributes nothing
    g = _reference_grads(model, flat, x, y)
    norms = np.linalg.norm(g, axis=1)
    clip = float(np.median(norms[mask]))  # some examples clipped, some not
    assert (norms[mask] < clip).any() and (norms[mask] > clip).any()
    ref = np.sum(g * np.minimum(1.0, clip / norms)[:, None] * mask[:, None], axis=0)
    scale = np.abs(ref).max()
    for mb in (0, 2):  # all at once; 2 does not divide 5 (a padded last chunk)
        fn = jax.jit(lambda f, x, y, m: dp_sgd.clipped_grad_sum(model, f, x, y, m, clip, microbatch=mb, method="auto"))  # noqa: B023
        total, loss = fn(flat, x, y, jnp.asarray(mask))
        np.testing.assert_allclose(np.asarray(total), ref, rtol=1e-4, atol=1e-5 * scale, err_msg=f"microbatch {mb}")
        assert np.isfinite(float(loss))


def test_dp_sgd_without_clipping_or_noise_equals_the_plain_lm_run(runs):
    np.testing.assert_allclose(
        np.asarray(runs["no_noise"].params), np.asarray(runs["plain"].params), rtol=1e-4, atol=1e-5
    )


def test_private_lm_run_reports_the_accountants_epsilon_and_a_finite_perplexity(runs):
    res = runs["private"]
    q = res.experiment.privacy["sample_rate"]
    expected = rj.privacy.accounting.epsilon(1.0, q, 2, 1e-5, accountant="rdp", sampling="fixed")
    eps = [r["epsilon"] for r in res.rows if "epsilon" in r]
    assert 0 < eps[0] < eps[-1] and eps[-1] == pytest.approx(expected, rel=1e-9)
    assert np.isfinite(res.final["test_perplexity"]) and res.final["test_perplexity"] > 1
    # The noise moved the parameters away from the plain run's.
    assert not np.allclose(np.asarray(res.params), np.asarray(runs["plain"].params), atol=1e-3)


def test_ghost_clipping_and_grad_accum_are_refused_for_a_private_transformer():
    # ("auto" takes the vmap path on the transformer: asserted through supports_ghost_clipping above.)
    with pytest.raises(ConfigError, match="privacy.clipping.*ghost.*transformer"):
        rj.build(lm_config(**{"privacy.mode": "dp_sgd", "privacy.clipping": "ghost"}))
    with pytest.raises(ConfigError, match="grad_accum"):
        rj.build(lm_config(**{"privacy.mode": "dp_sgd", "optimizer.grad_accum": 2}))
