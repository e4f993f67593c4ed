"""Stragglers (the active mask) and AD-PSGD's asynchrony (issue 13): a straggler skips its local
step but still gossips; AD-PSGD averages over a random matching and applies gradients computed
on models up to ``max_delay`` rounds old (Lian et al. 2018)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.algorithms import ad_psgd as adp
from redeem_jax.algorithms import dsgd, exact_diffusion, gradient_tracking, push_sum
from redeem_jax.core import tag
from redeem_jax.local.optim import local_optimizer
from redeem_jax.network import directed, dynamic
from redeem_jax.network import random_graphs as rg
from redeem_jax.network import unreliable as U

N, D = 8, 3


def _quadratic_oracle(record=False):
    """fᵢ(x) = ½‖x − bᵢ‖² with bᵢ the node data (full gradients). ``record``: the oracle's state
    keeps the rows the last gradient was taken at (the stale models, for AD-PSGD)."""

    def update(x, s, ctx, B):
        return 0.5 * jnp.sum((x - B) ** 2, axis=1), x - B, (x if record else s)

    return rj.core.Oracle((lambda x: jnp.zeros_like(x)) if record else (lambda x: ()), update)


def _data(seed=1, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(N, D)) * scale, jnp.float32)


def _x0(seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(N, D)) * 3.0, jnp.float32)


def _setup(algo, topo, x0=None, seed=0, oracle=None):
    oracle = oracle or _quadratic_oracle()
    channels = {k: rj.channels.gossip(topo) for k in algo.exchanges}
    x0 = _x0() if x0 is None else x0
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(seed), topology=topo)
    return state, rj.round.make_step(algo, oracle, channels, topology=topo)


def _run(algo, topo, rounds, x0=None, seed=0, B=None, oracle=None):
    """Per round (stacked): the algorithm's state, the oracle's state and the metrics."""
    state, step = _setup(algo, topo, x0, seed, oracle)
    B = _data() if B is None else B

    def body(s, _):
        s, m = step(s, B, {})
        return s, (s.algorithm, s.oracle, m)

    _, out = jax.jit(lambda s: jax.lax.scan(body, s, None, length=rounds))(state)
    return out


def _graph_key(seed, t):
    """The round's graph key exactly as ``round._round_context`` derives it."""
    round_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), t))[0]
    return jax.random.fold_in(round_key, tag("topology")), round_key


SGD = local_optimizer("sgd", 0.1)
MOM = local_optimizer("momentum", 0.05, momentum=0.9)


def _algorithms(opt):
    return {
        "dsgd_cta_h2": dsgd.dsgd(opt, "cta", local_steps=2),
        "diging_atc": gradient_tracking.diging(opt, "atc"),
        "exact_diffusion": exact_diffusion.exact_diffusion(opt),
    }


# --------------------------------------------------------------------------- the mask itself
def test_no_mask_means_the_very_same_arrays():
    """Without a mask ``where_active``/``skip_step`` return their input objects (the trace of a
    synchronous round is unchanged); static graphs and drawn ones without stragglers have none."""
    ctx = rj.core.Ctx(0, jax.random.PRNGKey(0), rj.core.Edges.of(rj.topology.ring(N), 0), jnp.ones(N, bool), {})
    new, opt = jnp.ones((N, D)), {"m": jnp.ones((N, D))}
    assert ctx.active is None and ctx.where_active(new, None) is new
    step, o = ctx.skip_step(new, opt, None)
    assert step is new and o is opt
    key = jax.random.PRNGKey(3)
    for topo in (
        U.link_failures(rj.topology.ring(N), 0.5),
        U.churn(rj.topology.ring(N), q=0.5),
        rg.random_matching(rj.topology.ring(N)),
    ):
        assert rj.core.Edges.of(topo, 0, key).active is None
    e = rj.core.Edges.of(U.stragglers(rj.topology.ring(N), 0.5), 0, key)
    assert e.active.shape == (N,) and e.active.dtype == jnp.bool_


@pytest.mark.parametrize("name", list(_algorithms(SGD)))
def test_zero_stragglers_equal_the_synchronous_algorithm(name):
    """r = 0: every node active; the run equals the same graph without the option (all links up,
    the same gathered gossip) to float rounding (an all-True select is exact, but XLA may fuse the
    arithmetic around it differently: 1 ulp seen), and D-SGD also equals the static ring."""
    ring = rj.topology.ring(N)
    algo = _algorithms(MOM)[name]
    strag, _, m = _run(algo, U.stragglers(ring, 0.0), 4)
    sync, _, _ = _run(algo, U.link_failures(ring, 1.0), 4)
    for a, b in zip(jax.tree.leaves(strag), jax.tree.leaves(sync)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(m["active_nodes"]) == N)
    if name.startswith("dsgd"):
        static, _, _ = _run(algo, ring, 4)
        np.testing.assert_allclose(np.asarray(strag.x), np.asarray(static.x), rtol=1e-5, atol=1e-6)


def test_zero_stragglers_equal_sgp_on_a_directed_graph():
    topo = directed.directed_exponential(N)
    a, _, _ = _run(push_sum.sgp(MOM), U.stragglers(topo, 0.0), 4)
    b, _, _ = _run(push_sum.sgp(MOM), U.link_failures(topo, 1.0), 4)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6, atol=1e-6)


def _state_and_round(algo, topo, rounds, seed=0):
    """The state after ``rounds`` rounds and after one more, and that round's W and active mask
    (sampled on the host from the round's graph key)."""
    hist, _, m = _run(algo, topo, rounds + 1, seed=seed)
    before = jax.tree.map(lambda a: np.asarray(a[rounds - 1], np.float64), hist)
    after = jax.tree.map(lambda a: np.asarray(a[rounds], np.float64), hist)
    gk, _ = _graph_key(seed, rounds)
    W = topo.sample_mixing_matrix(rounds, gk)
    act = np.asarray(topo.active(rounds, gk))
    assert int(m["active_nodes"][rounds]) == act.sum()
    return before, after, W, act


@pytest.mark.parametrize("order", ["atc", "cta"])
def test_dsgd_straggler_round_against_a_dense_numpy_reference(order):
    """Heavy ball, one round at t = 3 on a ring with link failures and stragglers (r = 0.5):
    m' = g + βm and x' = W(x − η m' ⊙ a) (ATC) or Wx − η m' ⊙ a (CTA) for active a, while a
    straggler's momentum is exactly the one it had."""
    topo = U.stragglers(U.link_failures(rj.topology.ring(N), 0.7), 0.5)
    before, after, W, act = _state_and_round(dsgd.dsgd(MOM, order), topo, 3)
    assert 0 < act.sum() < N  # this seed has stragglers and active nodes in round 3
    x, trace = before.x, jax.tree.leaves(before.opt)[0]
    g = x - np.asarray(_data(), np.float64)
    new_trace = g + 0.9 * trace
    a = act[:, None]
    x_ref = W @ (x - 0.05 * new_trace * a) if order == "atc" else W @ x - 0.05 * new_trace * a
    np.testing.assert_allclose(after.x, x_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jax.tree.leaves(after.opt)[0][~act], trace[~act])
    np.testing.assert_allclose(jax.tree.leaves(after.opt)[0][act], new_trace[act], rtol=1e-5, atol=1e-6)


def test_tracking_and_diffusion_stragglers_keep_their_local_state():
    """DIGing (CTA): a straggler keeps its last gradient and optimizer state, and moves only by
    gossip, x' = (Wx)_i; its tracker gets no new G − G_prev, so Σy = Σg holds every round.
    Exact diffusion: a straggler's ψ' = X (no adapt step)."""
    topo = U.stragglers(rj.topology.ring(N), 0.5)
    before, after, W, act = _state_and_round(gradient_tracking.diging(MOM, "cta"), topo, 3)
    assert 0 < act.sum() < N
    np.testing.assert_array_equal(after.g[~act], before.g[~act])
    np.testing.assert_array_equal(jax.tree.leaves(after.opt)[0][~act], jax.tree.leaves(before.opt)[0][~act])
    np.testing.assert_allclose(after.x[~act], (W @ before.x)[~act], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.y.sum(0), after.g.sum(0), rtol=1e-4, atol=1e-4)
    before, after, W, act = _state_and_round(exact_diffusion.exact_diffusion(MOM), topo, 3)
    np.testing.assert_array_equal(after.psi[~act], before.x[~act])
    np.testing.assert_array_equal(jax.tree.leaves(after.opt)[0][~act], jax.tree.leaves(before.opt)[0][~act])


def test_sgp_straggler_only_pushes():
    """SGP on a directed graph: a straggler pushes its un-updated numerator, x' = A(x − α g ⊙ a)."""
    topo = U.stragglers(directed.directed_exponential(N), 0.5)
    before, after, A, act = _state_and_round(push_sum.sgp(SGD), topo, 2)
    assert 0 < act.sum() < N
    z = before.x / before.w[:, None]
    g = z - np.asarray(_data(), np.float64)
    np.testing.assert_allclose(after.x, A @ (before.x - 0.1 * g * act[:, None]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after.w, A @ before.w, rtol=1e-6)


@pytest.mark.parametrize("r", [0.1, 0.3])
def test_straggler_fraction_matches_r_within_3_standard_errors(r):
    """2000 rounds × 8 nodes of Bernoulli(r) stragglers: the fraction is r ± 3 SE, each node's
    own fraction within 4 SE, and under churn (q = 0.6) the active fraction is (1 − r)·q."""
    rounds = 2000
    keys = jax.vmap(lambda t: _graph_key(0, t)[0])(jnp.arange(rounds))
    topo = U.stragglers(rj.topology.ring(N), r)
    act = np.asarray(jax.jit(jax.vmap(lambda k: topo.active(0, k)))(keys))
    frac, M = 1.0 - act.mean(), act.size
    assert abs(frac - r) < 3 * np.sqrt(r * (1 - r) / M)
    assert np.all(np.abs((1 - act.mean(0)) - r) < 4 * np.sqrt(r * (1 - r) / rounds))
    churn = U.stragglers(U.churn(rj.topology.ring(N), q=0.6), r)
    act = np.asarray(jax.jit(jax.vmap(lambda k: churn.active(0, k)))(keys))
    on = np.asarray(jax.jit(jax.vmap(lambda k: churn.online(0, k)))(keys))
    p = (1 - r) * 0.6
    assert abs(act.mean() - p) < 3 * np.sqrt(p * (1 - p) / M)
    assert not np.any(act & ~on)  # an offline node is never active


# --------------------------------------------------------------------------- AD-PSGD
def test_ad_psgd_without_delay_or_sleep_is_dsgd_on_the_matching():
    """max_delay = 0, wake = 1 on a random matching: D-SGD (CTA) on the same matchings, up to float
    rounding (two programs: how XLA fuses each may contract a multiply-add differently; a wrong
    matching, delay or step would differ by orders of magnitude more); on a static ring AD-PSGD
    draws its own matchings and every W it uses is a matching."""
    topo = rg.random_matching(rj.topology.ring(N))
    a, _, m = _run(adp.ad_psgd(MOM, max_delay=0, wake=1.0), topo, 6)
    b, _, _ = _run(dsgd.dsgd(MOM, "cta"), topo, 6)
    np.testing.assert_allclose(np.asarray(a.x), np.asarray(b.x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(jax.tree.leaves(a.opt)[0]), np.asarray(jax.tree.leaves(b.opt)[0]), rtol=1e-5, atol=1e-6
    )
    assert np.all(np.asarray(m["staleness"]) == 0) and np.all(np.asarray(m["awake_nodes"]) == N)
    # On the static ring, a zero step leaves pure gossip: the network mean is kept exactly and
    # every round's models are a matching's pairwise averages of the last ones.
    hist, _, _ = _run(adp.ad_psgd(local_optimizer("sgd", 0.0)), rj.topology.ring(N), 4)
    x = np.concatenate([np.asarray(_x0())[None], np.asarray(hist.x, np.float64)])
    for t in range(4):
        same = np.all(np.isclose(x[t + 1][:, None, :], x[t][None, :, :]), axis=2)  # kept its own
        avg = np.all(
            np.isclose(x[t + 1][:, None, None, :], (x[t][None, :, None, :] + x[t][None, None, :, :]) / 2), axis=3
        )
        assert all(same[i, i] or avg[i].any() for i in range(N))
        np.testing.assert_allclose(x[t + 1].mean(0), x[0].mean(0), rtol=1e-5, atol=1e-5)


def test_ad_psgd_gradients_have_the_drawn_staleness():
    """A linear oracle whose state records the rows its gradient was taken at: in round t node i's
    gradient is taken on its own model of round t − min(τ_i, t), τ_i the delay drawn from the
    round's key (uniform on 0..max_delay, mean max_delay/2 within 3 SE over the rounds), and the
    staleness metric is the mean of min(τ, t)."""
    Dm, rounds, seed = 3, 60, 4
    hist, seen, m = _run(
        adp.ad_psgd(SGD, max_delay=Dm, wake=0.8),
        rj.topology.ring(N),
        rounds,
        seed=seed,
        oracle=_quadratic_oracle(record=True),
    )
    xs = np.concatenate([np.asarray(_x0())[None], np.asarray(hist.x)])  # xs[t]: models at round t's start
    seen = np.asarray(seen)

    def draws(t):
        _, round_key = _graph_key(seed, t)
        algo_key = jax.random.fold_in(round_key, tag("algorithm"))
        tau = jax.random.randint(jax.random.fold_in(algo_key, tag("delay")), (N,), 0, Dm + 1)
        return tau, jax.random.uniform(jax.random.fold_in(algo_key, tag("wake")), (N,)) < 0.8

    taus, awakes = (np.asarray(a) for a in jax.jit(jax.vmap(draws))(jnp.arange(rounds)))
    for t in range(rounds):
        eff = np.minimum(taus[t], t)
        np.testing.assert_array_equal(seen[t], xs[t - eff, np.arange(N)])
        assert int(m["awake_nodes"][t]) == awakes[t].sum()
        if awakes[t].any():
            np.testing.assert_allclose(float(m["staleness"][t]), eff[awakes[t]].mean(), rtol=1e-6)
    taus = taus.astype(float)
    var = ((Dm + 1) ** 2 - 1) / 12  # discrete uniform on 0..Dm
    assert abs(taus.mean() - Dm / 2) < 3 * np.sqrt(var / taus.size)
    assert set(np.unique(taus)) == set(range(Dm + 1))


def test_ad_psgd_converges_to_a_neighbourhood_that_grows_with_the_delay():
    """Per-node quadratics fᵢ = ½‖x − bᵢ‖² on a ring, full gradients, step 0.1, from x = 5: the mean
    squared distance to x* = mean(b) over rounds 100–300 is < 1% of the initial one, and grows with
    max_delay 0 → 2 → 8. The same 16 seeds draw the same matchings for every delay (common random
    numbers), so each step of the trend is asserted on the paired per-seed differences: mean
    difference > 3 standard errors of the paired differences (measured: about 7 and 10 SE)."""
    B = _data(scale=1.0)
    xstar = np.asarray(B, np.float64).mean(0)
    x0 = jnp.full((N, D), 5.0, jnp.float32)
    tails = {}
    for Dm in (0, 2, 8):
        algo = adp.ad_psgd(SGD, max_delay=Dm, wake=1.0)
        state, step = _setup(algo, rj.topology.ring(N), x0)

        def one(key, state=state, step=step):
            def body(s, _):
                s, _ = step(s, B, {})
                return s, jnp.mean(jnp.sum((s.algorithm.x - xstar) ** 2, axis=1))

            return jax.lax.scan(body, state._replace(key=key), None, length=300)[1]

        err = np.asarray(jax.jit(jax.vmap(one))(jax.vmap(jax.random.PRNGKey)(jnp.arange(16))), np.float64)
        tails[Dm] = err[:, 100:].mean(1)
        assert np.all(np.isfinite(err))
        assert tails[Dm].max() < 0.01 * np.mean(np.sum((np.asarray(x0) - xstar) ** 2, 1))
    for lo, hi in ((0, 2), (2, 8)):
        d = tails[hi] - tails[lo]
        assert d.mean() > 3 * d.std(ddof=1) / np.sqrt(d.size), (lo, hi, d)


def test_ad_psgd_wake_is_a_swept_hyper_parameter_with_one_trace():
    """``wake`` as ``core.hyper("algorithm.wake")``: one trace for a vmap over its values, and the
    fraction of awake nodes over 300 rounds × 8 nodes is each value within 3 standard errors."""
    algo = adp.ad_psgd(SGD, max_delay=1, wake=rj.core.hyper("algorithm.wake", 1.0))
    assert "algorithm.wake" in rj.core.hypers_of(algo)
    oracle, topo = _quadratic_oracle(), rj.topology.ring(N)
    channels = {"model": rj.channels.gossip(topo)}
    traces = []
    state = rj.round.init_state(algo, oracle, channels, _x0(), jax.random.PRNGKey(0), topology=topo)
    step = rj.round.make_step(algo, oracle, channels, topology=topo, trace_counter=traces)
    wakes = jnp.asarray([0.2, 0.9])

    def run(w):
        def body(s, _):
            s, m = step(s, _data(), {"algorithm.wake": w})
            return s, m["awake_nodes"]

        return jax.lax.scan(body, state, None, length=300)[1]

    awake = np.asarray(jax.jit(jax.vmap(run))(wakes))
    assert len(traces) == 1
    for w, a in zip([0.2, 0.9], awake):
        assert abs(a.mean() / N - w) < 3 * np.sqrt(w * (1 - w) / a.size / N)


def test_ad_psgd_validates_its_options_and_graph():
    with pytest.raises(ValueError, match="max_delay"):
        adp.ad_psgd(SGD, max_delay=-1)
    with pytest.raises(ValueError, match="wake"):
        adp.ad_psgd(SGD, wake=0.0)
    with pytest.raises(ValueError, match="undirected"):
        adp.ad_psgd(SGD).validate(directed.directed_ring(N))
    with pytest.raises(ValueError, match="needs a matching"):
        adp.ad_psgd(SGD).validate(U.stragglers(rj.topology.ring(N), 0.3))
    adp.ad_psgd(SGD).validate(U.stragglers(rg.random_matching(rj.topology.ring(N)), 0.3))
    assert "ad_psgd" in rj.algorithms.REGISTRY
    assert rj.algorithms.options("ad_psgd") == {"max_delay": 0, "wake": 1.0}
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        U.stragglers(rj.topology.ring(N), 1.0)
    assert isinstance(U.stragglers(rg.random_matching(rj.topology.ring(N)), 0.2), dynamic.Straggling)


# --------------------------------------------------------------------------- from a config
def _tiny_run(workdir=None, **over):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _configs import small_config

    c = small_config(**{"num_rounds": 6, "eval_every": 3, "checkpoint_every": 3, **over})
    return rj.run(c, workdir)


def test_stragglers_and_ad_psgd_run_from_a_config_and_resume_identically(tmp_path):
    """AD-PSGD (max_delay 2, wake 0.7) on random matchings of a ring with stragglers (r = 0.3),
    from a config: a run
    stopped at round 3 and resumed equals the uninterrupted one (the ring buffer is in the
    checkpointed state, the masks and delays are drawn from the round's key); the rows log how
    many nodes were active and the mean staleness."""
    import json

    over = {
        "topology.name": "random_matching",
        "topology.straggle": 0.3,
        "algorithm.name": "ad_psgd",
        "algorithm.max_delay": 2,
        "algorithm.wake": 0.7,
        "model.hidden": (),
    }
    full = _tiny_run(tmp_path / "full", **over)
    _tiny_run(tmp_path / "resumed", **{**over, "num_rounds": 3})
    resumed = _tiny_run(tmp_path / "resumed", **over)
    assert [r["test_loss"] for r in resumed.rows] == [r["test_loss"] for r in full.rows]
    assert np.isfinite(full.final["test_loss"])
    rows = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")][1:]
    assert rows and all(0 <= r["active_nodes"] <= 8 and 0 <= r["staleness"] <= 2 for r in rows)
    assert any(r["active_nodes"] < 8 for r in rows)


def test_straggle_config_field_is_validated():
    from redeem_jax.config import ConfigError

    with pytest.raises(ConfigError, match=r"topology\.straggle"):
        _tiny_run(**{"topology.straggle": 1.0})
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from redeem_jax.experiment.build import _topology_from_config

    from _configs import small_config

    # straggle = 0 builds the very graph of a run without the option (no mask: the same program).
    assert _topology_from_config(small_config()).__class__ is rj.topology.ring(N).__class__
    strag = _topology_from_config(small_config(**{"topology.straggle": 0.25}))
    assert isinstance(strag, dynamic.Straggling) and strag.r == 0.25 and strag.base.name == "ring"
