"""Collaborative anomaly detection (rj.detect): AUROC against scikit-learn, gossip-averaged
sufficient statistics against the centralized ones (and at the spectral rate), and the
collaborative detectors against local-only training at every node."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import redeem_jax as rj
from redeem_jax import detect as dt
from redeem_jax.network import directed

N, NTRAIN, SHRINK = 8, 10, 0.1


@pytest.fixture(scope="module")
def data():
    return dt.breast_cancer_nodes(N, NTRAIN, seed=0)


def test_auroc_matches_sklearn_with_ties_and_mask():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(6, 40)).astype(np.float32)  # 5 values over 40 entries: many ties
    labels = rng.integers(0, 2, size=(6, 40))
    labels[:, :2] = [0, 1]  # both classes at every row
    mask = np.ones((6, 40), bool)
    mask[3, 25:] = False  # a padded row: only its first 25 entries count
    got = np.asarray(dt.auroc(scores, labels, mask))
    want = [roc_auc_score(labels[i][mask[i]], scores[i][mask[i]]) for i in range(6)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # A leading batch shape is kept.
    assert dt.auroc(scores.reshape(2, 3, 40), labels.reshape(2, 3, 40)).shape == (2, 3)


def _centralized_auroc(d):
    """Independent reference: pooled NumPy mean / covariance of every node's normals, the same
    shrinkage, Mahalanobis scores and scikit-learn's AUROC at each node."""
    X = np.asarray(d.train, np.float64).reshape(-1, d.train.shape[-1])
    mu = X.mean(0)
    cov = np.cov(X, rowvar=False, bias=True)
    D = X.shape[1]
    cov = (1 - SHRINK) * cov + SHRINK * np.trace(cov) / D * np.eye(D)
    P = np.linalg.inv(cov)
    T = np.asarray(d.test, np.float64)
    z = T - mu
    s = np.einsum("nkd,de,nke->nk", z, P, z)
    return np.array([roc_auc_score(np.asarray(d.test_label[i]), s[i]) for i in range(T.shape[0])])


def test_gossip_stats_contract_at_spectral_rate_and_reach_centralized(data):
    topo = rj.topology.ring(N)
    s0 = dt.sufficient_stats(data.train, data.train_mask)
    mean = jnp.mean(s0, axis=0, keepdims=True)
    e0 = float(jnp.linalg.norm(s0 - mean))
    rho = topo.rho()
    for t in (5, 20, 60):
        # Symmetric doubly stochastic W: ‖W^t X − 1x̄ᵀ‖_F ≤ ρ^t ‖X − 1x̄ᵀ‖_F (Xiao & Boyd 2004).
        et = float(jnp.linalg.norm(dt.gossip_average(topo, s0, t) - mean))
        assert et <= rho**t * e0 * (1 + 1e-3) + 1e-3, (t, et, rho**t * e0)
        assert et >= 0.05 * rho**t * e0  # and the rate is tight, not just a bound
    # 400 rounds: ρ^400 ≈ 1e-12, at float32 precision every node holds the pooled statistics.
    s = dt.gossip_average(topo, s0, 400)
    np.testing.assert_allclose(np.asarray(s), np.broadcast_to(np.asarray(mean), s.shape), rtol=1e-4, atol=1e-3)
    got = np.asarray(dt.gaussian_detector(data, topo, 400, SHRINK))
    np.testing.assert_allclose(got, _centralized_auroc(data), atol=2e-3)


def test_push_sum_ratio_on_a_directed_ring_reaches_centralized(data):
    # Column-stochastic A: W^t s → π (Σ s)ᵀ, and the count row is scaled by the same π_i, so
    # the ratios (mean, second moment) are the pooled ones without a separate weight.
    topo = directed.directed_ring(N)
    got = np.asarray(dt.gaussian_detector(data, topo, 600, SHRINK))
    np.testing.assert_allclose(got, _centralized_auroc(data), atol=2e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collaborative_gaussian_beats_local_at_every_node(seed):
    # Measured (N=8, 10 skewed normals per node, D=30): worst per-node gain 0.032 / 0.011 / 0.029,
    # mean gain 0.070 / 0.045 / 0.067 for seeds 0 / 1 / 2.
    d = dt.breast_cancer_nodes(N, NTRAIN, seed=seed)
    loc = np.asarray(dt.gaussian_detector(d, None, 0, SHRINK))
    col = np.asarray(dt.gaussian_detector(d, rj.topology.ring(N), 400, SHRINK))
    assert np.all(col > loc + 0.005), (col - loc).min()
    assert col.mean() > loc.mean() + 0.03
    assert col.min() > loc.min() + 0.05


def test_collaborative_autoencoder_beats_local_at_every_node(data):
    # D-SGD (ATC, ring, 300 rounds, lr 0.05) against the same steps with an identity channel.
    # Measured at seed 0: per-node gain ≥ 0.015 (≥ 0.004 when compiled at LLVM level 0, as the
    # suite is: float rounding alone moves it by 0.01), mean 0.919 → 0.951, worst 0.890 → 0.946.
    # Over seeds 1, 2 the mean (+0.02, +0.045) and worst-node (+0.045, +0.13) gains hold but the
    # smallest per-node gain is within ±0.01 of zero (see the report in docs/applications.md).
    h = 4
    loc = dt.train_autoencoder(data, None, hidden=h, rounds=300, lr=0.05)
    col = dt.train_autoencoder(data, rj.topology.ring(N), hidden=h, rounds=300, lr=0.05)
    D = data.train.shape[-1]
    a_loc = np.asarray(dt.auroc(dt.reconstruction_scores(loc, data.test, D, h), data.test_label))
    a_col = np.asarray(dt.auroc(dt.reconstruction_scores(col, data.test, D, h), data.test_label))
    assert np.all(a_col > a_loc), (a_col - a_loc).min()
    assert a_col.mean() > a_loc.mean() + 0.02
    assert a_col.min() > a_loc.min() + 0.03
    # Gossip kept the models close: the collaborative nodes agree with each other far more.
    assert np.std(a_col) < 0.5 * np.std(a_loc)


def test_split_test_sets_gain_on_mean_and_worst_node():
    # Each node tests on its own share (~30 normals + 26 anomalies): the per-node AUROC's standard
    # error (~0.03) is the size of the smallest gains, so only mean and worst node are asserted.
    # Measured over seeds 0-4: mean +0.046 to +0.084, worst node +0.063 to +0.147.
    topo = rj.topology.ring(N)
    for seed in range(3):
        d = dt.breast_cancer_nodes(N, NTRAIN, seed=seed, shared_test=False)
        assert d.test.shape[1] < 100 and not np.array_equal(np.asarray(d.test[0]), np.asarray(d.test[1]))
        loc = np.asarray(dt.gaussian_detector(d, None, 0, SHRINK))
        col = np.asarray(dt.gaussian_detector(d, topo, 400, SHRINK))
        assert col.mean() > loc.mean() + 0.03 and col.min() > loc.min() + 0.04


def test_shift_offsets_every_row_of_a_node_by_one_vector():
    base = dt.breast_cancer_nodes(4, 5, seed=3)
    moved = dt.breast_cancer_nodes(4, 5, seed=3, shift=2.0)
    delta = np.asarray(moved.train - base.train)
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1], delta.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(delta[:, 0], axis=1), 2.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(moved.test - base.test)[:, 0], delta[:, 0], atol=1e-5)


def test_autoencoder_dsgd_on_complete_graph_is_centralized_gd(data):
    # Complete graph, W = 11ᵀ/N, same start: ATC D-SGD x⁺ = mean_i(x − η∇f_i(x)) = x − η∇F(x) with
    # F the pooled mean squared error (equal shard sizes): centralized gradient descent.
    import jax

    h, rounds, lr = 4, 20, 0.05
    D = data.train.shape[-1]
    got = np.asarray(dt.train_autoencoder(data, rj.topology.complete(N), hidden=h, rounds=rounds, lr=lr))
    pooled = data.train.reshape(-1, D)

    def loss(p):
        r = dt.reconstruction_scores(p[None], pooled[None], D, h)[0]
        return jnp.mean(r)

    p = dt.autoencoder_init(jax.random.PRNGKey(0), D, h)
    g = jax.jit(jax.grad(loss))
    for _ in range(rounds):
        p = p - lr * g(p)
    np.testing.assert_allclose(got, np.broadcast_to(np.asarray(p), got.shape), atol=2e-5)
