"""Closed forms in `theory` against the topologies' numerical spectra."""

import math

import numpy as np
import pytest

from redeem_jax import gossip as G
from redeem_jax import theory as th
from redeem_jax import topology as T


def test_ring_reference_values():
    # FIELD_NOTES reference values (closed form, no PRNG involved).
    for n, v in [(8, 0.804738), (16, 0.949253), (32, 0.987190)]:
        assert th.rho_ring(n) == pytest.approx(v, abs=5e-7)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 16, 32, 100])
def test_ring(n):
    assert T.ring(n).rho() == pytest.approx(th.rho_ring(n), abs=1e-6)
    assert T.ring(n).spectral_gap() == pytest.approx(th.spectral_gap(th.rho_ring(n)), abs=1e-6)


@pytest.mark.parametrize("m", [3, 4, 5, 8, 10])
def test_torus(m):
    assert T.torus(m).spectral_gap() == pytest.approx(1 - th.rho_torus(m), abs=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_hypercube(k):
    assert T.hypercube(2**k).spectral_gap() == pytest.approx(1 - th.rho_hypercube(k), abs=1e-6)


@pytest.mark.parametrize("n", [4, 8, 16, 64, 256, 6, 12, 100])
def test_exponential_even_n(n):
    assert T.exponential(n).spectral_gap() == pytest.approx(1 - th.rho_exponential(n), abs=1e-6)
    tau = math.ceil(math.log2(n))
    assert th.rho_exponential(n) == pytest.approx(1 - 2 / (1 + tau))


@pytest.mark.parametrize("n", [5, 7, 9, 33])
def test_exponential_odd_n_is_upper_bound(n):
    assert T.exponential(n).rho() <= th.rho_exponential(n) + 1e-9


def test_complete_and_one_peer():
    for n in (2, 5, 9):
        assert T.complete(n).rho() == pytest.approx(th.rho_complete(n), abs=1e-9)
    for k in (1, 3, 4, 6):
        assert th.one_peer_exact_rounds(2**k) == k == T.one_peer_exponential(2**k).period
    with pytest.raises(ValueError, match="power of 2"):
        th.one_peer_exact_rounds(12)


def test_rho_dispatch():
    for topo in (
        T.ring(10),
        T.torus(5),
        T.hypercube(16),
        T.exponential(32),
        T.complete(4),
        T.one_peer_exponential(16),
        T.one_peer_exponential(12),
        T.star(6),
    ):
        assert th.rho(topo) == pytest.approx(topo.effective_rho(), abs=1e-6)
    lazy = T.from_adjacency(T.ring(6).adjacency, weights=0.5 * np.eye(6) + 0.25 * T.ring(6).adjacency)
    assert th.rho(lazy) == pytest.approx(lazy.rho())  # not mistaken for the MH ring


def test_consensus_bound_holds_every_step():
    topo = T.erdos_renyi(20, 0.25, seed=4)
    x = np.random.default_rng(0).normal(size=(20, 3))
    d0 = float(G.consensus_distance(x))
    W = topo.mixing_matrix()
    for t in range(1, 30):
        x = W @ x
        assert float(G.consensus_distance(x)) <= th.consensus_bound(topo.rho(), t, d0) * (1 + 1e-5)
    np.testing.assert_allclose(th.consensus_bound(0.5, np.arange(3), 2.0), [2.0, 0.5, 0.125])


def test_invalid():
    with pytest.raises(ValueError, match="m >= 3"):
        th.rho_torus(2)
    with pytest.raises(ValueError, match="n must be >= 1"):
        th.rho_ring(0)


def test_kappa_bounds_sit_above_the_universal_lower_bound():
    for n in (7, 10, 25, 50):
        for f in range(1, (n - 1) // 2):
            lo = th.kappa_lower_bound(n, f)
            for rule in ("trimmed_mean", "median", "geometric_median", "krum"):
                assert th.kappa_bound(rule, n, f) >= lo
            assert th.kappa_bound("mean", n, f) == float("inf")
    assert th.kappa_bound("mean", 10, 0) == 0.0
    assert th.kappa_bound("nnm+krum", 10, 2) == 8 * 2 / 8 * (th.kappa_bound("krum", 10, 2) + 1)
    assert th.kappa_bound("bulyan", 10, 1) is None


def test_breakdown_point_and_error_bound():
    assert th.breakdown_point(0.0) == 0.5
    assert abs(th.breakdown_point(1.0) - 1 / 3) < 1e-12
    # The error bound blows up exactly at the breakdown point f/n = 1/(2 + B²).
    n, B = 30, 1.0
    f_break = int(n * th.breakdown_point(B))
    assert th.robust_error_lower_bound(n, f_break, 1.0, B) == float("inf")
    assert th.robust_error_lower_bound(n, f_break - 1, 1.0, B) < float("inf")
    with pytest.raises(ValueError):
        th.breakdown_point(-1.0)
