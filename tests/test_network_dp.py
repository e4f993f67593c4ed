"""Exact network-DP leakage of gossip (redeem_jax.privacy.network_dp) against FIELD_NOTES facts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from redeem_jax import topology
from redeem_jax.privacy import network_dp as nd

from _configs import load_experiment


@pytest.fixture(scope="module")
def ring16():
    return topology.ring(16)


def _offdiag(L):
    return L[~np.eye(L.shape[0], dtype=bool)]


@pytest.mark.parametrize("noise,value", [("once", "once"), ("fresh", "once"), ("fresh", "every_step")])
@pytest.mark.parametrize("observe", ["neighbors", "self"])
def test_leakage_in_unit_interval(noise, value, observe):
    top = topology.erdos_renyi(12, 0.3, seed=1)
    L = nd.leakage_matrix(nd.mixing_sequence(top, 6), noise=noise, observe=observe, value=value)
    assert L.shape == (12, 12)
    assert np.all(np.isfinite(L))
    assert np.all(L >= 0.0) and np.all(L <= 1.0)
    np.testing.assert_array_equal(np.diag(L), 1.0)


def test_noise_once_neighbor_sees_value_directly(ring16):
    # at t = 0 a neighbour receives z_u + eta_u: exactly local DP
    L = nd.leakage_matrix(nd.mixing_sequence(ring16, 1))
    for v in range(16):
        for u in ((v - 1) % 16, (v + 1) % 16):
            assert L[u, v] == pytest.approx(1.0, abs=1e-12)
        assert np.all(L[[(v + k) % 16 for k in range(2, 15)], v] == 0.0)


def test_complete_observation_is_full_ldp():
    # complete graph: everyone sees every z_u + eta_u at t = 0
    top = topology.complete(8)
    for noise in ("once", "fresh"):
        L = nd.leakage_matrix(nd.mixing_sequence(top, 3), noise=noise)
        np.testing.assert_allclose(L, 1.0, atol=1e-10)


def test_muffliato_formula_underestimates_noise_once(ring16):
    # FIELD_NOTES: 16-cycle, T = 5, noise once: distance 3 exactly reconstructible, formula 0.208
    W = nd.mixing_sequence(ring16, 5)
    exact = nd.leakage_matrix(W, noise="once")
    formula = nd.muffliato_per_step(W, noise="once")
    v, u = 0, 3
    assert exact[u, v] == pytest.approx(1.0, abs=1e-9)
    assert formula[u, v] == pytest.approx(0.208, abs=5e-4)
    under = nd.underestimated_pairs(exact, formula)
    assert under[u, v]
    # every pair at distance 3..5 is underestimated; the exact figure is what must be reported
    D = nd.graph_distances(ring16)
    assert np.all(under[(D >= 3) & (D <= 5)])
    assert np.all(exact[(D >= 3) & (D <= 5)] > formula[(D >= 3) & (D <= 5)] + 0.5)


def test_exact_equals_full_ldp_when_view_invertible_without_own_knowledge(ring16):
    # the same reconstruction holds even if v does not subtract its own noise (FIELD_NOTES (B^+B)_uu)
    W = nd.mixing_sequence(ring16, 5)
    L = nd.leakage_matrix(W, noise="once", observer_knows_own=False)
    D = nd.graph_distances(ring16)
    np.testing.assert_allclose(L[(D >= 1) & (D <= 5)], 1.0, atol=1e-9)
    assert np.all(L[D > 5] == 0.0)


def test_fresh_noise_amplification_numbers():
    # FIELD_NOTES: cycle, T = 20, fresh noise (value re-contributed every step): 0.60, 0.24, 0.099, 0.038
    res = nd.leakage_vs_distance(topology.ring(16), 20, noise="fresh", value="every_step")
    got = [res[d]["mean"] for d in (1, 2, 3, 4)]
    np.testing.assert_allclose(got, [0.6016, 0.2431, 0.0988, 0.0377], atol=1e-4)
    for d in (1, 2, 3, 4):
        assert res[d]["max"] - res[d]["min"] < 1e-9


@pytest.mark.parametrize("value", ["once", "every_step"])
@pytest.mark.parametrize("observe", ["neighbors", "self"])
def test_fresh_leakage_decreases_with_distance(value, observe):
    res = nd.leakage_vs_distance(topology.ring(16), 12, noise="fresh", value=value, observe=observe)
    means = [res[d]["mean"] for d in sorted(res) if d <= 8]
    assert all(a > b for a, b in zip(means[1:], means[2:])), means
    assert means[0] >= means[1]


@pytest.mark.parametrize("noise,value", [("once", "once"), ("fresh", "every_step")])
def test_ring_rotation_symmetry(noise, value):
    n = 12
    L = nd.leakage_matrix(nd.mixing_sequence(topology.ring(n), 7), noise=noise, value=value)
    idx = np.arange(n)
    for k in range(n):
        vals = L[idx, (idx + k) % n]
        np.testing.assert_allclose(vals, vals[0], atol=1e-8)
    # reflection too: depends only on the distance
    for k in range(1, n):
        np.testing.assert_allclose(L[0, k], L[0, n - k], atol=1e-8)


@pytest.mark.parametrize("noise,value", [("once", "once"), ("fresh", "once"), ("fresh", "every_step")])
def test_no_leakage_before_information_arrives(noise, value):
    top = topology.torus(5)
    D = nd.graph_distances(top)
    for T in (1, 2, 3):
        W = nd.mixing_sequence(top, T)
        # neighbours' messages of rounds < T carry information from distance <= T
        L = nd.leakage_matrix(W, noise=noise, value=value)
        assert np.all(L[D > T] == 0.0)
        M = nd.muffliato_per_step(W, noise=noise, value=value)
        assert np.all(M[D > T] == 0.0)
        # own state after T rounds: distance <= T
        S = nd.leakage_matrix(W, noise=noise, value=value, observe="self")
        assert np.all(S[D > T] == 0.0)


def test_disconnected_observer_gets_nothing():
    # Topology refuses disconnected graphs, so build the block-diagonal mixing matrices directly
    import scipy.linalg

    w3 = topology.ring(3).mixing_matrix()
    W = np.stack([scipy.linalg.block_diag(w3, w3)] * 10)
    for noise, value in [("once", "once"), ("fresh", "once"), ("fresh", "every_step")]:
        L = nd.leakage_matrix(W, noise=noise, value=value)
        assert np.all(L[:3, 3:] == 0.0) and np.all(L[3:, :3] == 0.0)
        assert np.all(L[:3, :3] > 0.0)
        M = nd.muffliato_per_step(W, noise=noise, value=value)
        assert np.all(M[:3, 3:] == 0.0) and np.all(M[3:, :3] == 0.0)


def test_time_varying_topology_uses_each_round():
    top = topology.one_peer_exponential(8)
    W = nd.mixing_sequence(top, 3)
    assert not np.allclose(W[0], W[1])
    L = nd.leakage_matrix(W, noise="once")
    assert np.all((L >= 0) & (L <= 1))
    # round 0 only links each node to one peer: with T = 1 exactly one other node leaks fully
    L1 = nd.leakage_matrix(W[:1], noise="once")
    assert np.all(np.sum(_offdiag(L1).reshape(8, 7) > 0.5, axis=1) <= 2)


def test_fresh_once_leaks_less_than_noise_once(ring16):
    W = nd.mixing_sequence(ring16, 5)
    once = nd.leakage_matrix(W, noise="once")
    fresh = nd.leakage_matrix(W, noise="fresh")
    assert np.all(fresh <= once + 1e-9)


def test_epsilon_matrix_monotone_and_consistent():
    L = np.array([[1.0, 0.0, 0.25], [0.5, 1.0, 1.0], [0.1, 0.04, 1.0]])
    for acc in ("rdp", "pld", "analytic"):
        E = nd.epsilon_matrix(L, sigma_over_delta=2.0, delta=1e-5, accountant=acc)
        assert np.all(np.isinf(np.diag(E)))
        assert E[0, 1] == 0.0
        assert 0.0 < E[2, 1] < E[2, 0] < E[0, 2] < E[1, 0] < E[1, 2]
    # leakage 1 = the plain Gaussian mechanism with noise multiplier sigma / Delta
    import dp_accounting

    ref = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.GaussianDpEvent(2.0)).get_epsilon(1e-5)
    E = nd.epsilon_matrix(L, 2.0, 1e-5)
    assert E[1, 2] == pytest.approx(ref, rel=1e-9)
    # leakage 0.25 at sigma = 1 is noise multiplier 2
    E1 = nd.epsilon_matrix(L, 1.0, 1e-5)
    assert E1[0, 2] == pytest.approx(ref, rel=1e-9)
    # analytic (exact, Balle & Wang 2018) <= PLD <= RDP
    a = nd.gaussian_epsilon(0.5, 1e-5, "analytic")
    p = nd.gaussian_epsilon(0.5, 1e-5, "pld")
    r = nd.gaussian_epsilon(0.5, 1e-5, "rdp")
    assert a <= p + 1e-3 and p <= r
    assert a == pytest.approx(p, rel=1e-2)


def test_pld_at_a_huge_leakage_is_bounded_by_the_accountant_limit():
    """mu = 1e4 (noise multiplier 1e-4) used to ask dp-accounting for a multi-TiB PLD grid;
    now the PLD path refuses the grid before allocating and reports the RDP bound, which lies
    above the exact Gaussian epsilon (Balle & Wang 2018, an independent closed form)."""
    from redeem_jax.privacy.analysis.accounting import PLDFallbackWarning

    with pytest.warns(PLDFallbackWarning, match="noise_multiplier=0.0001"):
        p = nd.gaussian_epsilon(1e4, 1e-5, "pld")
    assert np.isfinite(p) and p >= nd.gaussian_epsilon(1e4, 1e-5, "analytic")


def test_invalid_arguments():
    W = nd.mixing_sequence(topology.ring(6), 2)
    with pytest.raises(ValueError):
        nd.leakage_matrix(W, noise="sometimes")
    with pytest.raises(ValueError):
        nd.leakage_matrix(W, observe="all")
    with pytest.raises(ValueError):
        nd.leakage_matrix(W, noise="once", value="every_step")
    with pytest.raises(ValueError):
        nd.leakage_matrix(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        nd.epsilon_matrix(np.ones((2, 2)), 1.0, delta=1.5)
    with pytest.raises(ValueError):
        nd.epsilon_matrix(np.ones((2, 2)), 0.0, delta=1e-5)


def test_experiment_quick(tmp_path):
    load_experiment("network_dp").main(["--quick", "--out", str(tmp_path)])
    js = tmp_path / "network_dp.json"
    png = tmp_path / "network_dp.png"
    assert js.exists() and png.exists() and png.stat().st_size > 10_000
    res = json.loads(js.read_text())
    ring = res["results"]["ring"]
    assert ring["once"]["exact"]["3"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert ring["once"]["muffliato"]["3"]["mean"] == pytest.approx(0.208, abs=5e-4)
    assert res["checks"]["all_passed"]
