"""Gossip reconstruction attack (redeem_jax.privacy.reconstruction; El Mrini, Cyffers & Bellet 2024).

Properties, not golden numbers: the simulated view is exactly the linear map network_dp builds;
identifiable non-neighbours are reconstructed to 1e-6; nodes reported non-identifiable admit a
second private vector with the same view; Muffliato noise (drawn once, large sigma) defeats the
attack; the identifiable set never shrinks with more rounds; identifiable <=> network_dp's exact
leakage is full local DP.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from redeem_jax import topology
from redeem_jax.privacy import network_dp as nd
from redeem_jax.privacy import reconstruction as rc


def _z(n, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _non_neighbours(top, attackers):
    # nodes no attacker ever hears from directly, attackers excluded
    adj = np.asarray(top.adjacency, dtype=bool)
    heard = np.any(adj[np.asarray(attackers)], axis=0)
    out = ~heard
    out[np.asarray(attackers)] = False
    return out


@pytest.mark.parametrize(
    "noise,value,observe",
    [
        ("once", "once", "neighbors"),
        ("fresh", "once", "neighbors"),
        ("fresh", "every_step", "neighbors"),
        ("once", "once", "self"),
        ("fresh", "every_step", "self"),
    ],
)
def test_simulated_view_is_the_linear_map(noise, value, observe):
    # the gossip run and network_dp's observation operator agree row for row: y = A z + N eta
    W = nd.mixing_sequence(topology.erdos_renyi(10, 0.35, seed=2), 4)
    S = [1, 6]
    z = _z(10, 2)
    sigma = 0.7
    view = rc.simulate_gossip(W, z, S, sigma=sigma, seed=3, noise=noise, observe=observe, value=value)
    rng = np.random.default_rng(3)
    draws = 1 if noise == "once" else 4
    eta = sigma * rng.standard_normal((draws, 10, 2))  # same draws as the simulation
    A, N = rc.observation_operator(W, S, noise=noise, observe=observe, value=value)
    np.testing.assert_allclose(view.y, A @ z + N @ eta.reshape(-1, 2), atol=1e-12)
    np.testing.assert_array_equal(view.own_values, z[S])


@pytest.mark.parametrize(
    "name,top,S,T",
    [
        ("ring", topology.ring(10), [0, 1], 6),
        ("path", topology.path(8), [0, 7], 5),
        ("erdos_renyi", topology.erdos_renyi(12, 0.3, seed=1), [0, 5], 3),
    ],
)
def test_noiseless_reconstruction_of_non_neighbours(name, top, S, T):
    W = nd.mixing_sequence(top, T)
    n = W.shape[1]
    z = _z(n)
    z_hat, ident = rc.reconstruct(W, S, rc.simulate_gossip(W, z, S))
    far = _non_neighbours(top, S)
    assert np.any(ident & far), "the attack must reach some non-neighbour on this graph"
    err = rc.relative_errors(z_hat, z)
    assert np.max(err[ident]) < 1e-6
    np.testing.assert_array_equal(ident, rc.identifiable(W, S))


def test_dgd_proxy_every_step_reconstructs():
    # value injected every round (the D-GD proxy of network_dp): still a linear system
    top = topology.ring(10)
    W = nd.mixing_sequence(top, 6)
    z = _z(10)
    S = [0, 1]
    kw = dict(noise="fresh", value="every_step")
    z_hat, ident = rc.reconstruct(W, S, rc.simulate_gossip(W, z, S, **kw), **kw)
    assert np.any(ident & _non_neighbours(top, S))
    assert np.max(rc.relative_errors(z_hat, z)[ident]) < 1e-6


def test_non_identifiable_nodes_are_really_hidden():
    # 3x3 torus, one attacker: its view never separates some nodes, whatever T
    top = topology.torus(3, 3)
    W = nd.mixing_sequence(top, 6)
    S = [0]
    ident = rc.identifiable(W, S)
    hidden = np.flatnonzero(~ident)
    assert hidden.size > 0
    A, _ = rc.observation_operator(W, S)
    unknown = np.setdiff1d(np.arange(9), S)
    null = scipy.linalg.null_space(A[:, unknown])  # [|U|, k]
    full = np.zeros((9, null.shape[1]))
    full[unknown] = null
    # every hidden node is moved by some null direction, every identified one by none
    assert np.all(np.linalg.norm(full[hidden], axis=1) > 1e-6)
    assert np.all(np.linalg.norm(full[ident], axis=1) < 1e-8)
    # two different private vectors, identical gossip views (run by the simulator, not A)
    z = _z(9)
    z2 = z + 5.0 * full @ np.ones((null.shape[1], 3))
    v1, v2 = rc.simulate_gossip(W, z, S), rc.simulate_gossip(W, z2, S)
    np.testing.assert_allclose(v1.y, v2.y, atol=1e-10)
    assert np.all(np.linalg.norm(z2[hidden] - z[hidden], axis=1) > 1e-3)


def test_muffliato_noise_defeats_the_attack():
    top = topology.erdos_renyi(12, 0.3, seed=1)
    W = nd.mixing_sequence(top, 3)
    S = [0, 5]
    z = _z(12, 4)
    noiseless = rc.relative_errors(rc.reconstruct(W, S, rc.simulate_gossip(W, z, S))[0], z)
    noisy = rc.relative_errors(rc.reconstruct(W, S, rc.simulate_gossip(W, z, S, sigma=20.0, seed=1))[0], z)
    others = np.setdiff1d(np.arange(12), S)
    assert np.max(noiseless[others]) < 1e-6
    # noise once: the identifiable nodes come back as z_u + eta_u, ~sigma/|z_u| off
    assert np.median(noisy[others]) > 5.0
    np.testing.assert_array_equal(noisy[S], 0.0)


@pytest.mark.parametrize(
    "top,S", [(topology.ring(12), [0]), (topology.path(9), [4]), (topology.erdos_renyi(14, 0.2, seed=3), [2, 9])]
)
def test_identifiable_set_never_shrinks_with_rounds(top, S):
    prev = None
    W = nd.mixing_sequence(top, 9)
    for T in range(1, 10):
        cur = rc.identifiable(W[:T], S)
        if prev is not None:
            assert np.all(cur[prev]), f"T={T} lost nodes {np.flatnonzero(prev & ~cur)}"
        prev = cur
    assert prev.sum() > len(S) + 2  # and it did grow


def test_identifiable_matches_exact_network_dp_leakage():
    # one attacker, noise once: u identifiable <=> the exact leakage u -> v is full local DP
    top = topology.erdos_renyi(10, 0.3, seed=4)
    W = nd.mixing_sequence(top, 4)
    L = nd.leakage_matrix(W, noise="once")
    for v in (0, 3, 7):
        np.testing.assert_array_equal(rc.identifiable(W, [v]), L[:, v] > 1 - 1e-6)


def test_bad_input():
    W = nd.mixing_sequence(topology.ring(6), 3)
    z = _z(6)
    with pytest.raises(ValueError, match="at least one"):
        rc.identifiable(W, [])
    with pytest.raises(ValueError, match="attacker ids"):
        rc.simulate_gossip(W, z, [6])
    with pytest.raises(ValueError, match="attacker ids"):
        rc.reconstruct(W, [-1], rc.GossipView(np.zeros((1, 3)), np.zeros((1, 3))))
    with pytest.raises(ValueError, match="z must be"):
        rc.simulate_gossip(W, z[:5], [0])
    with pytest.raises(ValueError, match=r"\[T, n, n\]"):
        rc.identifiable(W[:, :5], [0])
    view = rc.simulate_gossip(W, z, [0])
    with pytest.raises(ValueError, match="view.y"):
        rc.reconstruct(W, [0], view._replace(y=view.y[:-1]))
    with pytest.raises(ValueError, match="every_step"):
        rc.simulate_gossip(W, z, [0], value="every_step")  # needs noise="fresh", as in network_dp
