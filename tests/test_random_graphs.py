"""Random graphs drawn every round (redeem_jax.network.random_graphs): EL-Oracle / EL-Local
(de Vos et al. 2023), randomized gossip (Boyd et al. 2006), random k-out peer sampling.

References are independent of the code under test: exact enumeration of each distribution in
NumPy (small n), the closed forms, and Monte Carlo over the jitted draws (fixed seeds,
tolerances in standard errors computed from the samples)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.network import random_graphs as rg
from redeem_jax.network.dynamic import is_drawn


def _chorded_ring(n=6):
    """A ring with one chord (0, n/2): degrees 3 and 2, so irregular-degree formulas are exercised."""
    A = np.zeros((n, n), bool)
    i = np.arange(n)
    A[i, (i + 1) % n] = A[(i + 1) % n, i] = True
    A[0, n // 2] = A[n // 2, 0] = True
    return rj.topology.from_adjacency(A, name="chorded_ring")


MODELS = {
    "el_oracle": lambda: rg.el_oracle(6, 2),
    "el_local": lambda: rg.el_local(6, 2),
    "matching": lambda: rg.random_matching(_chorded_ring()),
    "pairwise": lambda: rg.pairwise(_chorded_ring()),
    "k_out": lambda: rg.k_out(_chorded_ring(), 2),
    "k_out_star": lambda: rg.k_out(rj.topology.star(6), 2),  # leaves have degree 1 < k
}
T_MC = 4000


def _dense_batch(topo, keys):
    """Dense W of each draw, [T, n, n] (row i: what node i receives)."""

    def one(k):
        nbr, w, sw, m = topo.draw(jnp.int32(0), k)
        return rg._dense_w(nbr, w, sw, m)

    return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)


_CACHE = {}


def _samples(name):
    if name not in _CACHE:
        topo = MODELS[name]()
        keys = jax.random.split(jax.random.PRNGKey(2023), T_MC)
        _CACHE[name] = (topo, _dense_batch(topo, keys))
    return _CACHE[name]


# ------------------------------------------------------------------ structure of each draw
@pytest.mark.parametrize("name", list(MODELS))
def test_draw_structure(name):
    topo = MODELS[name]()
    assert is_drawn(topo)
    n, K = topo.n, topo.K
    for r in range(5):
        nbr, w, sw, m = (np.asarray(a) for a in topo.draw(jnp.int32(r), jax.random.PRNGKey(r)))
        assert nbr.shape == w.shape == m.shape == (n, K) and sw.shape == (n,)  # K fixed
        assert nbr.dtype == np.int32 and w.dtype == np.float32 and m.dtype == bool
        rows = np.arange(n)[:, None]
        assert np.all(nbr[m] != np.broadcast_to(rows, nbr.shape)[m])  # no self loops
        assert np.all(nbr[~m] == np.broadcast_to(rows, nbr.shape)[~m])  # padding -> self
        assert np.all(w[~m] == 0)
        for i in range(n):  # distinct senders
            assert len(set(nbr[i][m[i]])) == m[i].sum()
        deg_in = m.sum(1)
        np.testing.assert_allclose(w.sum(1) + sw, 1, atol=1e-6)  # row-stochastic
        np.testing.assert_allclose(w[m], np.repeat(sw, K).reshape(n, K)[m], atol=1e-7)  # equal weights
        np.testing.assert_allclose(sw, 1 / (1 + deg_in), atol=1e-6)
        W = topo.sample_mixing_matrix(r, jax.random.PRNGKey(r))
        deg_out = (W - np.diag(np.diag(W)) > 0).sum(0)
        if name == "el_oracle":
            assert np.all(deg_in == 2) and np.all(deg_out == 2)
        if name == "el_local":
            assert np.all(deg_out == 2) and K == n - 1
        if name in ("matching", "pairwise"):
            np.testing.assert_allclose(W, W.T)  # pairs average
            assert K == 1 and np.all(np.isin(sw, (0.5, 1.0)))
            A = topo.base.adjacency
            assert np.all(A[np.arange(n)[m[:, 0]], nbr[m[:, 0], 0]])  # base edges only
            if name == "pairwise":
                assert deg_in.sum() == 2
        if name.startswith("k_out"):
            A = topo.base.adjacency
            assert np.all(deg_in == np.minimum(2, A.sum(1)))
            assert np.all(A[np.broadcast_to(rows, nbr.shape)[m], nbr[m]])
        if topo.is_doubly_stochastic:
            np.testing.assert_allclose(W.sum(0), 1, atol=1e-6)


def test_k_out_and_el_local_are_not_doubly_stochastic():
    for name in ("el_local", "k_out", "k_out_star"):
        topo, Ws = _samples(name)
        assert not topo.is_doubly_stochastic
        assert np.abs(Ws.sum(1) - 1).max() > 0.1  # column sums vary


def test_same_key_same_graph_and_keys_vary():
    for name in MODELS:
        topo = MODELS[name]()
        a = topo.sample_mixing_matrix(0, jax.random.PRNGKey(7))
        b = topo.sample_mixing_matrix(9, jax.random.PRNGKey(7))  # round unused
        np.testing.assert_array_equal(a, b)
        others = [topo.sample_mixing_matrix(0, jax.random.PRNGKey(s)) for s in range(8, 14)]
        assert any(not np.array_equal(a, o) for o in others)


def test_draw_under_jit_with_traced_round_traces_once():
    for name in MODELS:
        topo, traces = MODELS[name](), []

        @jax.jit
        def f(r, k):
            traces.append(1)
            return topo.draw(r, k)

        for r in range(4):
            jax.block_until_ready(f(jnp.int32(r), jax.random.PRNGKey(r)))
        assert len(traces) == 1, name


# ------------------------------------------------------------------ Monte Carlo vs closed forms
@pytest.mark.parametrize("name", list(MODELS))
def test_expected_mixing_matrix_matches_monte_carlo(name):
    topo, Ws = _samples(name)
    EW = topo.expected_mixing_matrix()
    mean = Ws.mean(0)
    se = Ws.std(0, ddof=1) / math.sqrt(len(Ws))
    assert np.all(np.abs(mean - EW) <= 4 * se + 1e-6), np.abs(mean - EW).max()
    np.testing.assert_allclose(EW.sum(1), 1, atol=1e-12)
    if topo.is_doubly_stochastic:
        np.testing.assert_allclose(EW.sum(0), 1, atol=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
def test_mean_square_contraction_matches_monte_carlo_and_lambda_bounds_it(name):
    topo, Ws = _samples(name)
    n = topo.n
    P = np.eye(n) - np.ones((n, n)) / n
    M = topo.second_moment()
    lam = rg.mean_square_contraction(topo)
    np.testing.assert_allclose(M @ np.ones(n), 0, atol=1e-12)  # W 1 = 1
    assert np.linalg.eigvalsh((M + M.T) / 2).min() > -1e-12  # a second moment
    rng = np.random.default_rng(0)
    for x in (rng.normal(size=n), np.arange(n, dtype=float) ** 2):
        d2 = float(x @ P @ x)
        exact = float(x @ M @ x) / d2
        r = np.sum((np.einsum("ij,tjk,k->ti", P, Ws, x)) ** 2, axis=1) / d2
        se = r.std(ddof=1) / math.sqrt(len(r))
        assert abs(r.mean() - exact) <= 3 * se + 1e-9, (name, r.mean(), exact, se)
        assert exact <= lam + 1e-12
    assert 0 < lam < 1


def test_doubly_stochastic_draws_keep_the_mean_exactly():
    x = np.random.default_rng(1).normal(size=(6, 3))
    for name in ("el_oracle", "matching", "pairwise"):
        _, Ws = _samples(name)
        np.testing.assert_allclose((Ws @ x).mean(1), np.broadcast_to(x.mean(0), (T_MC, 3)), atol=1e-6)
    _, Ws = _samples("el_local")  # the mean drifts
    assert np.abs((Ws @ x).mean(1) - x.mean(0)).max() > 0.05


# ------------------------------------------------------------------ exact enumeration references
def _moments(Ws, probs=None):
    """E[W] and E[W^T (I-J) W] of a finite law (uniform when probs is None)."""
    Ws = np.asarray(Ws, float)
    probs = np.full(len(Ws), 1 / len(Ws)) if probs is None else np.asarray(probs)
    n = Ws.shape[1]
    P = np.eye(n) - np.ones((n, n)) / n
    return np.einsum("t,tij->ij", probs, Ws), np.einsum("t,tji,jk,tkl->il", probs, Ws, P, Ws)


@pytest.mark.parametrize("n,s", [(3, 1), (4, 1), (4, 2), (5, 2), (5, 3)])
def test_el_local_closed_form_equals_enumeration(n, s):
    choices = [list(itertools.combinations([j for j in range(n) if j != i], s)) for i in range(n)]
    Ws = []
    for combo in itertools.product(*choices):  # every push pattern, equally likely
        A = np.zeros((n, n))
        for j, ts in enumerate(combo):
            A[list(ts), j] = 1
        Ws.append((A + np.eye(n)) / (1 + A.sum(1))[:, None])
    EW, M = _moments(Ws)
    topo = rg.el_local(n, s)
    np.testing.assert_allclose(topo.expected_mixing_matrix(), EW, atol=1e-12)
    np.testing.assert_allclose(topo.second_moment(), M, atol=1e-12)


@pytest.mark.parametrize("n,s", [(5, 1), (5, 2), (6, 3)])
def test_el_oracle_closed_form_equals_enumeration_of_its_construction(n, s):
    Ws = []
    for perm in itertools.permutations(range(n)):
        pos = np.argsort(perm)
        for shifts in itertools.combinations(range(1, n), s):
            W = np.eye(n) / (s + 1)
            for c in shifts:
                W[np.arange(n), np.asarray(perm)[(pos + c) % n]] += 1 / (s + 1)
            Ws.append(W)
    EW, M = _moments(Ws)
    topo = rg.el_oracle(n, s)
    np.testing.assert_allclose(topo.expected_mixing_matrix(), EW, atol=1e-12)
    np.testing.assert_allclose(topo.second_moment(), M, atol=1e-12)
    assert rg.mean_square_contraction(topo) == pytest.approx((n - 1 - s) / ((s + 1) * (n - 1)), abs=1e-12)


def test_random_matching_closed_form_equals_enumeration_of_priorities():
    base = _chorded_ring(6)  # 7 edges: 5040 priority orders
    topo = rg.random_matching(base)
    u, v, _ = rg._undirected_edges(base)
    Ws = []
    for prio in itertools.permutations(range(len(u))):
        prio = np.asarray(prio)
        best = np.full(6, -1)
        np.maximum.at(best, u, prio)
        np.maximum.at(best, v, prio)
        W = np.eye(6)
        for e in np.nonzero((prio == best[u]) & (prio == best[v]))[0]:
            a = np.zeros(6)
            a[u[e]], a[v[e]] = 1, -1
            W -= np.outer(a, a) / 2
        Ws.append(W)
    EW, M = _moments(Ws)
    np.testing.assert_allclose(topo.expected_mixing_matrix(), EW, atol=1e-12)
    np.testing.assert_allclose(topo.second_moment(), M, atol=1e-12)


@pytest.mark.parametrize("base,k", [("chorded", 2), ("chorded", 1), ("star", 2), ("path", 3)])
def test_k_out_closed_form_equals_enumeration(base, k):
    base = {
        "chorded": lambda: _chorded_ring(6),
        "star": lambda: rj.topology.star(5),
        "path": lambda: rj.topology.path(5),
    }[base]()
    topo = rg.k_out(base, k)
    A = np.asarray(base.adjacency)
    n = A.shape[0]
    choices = [list(itertools.combinations(np.nonzero(A[i])[0], min(k, A[i].sum()))) for i in range(n)]
    Ws = []
    for combo in itertools.product(*choices):  # every pull pattern, equally likely
        W = np.eye(n)
        for i, js in enumerate(combo):
            W[i, list(js)] = 1
        Ws.append(W / W.sum(1, keepdims=True))
    EW, M = _moments(Ws)
    np.testing.assert_allclose(topo.expected_mixing_matrix(), EW, atol=1e-12)
    np.testing.assert_allclose(topo.second_moment(), M, atol=1e-12)


def test_closed_form_contractions_on_the_complete_graph():
    for n in (4, 7):
        K = rj.topology.complete(n)
        assert rg.mean_square_contraction(rg.pairwise(K)) == pytest.approx(
            rg.pairwise_complete_contraction(n), abs=1e-12
        )
        assert rg.mean_square_contraction(rg.random_matching(K)) == pytest.approx(
            rg.matching_complete_contraction(n), abs=1e-12
        )
        # pairwise: one edge of n(n-1)/2, each W a projection -> E[W^T W] = E[W] = I - L/(2m)
        np.testing.assert_allclose(
            rg.pairwise(K).expected_mixing_matrix(),
            np.eye(n) - (n * np.eye(n) - np.ones((n, n))) / (n * (n - 1)),
            atol=1e-12,
        )
    assert rg.el_oracle_contraction(10, 9) == 0.0  # all-to-all averages at once


def test_el_local_overflow_probability_is_the_binomial_tail():
    n, s = 8, 2
    p = s / (n - 1)
    assert rg.el_local_overflow_probability(n, s, n - 1) == 0.0
    tail = 1 - sum(math.comb(n - 1, d) * p**d * (1 - p) ** (n - 1 - d) for d in range(4))
    assert rg.el_local_overflow_probability(n, s, 3) == pytest.approx(min(1, n * tail))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        rg.el_oracle(5, 5)
    with pytest.raises(ValueError):
        rg.el_local(5, 0)
    with pytest.raises(ValueError):
        rg.k_out(rj.topology.ring(5), 0)
    with pytest.raises(ValueError, match="static"):
        rg.pairwise(rg.el_oracle(5, 1))


# ------------------------------------------------------------------ through a real round
def test_el_rounds_run_through_make_step_with_one_trace():
    N, D = 6, 2

    def update(a, oracle, channels, ctx):
        return channels["model"](a, ctx), {}

    algo = rj.core.Algorithm(lambda x0, ctx: x0, update, lambda a: a, {"model": rj.core.Exchange()}, "gossip_only")
    oracle = rj.core.Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
    x0 = jax.random.normal(jax.random.PRNGKey(1), (N, D))
    for topo in (rg.el_oracle(N, 2), rg.el_local(N, 2)):
        channels, trace = {"model": rj.channels.gossip(topo)}, []
        state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), topology=topo)
        step = rj.round.make_step(algo, oracle, channels, topology=topo, trace_counter=trace)
        state, _ = jax.jit(lambda s: rj.round.scan_rounds(step, s, jnp.zeros((N, 1)), {}, 15, 15))(state)
        x = np.asarray(state.algorithm)
        assert len(trace) == 1
        spread0 = np.linalg.norm(np.asarray(x0) - np.asarray(x0).mean(0))
        assert np.linalg.norm(x - x.mean(0)) < 0.05 * spread0  # consensus
        if topo.is_doubly_stochastic:
            np.testing.assert_allclose(x.mean(0), np.asarray(x0).mean(0), atol=1e-5)


def test_el_oracle_without_relabelling_has_the_same_two_moments_exactly():
    """relabel=False draws a random circulant (s distinct shifts, no permutation). Exact
    enumeration over every s-subset of shifts gives the closed-form E[W] and E[W^T (I-J) W]; the
    jitted draw has s distinct in-neighbours at the same offsets for every node."""
    import itertools

    for n, s in ((6, 2), (7, 3), (5, 1)):
        topo = rg.el_oracle(n, s, relabel=False)
        EW = np.zeros((n, n))
        M = np.zeros((n, n))
        P = np.eye(n) - 1.0 / n
        subsets = list(itertools.combinations(range(1, n), s))
        for C in subsets:
            W = np.eye(n) / (s + 1)
            for c in C:
                W[np.arange(n), (np.arange(n) + c) % n] += 1.0 / (s + 1)
            EW += W / len(subsets)
            M += W.T @ P @ W / len(subsets)
        np.testing.assert_allclose(EW, topo.expected_mixing_matrix(), atol=1e-12)
        np.testing.assert_allclose(M, topo.second_moment(), atol=1e-12)
        nbr = np.asarray(topo.draw(0, jax.random.PRNGKey(n))[0])
        offsets = (nbr - np.arange(n)[:, None]) % n
        assert (offsets == offsets[0]).all() and len(set(offsets[0])) == s and 0 not in offsets[0]


def test_floyd_subsets_are_distinct_and_uniform():
    """EL-Oracle's shifts: Floyd's algorithm gives every s-subset of {0..m-1} with probability
    1/C(m, s) (chi-square over the 20 subsets of 3 out of 6, fixed keys) and never repeats."""
    from scipy.stats import chisquare

    out = np.asarray(
        jax.jit(jax.vmap(lambda k: rg._floyd_subset(k, 6, 3)))(jax.random.split(jax.random.PRNGKey(1), 100_000))
    )
    assert (np.sort(out, 1)[:, 1:] != np.sort(out, 1)[:, :-1]).all() and out.min() >= 0 and out.max() <= 5
    counts = np.bincount(np.ravel_multi_index(np.sort(out, 1).T, (6, 6, 6)), minlength=216)
    counts = counts[counts > 0]
    assert counts.size == math.comb(6, 3) and chisquare(counts).pvalue > 1e-4
