"""Unreliable networks (issue 13): link failures and churn over a static base, two weight policies.

References are independent of ``Unreliable.draw``: closed forms of E[W] and E[W^T (I-J) W]
derived in ``redeem_jax.network.unreliable``, an exact NumPy enumeration over every up/down
pattern, dense NumPy gossip, and Monte Carlo with tolerances from the samples' standard errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.network import unreliable as U

N, D = 6, 3


def _mc_mixing(topo, samples, seed=0, round=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    return np.asarray(jax.jit(jax.vmap(lambda k: U.dense_mixing(topo.n, topo.draw(round, k))))(keys), np.float64)


def _models(topo_ring=None):
    base = topo_ring or rj.topology.ring(N)
    return [
        U.link_failures(base, 0.6, "self"),
        U.link_failures(base, 0.6, "renormalize"),
        U.churn(base, 0.75, p=0.8, policy="self"),
        U.churn(base, 0.75, p=0.8, policy="renormalize"),
    ]


# ------------------------------------------------------------------------ draws and policies
def test_symmetric_links_and_the_same_key_gives_the_same_graph():
    topo = U.link_failures(rj.topology.torus(3, 3), 0.5)
    key = jax.random.PRNGKey(7)
    a, b = topo.draw(4, key), topo.draw(4, key)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    W = topo.sample_mixing_matrix(4, key)
    W2 = topo.sample_mixing_matrix(4, jax.random.PRNGKey(8))
    assert not np.array_equal(W, W2)
    off = W - np.diag(np.diag(W))
    np.testing.assert_array_equal(off > 0, (off > 0).T)  # both directions fail together
    base = topo.base.mixing_matrix()
    np.testing.assert_allclose(off[off > 0], base[off > 0], rtol=1e-6)  # live edges keep base weights


@pytest.mark.parametrize("model", ["links", "churn"])
def test_self_policy_keeps_the_mean_and_renormalize_moves_it(model):
    # An irregular base (Metropolis weights differ per edge) so renormalizing breaks column sums.
    base = rj.topology.erdos_renyi(8, 0.5, seed=1)
    mk = (
        (lambda pol: U.link_failures(base, 0.5, pol))
        if model == "links"
        else (lambda pol: U.churn(base, 0.6, p=0.9, policy=pol))
    )
    x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (8, D)), np.float64)
    drift = {}
    for pol in U.POLICIES:
        topo = mk(pol)
        assert topo.is_doubly_stochastic == (pol == "self")
        x = jnp.asarray(x0, jnp.float32)
        for t in range(10):
            nbr, w, sw, m = topo.draw(t, jax.random.PRNGKey(100 + t))
            x = sw[:, None] * x + jnp.einsum("nk,nkd->nd", jnp.where(m, w, 0.0), x[nbr])
            W = topo.sample_mixing_matrix(t, jax.random.PRNGKey(100 + t))
            np.testing.assert_allclose(W.sum(1), 1, atol=1e-6)  # always row-stochastic
            if pol == "self":
                np.testing.assert_allclose(W.sum(0), 1, atol=1e-6)
        drift[pol] = np.abs(np.asarray(x, np.float64).mean(0) - x0.mean(0)).max()
    assert drift["self"] < 1e-5  # float32 rounding only
    assert drift["renormalize"] > 1e-2  # the mean moves


def test_a_user_trace_is_followed_exactly_hold_and_cycle():
    base = rj.topology.ring(N)
    rng = np.random.default_rng(0)
    trace = rng.random((4, N)) < 0.6
    Wb = base.mixing_matrix()
    for beyond, rows in (("hold", [0, 1, 2, 3, 3, 3]), ("cycle", [0, 1, 2, 3, 0, 1])):
        for pol in U.POLICIES:
            topo = U.churn(base, trace=trace, beyond=beyond, policy=pol)
            for t, r in enumerate(rows):
                key = jax.random.PRNGKey(t)
                on = trace[r]
                np.testing.assert_array_equal(np.asarray(topo.online(t, key)), on)
                W = topo.sample_mixing_matrix(t, key)
                for i in range(N):
                    if not on[i]:
                        np.testing.assert_array_equal(W[i], np.eye(N)[i])  # offline row = e_i
                        np.testing.assert_array_equal(np.delete(W[:, i], i), 0)  # nobody hears it
                live = (Wb > 0) & on[:, None] & on[None, :] & ~np.eye(N, dtype=bool)
                np.testing.assert_array_equal((W > 0) & ~np.eye(N, dtype=bool), live)
                if pol == "self":
                    np.testing.assert_allclose(W[live], Wb[live], rtol=1e-6)


def test_an_offline_node_keeps_its_state_through_a_gossip_round():
    trace = np.ones((3, N), bool)
    trace[0, 0] = trace[1, 0] = False  # node 0 offline for rounds 0 and 1
    trace[1, 3] = False
    topo = U.churn(rj.topology.ring(N), trace=trace)

    def update(a, oracle, channels, ctx):
        n_live, e_live = U.live_counts(ctx.edges)
        return channels["model"](a, ctx), {"live_nodes": n_live, "live_edges": e_live}

    algo = rj.core.Algorithm(lambda x0, ctx: x0, update, lambda a: a, {"model": rj.core.Exchange()}, "gossip")
    oracle = rj.core.Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
    channels = {"model": rj.channels.gossip(topo)}
    x0 = jax.random.normal(jax.random.PRNGKey(1), (N, D))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), topology=topo)
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    data = jnp.zeros((N, 1))
    s1, m = jax.jit(lambda s: rj.round.scan_rounds(step, s, data, {}, 2, 2))(state)
    np.testing.assert_array_equal(np.asarray(s1.algorithm)[0], np.asarray(x0)[0])  # kept bit for bit
    assert not np.allclose(np.asarray(s1.algorithm)[1], np.asarray(x0)[1])  # others mixed
    # ring of 6: round 0 drops node 0's two links (5 nodes, 4 undirected links up = 8 messages);
    # round 1 also drops node 3 (4 nodes, two paths of 2 = 2 links = 4 messages)
    np.testing.assert_array_equal(np.asarray(m["live_nodes"]), [5, 4])
    np.testing.assert_array_equal(np.asarray(m["live_edges"]), [8, 4])


def test_p_and_q_sweep_as_traced_values_with_one_trace():
    base = rj.topology.ring(N)
    topo = U.churn(base, 0.9, p=0.9)
    traces = []

    @jax.jit
    def run(p, q):
        t = topo.with_params(p=p, q=q)
        algo = rj.core.Algorithm(
            lambda x0, ctx: x0,
            lambda a, o, c, ctx: (c["model"](a, ctx), {}),
            lambda a: a,
            {"model": rj.core.Exchange()},
            "gossip",
        )
        oracle = rj.core.Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
        channels = {"model": rj.channels.gossip(t)}
        x0 = jnp.arange(N * D, dtype=jnp.float32).reshape(N, D)
        st = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), topology=t)
        step = rj.round.make_step(algo, oracle, channels, topology=t, trace_counter=traces)
        st, _ = rj.round.scan_rounds(step, st, jnp.zeros((N, 1)), {}, 5, 5)
        return st.algorithm

    outs = [np.asarray(run(jnp.float32(p), jnp.float32(q))) for p, q in ((0.2, 0.5), (0.5, 0.9), (1.0, 1.0))]
    assert len(traces) == 1  # three (p, q) points, one compile
    assert not np.array_equal(outs[0], outs[1])
    x0 = np.arange(N * D, dtype=np.float32).reshape(N, D)
    W = base.mixing_matrix()
    np.testing.assert_allclose(outs[2], np.linalg.matrix_power(W, 5) @ x0, rtol=1e-5)  # p = q = 1: the base
    # the same sweep under vmap (one batched trace)
    vm = jax.jit(jax.vmap(lambda p: U.dense_mixing(N, topo.with_params(p=p).draw(0, jax.random.PRNGKey(1)))))
    Ws = np.asarray(vm(jnp.array([0.0, 1.0], jnp.float32)))
    np.testing.assert_allclose(Ws[0], np.eye(N), atol=0)  # p = 0: nothing arrives


# ------------------------------------------------------------------------ theory vs references
@pytest.mark.parametrize("i", range(4))
def test_closed_forms_match_exact_enumeration(i):
    topo = _models()[i]
    np.testing.assert_allclose(topo.expected_mixing_matrix(), U.enumerate_second_moment(topo, "first"), atol=1e-6)
    np.testing.assert_allclose(U.second_moment(topo), U.enumerate_second_moment(topo), atol=1e-6)


def test_expected_w_closed_form_self_policy():
    base = rj.topology.ring(N)
    Wb = base.mixing_matrix()
    p, q = 0.6, 0.75
    EW = U.churn(base, q, p=p).expected_mixing_matrix()
    off = ~np.eye(N, dtype=bool)
    np.testing.assert_allclose(EW[off], p * q * q * Wb[off], atol=1e-7)  # both endpoints online: q^2
    np.testing.assert_allclose(EW.sum(1), 1, atol=1e-7)


@pytest.mark.parametrize("i", range(4))
def test_expected_w_against_monte_carlo(i):
    topo = _models()[i]
    S = 4000
    Ws = _mc_mixing(topo, S, seed=i)
    mean, se = Ws.mean(0), Ws.std(0, ddof=1) / np.sqrt(S)
    EW = topo.expected_mixing_matrix()
    # entries that never vary (zero in the base) must match exactly
    z = se == 0
    np.testing.assert_allclose(mean[z], EW[z], atol=1e-6)
    assert np.all(np.abs(mean - EW)[~z] <= 4 * se[~z] + 1e-7)


@pytest.mark.parametrize("i", range(4))
def test_mean_square_contraction_against_monte_carlo(i):
    topo = _models()[i]
    lam = U.mean_square_contraction(topo)
    S2 = U.second_moment(topo)
    Mc = np.eye(N) - 1.0 / N
    # top eigenvector on 1^perp of the exact second moment: E||(I-J) W v||^2 = lambda
    Q = np.linalg.qr(np.concatenate([np.ones((N, 1)), np.eye(N)[:, : N - 1]], 1))[0][:, 1:]
    vals, vecs = np.linalg.eigh(Q.T @ S2 @ Q)
    v = Q @ vecs[:, -1]
    assert abs(vals[-1] - lam) < 1e-12 and 0 < lam < 1
    S = 4000
    Ws = _mc_mixing(topo, S, seed=10 + i)
    samples = np.sum((np.einsum("ab,sbc,c->sa", Mc, Ws, v)) ** 2, axis=1)
    est, se = samples.mean(), samples.std(ddof=1) / np.sqrt(S)
    assert abs(est - lam) <= 3 * se, (est, lam, se)
    # the whole matrix as well, entry by entry
    mats = np.einsum("sba,bc,scd->sad", Ws, Mc, Ws)
    m_se = mats.std(0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(mats.mean(0) - S2) <= 4 * m_se + 1e-6)


def test_failures_slow_the_contraction_and_the_base_is_recovered():
    base = rj.topology.ring(N)
    Wb = base.mixing_matrix()
    Mc = np.eye(N) - 1.0 / N
    lam_base = np.linalg.eigvalsh(Wb @ Mc @ Wb).max()
    np.testing.assert_allclose(U.mean_square_contraction(U.link_failures(base, 1.0)), lam_base, atol=1e-6)
    lams = [U.mean_square_contraction(U.link_failures(base, p)) for p in (1.0, 0.8, 0.5, 0.2)]
    assert np.all(np.diff(lams) > 0) and lams[-1] < 1


def test_markov_churn_stationary_fraction_and_span_lengths():
    mean_on, mean_off = 4.0, 2.0
    topo = U.churn(rj.topology.ring(N), mean_on=mean_on, mean_off=mean_off, seed=3)
    T = 3000
    on = np.asarray(jax.jit(jax.vmap(lambda t: topo.online(t, jax.random.PRNGKey(0))))(jnp.arange(T)))
    pi = (1 / mean_off) / (1 / mean_on + 1 / mean_off)
    assert topo.q == pytest.approx(pi)
    # stationary fraction online; rounds are correlated, so use a conservative SE from N*T/(span) blocks
    frac = on.mean()
    se_frac = np.sqrt(
        pi * (1 - pi) / (N * T) * (1 + 2 * (1 - 1 / mean_on - 1 / mean_off) / (1 / mean_on + 1 / mean_off))
    )
    assert abs(frac - pi) <= 4 * se_frac
    # P(on -> off) = 1 / mean_on and P(off -> on) = 1 / mean_off
    prev, nxt = on[:-1], on[1:]
    for state, target in ((True, 1 / mean_on), (False, 1 / mean_off)):
        sel = prev == state
        k = sel.sum()
        rate = (nxt[sel] != state).mean()
        assert abs(rate - target) <= 4 * np.sqrt(target * (1 - target) / k)
    # the mask does not depend on the graph key (a function of (seed, round) only)
    np.testing.assert_array_equal(np.asarray(topo.online(17, jax.random.PRNGKey(5))), on[17])


def test_bad_arguments_are_refused():
    base = rj.topology.ring(N)
    with pytest.raises(ValueError, match="policy"):
        U.link_failures(base, 0.5, "drop")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        U.link_failures(base, 1.5)
    with pytest.raises(ValueError, match="exactly one"):
        U.churn(base)
    with pytest.raises(ValueError, match="bool\\[rounds"):
        U.churn(base, trace=np.ones((3, N + 1), bool))
