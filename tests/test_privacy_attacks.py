"""Privacy attacks (redeem_jax.privacy.inference): gradient inversion and loss-threshold
membership inference, each without DP (the attack works) and with DP-SGD at ε = 1 (it fails).

Settings (see docs/privacy_attacks.md):
* inversion under DP: the σ that ε = 1 prescribes for a node running 1000 DP-SGD steps at
  sample rate q = 0.01, δ = 1e-5 (RDP, Poisson): σ ≈ 1.51; C = 1; the message is one example's
  clipped gradient plus N(0, σ²C²) per coordinate (batch of 1, as the tests need).
* membership: 100 members (digits train), 100 non-members (digits test), MLP(64), Adam 3e-3,
  1000 full-batch steps; DP-SGD with the same budget is q = 1, T = 1000, ε = 1, δ = 1e-5.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

from redeem_jax import data, models
from redeem_jax.privacy import accounting, dp_sgd
from redeem_jax.privacy import inference as pa

DELTA = 1e-5


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _grad(model, p, x, y):
    return jax.grad(lambda q: models.loss_and_metrics(model, q, x, y, jnp.ones((x.shape[0],), bool))[0])(p)


@pytest.fixture(scope="module")
def inversion_sigma():
    # a node's whole run: 1000 steps at q = 0.01 spending ε = 1
    return accounting.noise_multiplier_for(1.0, sample_rate=0.01, steps=1000, delta=DELTA)


def _dp_message(model, p, x, y, sigma, key):
    fn = dp_sgd.make_dp_gradient_fn(model, clip_norm=1.0, noise_multiplier=sigma, expected_batch_size=1.0)
    return fn(p, x, y, jnp.ones((1,), bool), key)[1]


# ---------------------------------------------------------------- gradient inversion
def test_analytic_inversion_exact_without_noise_fails_with_dp(digits, inversion_sigma):
    model = models.get("mlp", (8, 8, 1), 10, hidden=(32,))
    p = model.init(jax.random.PRNGKey(0))
    for i in range(3):
        x, y = jnp.asarray(digits.x_train[i : i + 1]), jnp.asarray(digits.y_train[i : i + 1])
        x_hat = pa.analytic_inversion(_grad(model, p, x, y), model)
        assert x_hat.shape == (64,)
        assert pa.relative_error(x_hat, x) < 1e-3
        noisy = _dp_message(model, p, x, y, inversion_sigma, jax.random.PRNGKey(10 + i))
        assert pa.relative_error(pa.analytic_inversion(noisy, model), x) > 0.5


def test_infer_label_idlg(digits):
    model = models.get("mlp", (8, 8, 1), 10, hidden=(16,))
    p = model.init(jax.random.PRNGKey(1))
    for i in range(5):
        x, y = jnp.asarray(digits.x_train[i : i + 1]), jnp.asarray(digits.y_train[i : i + 1])
        assert int(pa.infer_label(_grad(model, p, x, y), model)) == int(y[0])


def test_optimization_inversion_recovers_without_noise_fails_with_dp(digits, inversion_sigma):
    # tiny MLP (64-16-10), one example, label by iDLG, L2 matching, pixels boxed in [0, 1]
    model = models.get("mlp", (8, 8, 1), 10, hidden=(16,))
    p = model.init(jax.random.PRNGKey(0))
    kw = dict(steps=300, lr=0.05, distance="l2", bounds=(0.0, 1.0))
    for i in range(3):
        x, y = jnp.asarray(digits.x_train[i : i + 1]), jnp.asarray(digits.y_train[i : i + 1])
        x_hat, y_hat = pa.optimization_inversion(_grad(model, p, x, y), model, p, jax.random.PRNGKey(10), **kw)
        assert int(y_hat) == int(y[0])
        assert pa.relative_error(x_hat, x) < 0.1
    noisy = _dp_message(model, p, x, y, inversion_sigma, jax.random.PRNGKey(3))
    x_hat, _ = pa.optimization_inversion(noisy, model, p, jax.random.PRNGKey(10), **kw)
    assert pa.relative_error(x_hat, x) > 0.5


def test_optimization_inversion_soft_label_and_cosine(digits):
    # a linear softmax model, label not given and not inferred: DLG's joint soft label
    model = models.get("linear", (8, 8, 1), 10)
    p = 0.1 * jax.random.normal(jax.random.PRNGKey(3), (model.num_params,))
    x, y = jnp.asarray(digits.x_train[:1]), jnp.asarray(digits.y_train[:1])
    x_hat, y_hat = pa.optimization_inversion(
        _grad(model, p, x, y), model, p, jax.random.PRNGKey(2), steps=500, lr=0.05, distance="cosine", infer=False
    )
    assert int(y_hat) == int(y[0])
    assert pa.relative_error(x_hat, x) < 0.1


# ---------------------------------------------------------------- membership inference
def _train(model, x, y, grad_fn, steps, key):
    opt = optax.adam(3e-3)
    p0 = model.init(jax.random.PRNGKey(0))

    @jax.jit
    def run(p0, key):
        def step(carry, k):
            p, s = carry
            u, s = opt.update(grad_fn(p, k), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p0, opt.init(p0)), jax.random.split(key, steps))[0][0]

    return run(p0, key)


def test_membership_inference_overfit_vs_dp(digits):
    n, steps = 100, 1000
    xm, ym = jnp.asarray(digits.x_train[:n]), jnp.asarray(digits.y_train[:n])
    xn, yn = jnp.asarray(digits.x_test[:n]), jnp.asarray(digits.y_test[:n])
    model = models.get("mlp", (8, 8, 1), 10, hidden=(64,))
    mask = jnp.ones((n,), bool)

    plain = _train(model, xm, ym, lambda p, k: _grad(model, p, xm, ym), steps, jax.random.PRNGKey(1))
    sm, sn = pa.loss_threshold_scores(model, plain, xm, ym), pa.loss_threshold_scores(model, plain, xn, yn)
    a = pa.auc(sm, sn)
    # "clearly above 0.5": digits generalises well, so ~0.70 is what overfitting 100 examples
    # gives; require it 3 Hanley–McNeil standard errors above chance
    assert a > 0.5 + 3 * pa.auc_std_error(a, n, n) and a > 0.65

    # DP-SGD, same budget: full batch (q = 1), 1000 steps, ε = 1
    sigma = accounting.noise_multiplier_for(1.0, sample_rate=1.0, steps=steps, delta=DELTA)
    assert accounting.epsilon(sigma, 1.0, steps, DELTA) <= 1.0 + 1e-6
    dpfn = dp_sgd.make_dp_gradient_fn(model, clip_norm=1.0, noise_multiplier=sigma, expected_batch_size=float(n))
    private = _train(model, xm, ym, lambda p, k: dpfn(p, xm, ym, mask, k)[1], steps, jax.random.PRNGKey(1))
    sm, sn = pa.loss_threshold_scores(model, private, xm, ym), pa.loss_threshold_scores(model, private, xn, yn)
    a_dp = pa.auc(sm, sn)
    assert abs(a_dp - 0.5) < 3 * pa.auc_std_error(0.5, n, n)
    # sampling slack: under the null the max over thresholds of TPR − FPR is a two-sample KS
    # statistic; its 99% quantile is 1.63·sqrt(2/n)
    slack = 1.63 * math.sqrt(2.0 / n)
    assert pa.membership_advantage(sm, sn) <= pa.membership_advantage_bound(1.0, DELTA) + slack


# ---------------------------------------------------------------- ROC / AUC / bound
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(0.5, 1, 137), rng.normal(0, 1, 91)
    if seed == 2:  # ties inside and across the two groups
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    want = roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg])
    assert abs(pa.auc(pos, neg) - want) < 1e-9
    fpr, tpr, thr = pa.roc(pos, neg)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thr) < 0)


def test_tpr_at_fpr_and_advantage():
    pos, neg = np.array([5.0, 4.0, 3.0, 0.5]), np.array([3.5, 1.0, 0.0, -1.0])
    assert pa.tpr_at_fpr(pos, neg, fpr=0.0) == 0.5
    assert pa.tpr_at_fpr(pos, neg, fpr=0.25) == 0.75
    assert pa.membership_advantage(pos, neg) == 0.5
    assert pa.auc(np.ones(3), np.zeros(3)) == 1.0


def test_membership_advantage_bound():
    assert round(pa.membership_advantage_bound(1.0, 0.0), 3) == 0.462
    assert pa.membership_advantage_bound(0.0, 0.0) == 0.0
    assert pa.membership_advantage_bound(1.0, 1e-5) > pa.membership_advantage_bound(1.0, 0.0)
    with pytest.raises(ValueError):
        pa.membership_advantage_bound(-1.0, 0.0)
