"""Fast drawn graphs (issue 13, benchmarks/dynamic_graphs.py): EL-Oracle's keyed relabelling
without a sort, and link failures drawn without a per-slot gather.

References are independent of the code under test: closed forms of E[W] and E[W^T W], exact
enumeration over the shift subsets, a dense NumPy W, chi-square tests of the labels.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

from redeem_jax.network import random_graphs as rg
from redeem_jax.network import topology as T
from redeem_jax.network import unreliable


# ------------------------------------------------------------------ swap-or-not relabelling
@pytest.mark.parametrize("n", [2, 3, 16, 4099])
def test_swap_or_not_is_a_bijection_and_inverse_inverts_it(n):
    fwd = jax.jit(jax.vmap(lambda k: rg.swap_or_not(k, jnp.arange(n), n)))
    inv = jax.jit(jax.vmap(lambda k, f: rg.swap_or_not(k, f, n, inverse=True)))
    keys = jax.random.split(jax.random.PRNGKey(n), 3)
    f = fwd(keys)
    assert np.array_equal(np.sort(np.asarray(f), axis=1), np.broadcast_to(np.arange(n), (3, n)))
    assert np.array_equal(np.asarray(inv(keys, f)), np.broadcast_to(np.arange(n), (3, n)))


def test_swap_or_not_labels_look_uniform():
    """One label's image and a pair's images over 4000 keys: chi-square against uniform (n! is
    not reached, but single and pairwise positions are what a relabelling is for)."""
    n = 16
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    pos = np.asarray(jax.vmap(lambda k: rg.swap_or_not(k, jnp.arange(n), n))(keys))
    assert chisquare(np.bincount(pos[:, 0], minlength=n)).pvalue > 1e-4
    pairs = np.bincount(pos[:, 0] * n + pos[:, 1], minlength=n * n).reshape(n, n)
    assert np.all(np.diag(pairs) == 0)
    assert chisquare(pairs[~np.eye(n, dtype=bool)]).pvalue > 1e-4


def test_keyed_tables_equal_the_elementwise_permutation():
    """The looped tables of the draw are pi(i) and pi^{-1}(a) of :func:`swap_or_not`."""
    n = 37
    k = jax.random.PRNGKey(5)
    shifts = jnp.array([1, 5, 36])
    nbr = np.asarray(rg._relabelled_circulant(k, n, shifts, "keyed"))
    pos = np.asarray(rg.swap_or_not(k, jnp.arange(n), n))
    perm = np.asarray(rg.swap_or_not(k, jnp.arange(n), n, inverse=True))
    assert np.array_equal(nbr, perm[(pos[:, None] + np.asarray(shifts)[None]) % n])


@pytest.mark.parametrize("relabel", [True, "keyed", "uniform", False])
def test_every_el_oracle_draw_is_s_regular_and_doubly_stochastic(relabel):
    n, s = 23, 4
    topo = rg.el_oracle(n, s, relabel=relabel)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    for W in np.asarray(jax.jit(jax.vmap(lambda k: unreliable.dense_mixing(n, topo.draw(0, k))))(keys), np.float64):
        A = (W > 0) & ~np.eye(n, dtype=bool)
        assert np.all(A.sum(0) == s) and np.all(A.sum(1) == s)
        np.testing.assert_allclose(W.sum(0), 1.0, atol=1e-6)
        np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-6)
        np.testing.assert_allclose(np.diag(W), 1.0 / (s + 1), atol=1e-7)
    assert rg.el_oracle(n, s).relabel == "keyed"
    with pytest.raises(ValueError):
        rg.el_oracle(n, s, relabel="sorted")


def _closed_forms(n, s):
    EW = np.eye(n) / (s + 1) + s / ((s + 1) * (n - 1)) * (np.ones((n, n)) - np.eye(n))
    return EW, EW  # E[W^T W] equals E[W] (class docstring of ELOracle)


def test_relabelling_by_any_fixed_permutation_keeps_both_moments_exactly():
    """Exact enumeration: for the keyed tables of a fixed key (any permutation P), the average of
    P C P^T and of its W^T W over all C(n-1, s) shift subsets equals the closed forms."""
    n, s = 7, 2
    k = jax.random.PRNGKey(11)
    pos = np.asarray(rg.swap_or_not(k, jnp.arange(n), n))
    perm = np.asarray(rg.swap_or_not(k, jnp.arange(n), n, inverse=True))
    subsets = list(itertools.combinations(range(1, n), s))
    EW = np.zeros((n, n))
    EWW = np.zeros((n, n))
    for c in subsets:  # host enumeration over a finite law
        W = np.eye(n) / (s + 1)
        for r in c:
            W[np.arange(n), perm[(pos + r) % n]] += 1.0 / (s + 1)
        EW += W / len(subsets)
        EWW += W.T @ W / len(subsets)
    cf, cf2 = _closed_forms(n, s)
    np.testing.assert_allclose(EW, cf, atol=1e-12)
    np.testing.assert_allclose(EWW, cf2, atol=1e-12)


def test_keyed_el_oracle_moments_by_monte_carlo():
    """E[W], E[W^T W] and the contraction E||Wx - xbar||^2 / ||x - xbar||^2 of the default draw
    against the closed forms, within 4.5 standard errors (max over entries, 3000 draws)."""
    n, s, R = 9, 3, 3000
    topo = rg.el_oracle(n, s)
    keys = jax.random.split(jax.random.PRNGKey(3), R)
    Ws = np.asarray(jax.vmap(lambda k: unreliable.dense_mixing(n, topo.draw(0, k)))(keys), np.float64)
    cf, cf2 = _closed_forms(n, s)
    for samples, ref in ((Ws, cf), (np.einsum("rba,rbc->rac", Ws, Ws), cf2)):
        mean, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(R)
        z = np.abs(mean - ref) / np.maximum(se, 1e-12)
        assert z.max() < 4.5, z.max()
    x = np.random.default_rng(0).normal(size=n)
    x -= x.mean()
    ratio = np.sum((Ws @ x) ** 2, axis=1) / np.sum(x**2)
    assert abs(ratio.mean() - rg.el_oracle_contraction(n, s)) < 4 * ratio.std(ddof=1) / np.sqrt(R)


def test_traced_fan_out_uses_the_keyed_relabelling():
    """A swept s (s_max) draws the same relabelled graphs as the static draw at s = s_max."""
    from redeem_jax.core import hyper

    n = 12
    static = rg.el_oracle(n, 3)
    traced = rg.el_oracle(n, hyper("topology.s", 3), s_max=3)
    k = jax.random.PRNGKey(4)
    Ws = static.sample_mixing_matrix(0, k)
    Wt = traced.sample_mixing_matrix(0, k, hp={"topology.s": jnp.float32(3)})
    np.testing.assert_allclose(Ws, Wt, atol=1e-7)


# ------------------------------------------------------------------ link failures
def _circulant(n, s):
    """A directed circulant (i receives from i+1..i+s): every pair has exactly one slot."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(n), s + 1)
    cols = (rows + np.tile(np.arange(s + 1), n)) % n
    W = sp.csr_matrix((np.full(rows.size, 1.0 / (s + 1)), (rows, cols)), shape=(n, n))
    return T.from_mixing_matrices([W], name=f"circulant{s}")


@pytest.mark.parametrize("make", [lambda: _circulant(11, 3), lambda: T.ring(9), lambda: T.get("torus", 16)])
def test_pair_numbering_and_the_reshaped_draw_equal_the_gathered_draw(make):
    """Every slot's pair holds its two ends; both directions of an undirected link share one draw;
    on a base with one slot per pair the draw reshapes the pair draws, equal to the gather."""
    base = make()
    topo = unreliable.link_failures(base, 0.5)
    rows = np.repeat(np.arange(topo.n), topo.K).reshape(topo.n, topo.K)
    pr = topo._pairs[topo._eid]
    m = topo._mask
    assert np.all(pr[..., 0][m] == np.minimum(rows, topo._nbr)[m]) and np.all(
        pr[..., 1][m] == np.maximum(rows, topo._nbr)[m]
    )
    assert topo._eid_is_slot == (base.name.startswith("circulant"))
    for seed in range(3):
        k = jax.random.PRNGKey(seed)
        nbr, w, sw, live = (np.asarray(a) for a in jax.jit(topo.draw)(0, k))
        up = np.asarray(topo.link_up(k))[topo._eid]
        np.testing.assert_array_equal(live, m & up)
        W = unreliable.dense_mixing(topo.n, (nbr, w, sw, live))
        A = np.asarray(W) > 0
        np.fill_diagonal(A, False)
        Wb = np.asarray(base.mixing_matrix()) > 0
        np.fill_diagonal(Wb, False)
        np.testing.assert_allclose(np.asarray(W).sum(1), 1.0, atol=1e-6)
        if np.array_equal(Wb, Wb.T):  # undirected base: a link is up both ways or neither
            assert np.array_equal(A, A.T)
            np.testing.assert_allclose(np.asarray(W).sum(0), 1.0, atol=1e-6)  # "self": doubly stochastic
    # a directed base loses column sums under failures even with policy "self"
    assert topo.is_doubly_stochastic == bool(np.array_equal(Wb, Wb.T))


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_link_up_rate_is_p_to_16_bits_and_pairs_are_independent(p):
    """P(up) = ceil(p 2^16) / 2^16 within 4 SE over 200 draws of 401 pairs (an odd m: the last
    word is half used); the two pairs sharing a 32-bit word (e and e + ceil(m/2)) are
    independent: P(both up) = P(up)^2 within 4 SE."""
    topo = unreliable.link_failures(_circulant(401, 1), p)
    assert topo.m == 401
    keys = jax.random.split(jax.random.PRNGKey(7), 200)
    up = np.asarray(jax.jit(jax.vmap(topo.link_up))(keys))
    q = np.ceil(p * 65536) / 65536
    if p in (0.0, 1.0):
        assert np.all(up == bool(p))
        return
    n_obs = up.size
    assert abs(up.mean() - q) < 4 * np.sqrt(q * (1 - q) / n_obs)
    half = (topo.m + 1) // 2
    both = up[:, : topo.m - half] & up[:, half:]
    assert abs(both.mean() - q * q) < 4 * np.sqrt(q * q * (1 - q * q) / both.size)
    # the per-pair frequencies are homogeneous (no pair is favoured): chi-square on the counts
    counts = up.sum(0)
    z = (counts - 200 * q) / np.sqrt(200 * q * (1 - q))
    assert abs(np.mean(z**2) - 1.0) < 4 * np.sqrt(2.0 / topo.m)
