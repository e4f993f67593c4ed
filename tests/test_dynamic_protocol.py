"""The drawn-topology protocol (DESIGN.md "One round": ``edges(round, key)``): a graph drawn inside
the jitted step from a per-round graph key, the same edges for every channel of the round,
one compile for a whole run, the same graphs for the same seed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.network.dynamic import DrawnTopology, is_drawn

N, D = 8, 3


class RandomCycle(DrawnTopology):
    """A test graph: every round, a uniformly random cyclic order; each node averages itself
    with its predecessor (1/2, 1/2): a random doubly stochastic W."""

    name = "random_cycle"
    is_doubly_stochastic = True

    def __init__(self, n):
        self.n, self.K, self.params = n, 1, {}

    def draw(self, round, key):
        order = jax.random.permutation(key, self.n)
        pred = jnp.zeros(self.n, jnp.int32).at[order].set(jnp.roll(order, 1).astype(jnp.int32))
        half = jnp.full((self.n, 1), 0.5, jnp.float32)
        return pred[:, None], half, jnp.full((self.n,), 0.5, jnp.float32), jnp.ones((self.n, 1), bool)

    def expected_mixing_matrix(self):
        return 0.5 * np.eye(self.n) + 0.5 * (np.ones((self.n, self.n)) - np.eye(self.n)) / (self.n - 1)


class StaticRing(DrawnTopology):
    """A static ring dressed as a drawn topology: must give exactly the static ring's round."""

    name = "drawn_ring"
    is_doubly_stochastic = True

    def __init__(self, n):
        self.ring = rj.topology.ring(n)
        self.n, self.K, self.params = n, self.ring.K, {}

    def draw(self, round, key):
        return self.ring.edge_arrays(0)


def gossip_only():
    """An algorithm that only gossips twice through the same channel (to see both calls use
    the round's one graph)."""

    def update(a, oracle, channels, ctx):
        y1 = channels["model"](a, ctx)
        y2 = channels["model"](a, ctx)
        return y1, {"same_graph": jnp.all(y1 == y2)}

    return rj.core.Algorithm(lambda x0, ctx: x0, update, lambda a: a, {"model": rj.core.Exchange()}, "gossip_only")


def _run(topology, rounds, seed=0, trace=None):
    algo = gossip_only()
    oracle = rj.core.Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
    channels = {"model": rj.channels.gossip(topology)}
    x0 = jax.random.normal(jax.random.PRNGKey(1), (N, D))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(seed), topology=topology)
    step = rj.round.make_step(algo, oracle, channels, topology=topology, trace_counter=trace)
    data = jnp.zeros((N, 1))
    state, metrics = jax.jit(lambda s: rj.round.scan_rounds(step, s, data, {}, rounds, rounds))(state)
    return state, metrics


def test_a_drawn_static_graph_gives_the_static_round():
    s_drawn, _ = _run(StaticRing(N), 5)
    s_static, _ = _run(rj.topology.ring(N), 5)
    np.testing.assert_allclose(np.asarray(s_drawn.algorithm), np.asarray(s_static.algorithm), rtol=1e-6, atol=1e-7)


def test_one_compile_same_graph_for_every_channel_and_same_seed_same_graphs():
    trace = []
    topo = RandomCycle(N)
    assert is_drawn(topo) and not is_drawn(rj.topology.ring(N))
    s1, m1 = _run(topo, 20, seed=3, trace=trace)
    assert len(trace) == 1  # 20 random graphs, one trace
    assert bool(np.all(np.asarray(m1["same_graph"])))  # both exchanges of a round saw one graph
    s2, _ = _run(topo, 20, seed=3)
    np.testing.assert_array_equal(np.asarray(s1.algorithm), np.asarray(s2.algorithm))
    s3, _ = _run(topo, 20, seed=4)
    assert not np.array_equal(np.asarray(s1.algorithm), np.asarray(s3.algorithm))
    # doubly stochastic draws keep the network mean; the graphs do vary from round to round
    x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (N, D)))
    np.testing.assert_allclose(np.asarray(s1.algorithm).mean(0), x0.mean(0), atol=1e-5)
    W0 = topo.sample_mixing_matrix(0, jax.random.PRNGKey(0))
    W1 = topo.sample_mixing_matrix(1, jax.random.PRNGKey(1))
    np.testing.assert_allclose(W0.sum(0), 1) and np.testing.assert_allclose(W0.sum(1), 1)
    assert not np.array_equal(W0, W1)


def test_resumed_rounds_draw_the_same_graphs():
    topo = RandomCycle(N)
    full, _ = _run(topo, 12, seed=5)
    algo, (channels) = gossip_only(), {"model": rj.channels.gossip(topo)}
    oracle = rj.core.Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
    x0 = jax.random.normal(jax.random.PRNGKey(1), (N, D))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(5), topology=topo)
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    data = jnp.zeros((N, 1))
    for _ in range(3):  # three chunks of 4 rounds, as a resumed run would
        state, _ = jax.jit(lambda s: rj.round.scan_rounds(step, s, data, {}, 12, 4))(state)
    np.testing.assert_array_equal(np.asarray(state.algorithm), np.asarray(full.algorithm))


def test_drawn_topologies_refuse_static_only_gossip_methods():
    with pytest.raises(ValueError, match="draws its edges every round"):
        rj.channels.gossip(RandomCycle(N), method="dense")
    with pytest.raises(ValueError, match="needs the round's graph key"):
        rj.core.Edges.of(RandomCycle(N), 0)


# --------------------------------------------------------------------------- from a config
def _tiny_run(workdir=None, **over):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _configs import small_config

    c = small_config(**{"num_rounds": 6, "eval_every": 3, "checkpoint_every": 3, **over})
    return rj.run(c, workdir)


@pytest.mark.parametrize(
    "over",
    [
        {"topology.name": "epidemic_oracle", "topology.s": 2},
        {"topology.link_up": 0.5, "byzantine.num": 1, "byzantine.attack": "alie", "aggregation.rule": "clipped_gossip"},
    ],
)
def test_drawn_topologies_run_from_a_config_and_resume_to_the_same_graphs(tmp_path, over):
    """A config selects a drawn family (or makes a static graph unreliable); a run stopped at
    round 3 and resumed draws the same graphs as the uninterrupted one: equal rows."""
    full = _tiny_run(tmp_path / "full", **over)
    _tiny_run(tmp_path / "resumed", **{**over, "num_rounds": 3})
    resumed = _tiny_run(tmp_path / "resumed", **over)
    assert [r["test_loss"] for r in resumed.rows] == [r["test_loss"] for r in full.rows]
    assert np.isfinite(full.final["test_loss"])


def test_config_mistakes_on_drawn_topologies_name_the_field():
    from redeem_jax.config import ConfigError

    with pytest.raises(ConfigError, match=r"^config\.topology\.link_up: failures and churn apply to a static graph"):
        _tiny_run(**{"topology.name": "epidemic_oracle", "topology.link_up": 0.5})
    with pytest.raises(ConfigError, match=r"^config\.topology\.policy: 'x' is not one of self, renormalize"):
        _tiny_run(**{"topology.online": 0.5, "topology.policy": "x"})


@pytest.mark.parametrize("algo", ["push_sum", "sgp", "push_diging"])
def test_push_sum_family_runs_from_a_config_on_a_directed_graph(algo):
    """A directed family is one config string; the push-sum algorithms run on it (their
    column-stochastic check passes) and D-SGD's row-stochastic assumption is not needed."""
    res = _tiny_run(**{"algorithm.name": algo, "topology.name": "directed_exponential", "checkpoint_every": 0})
    assert np.isfinite(res.final["train_loss"]) and np.isfinite(res.final["test_loss"])
    assert res.final["bytes_sent"] > 0


def test_theory_gives_each_drawn_models_contraction_and_the_static_one():
    """rj.theory.mean_square_contraction: for a static symmetric W, lambda_max of P W^T W P
    (a direct eigen-computation); for EL-Oracle the closed form (n-1-s)/((s+1)(n-1)); for link
    failures the value of the unreliable module (exact second moment)."""
    from redeem_jax.network import random_graphs as rg
    from redeem_jax.network import unreliable as ur

    ring = rj.topology.ring(N)
    W = ring.mixing_matrix()
    P = np.eye(N) - 1.0 / N
    assert rj.theory.mean_square_contraction(ring) == pytest.approx(np.linalg.eigvalsh(P @ W.T @ W @ P).max())
    assert rj.theory.mean_square_contraction(rg.el_oracle(N, 2)) == pytest.approx((N - 1 - 2) / (3 * (N - 1)))
    for policy in ("self", "renormalize"):
        lf = ur.link_failures(ring, 0.6, policy=policy)
        assert rj.theory.mean_square_contraction(lf) == pytest.approx(ur.mean_square_contraction(lf))
    np.testing.assert_allclose(rj.theory.expected_mixing_matrix(ring), W)
    np.testing.assert_allclose(rj.theory.expected_mixing_matrix(rg.el_oracle(N, 2)).sum(1), 1.0)


def test_mix_edges_equals_gather_then_combine_and_ignores_poison_in_padded_slots():
    topo = RandomCycle(N)
    for r in range(3):
        nbr, w, sw, m = topo.draw(r, jax.random.PRNGKey(r))
        x = jax.random.normal(jax.random.PRNGKey(10 + r), (N, D))
        ref = rj.gossip.combine(x, x[nbr], w, sw)
        np.testing.assert_allclose(
            np.asarray(rj.gossip.mix_edges(x, nbr, w, sw)), np.asarray(ref), rtol=1e-6, atol=1e-7
        )
    # a zero-weight slot pointing at a NaN row contributes exactly 0
    x = jnp.ones((3, 2)).at[2].set(jnp.nan)
    y = rj.gossip.mix_edges(
        x,
        jnp.array([[1, 2], [0, 2], [2, 2]]),
        jnp.array([[0.5, 0.0], [0.5, 0.0], [0.0, 0.0]]),
        jnp.array([0.5, 0.5, 1.0]),
    )
    np.testing.assert_array_equal(np.asarray(y[:2]), 1.0)


def test_runs_on_drawn_graphs_log_how_many_nodes_and_edges_were_live(tmp_path):
    """With each link of the 8-ring up with probability 1/2, every logged row's mean of live
    directed edges lies strictly between 0 and the ring's 2N = 16 (its expectation is 8; a row
    averages 3 rounds), and of live nodes in (0, N]; a static run logs neither."""
    import json

    _tiny_run(tmp_path / "lf", **{"topology.link_up": 0.5, "checkpoint_every": 0})
    rows = [json.loads(line) for line in open(tmp_path / "lf" / "metrics.jsonl")][1:]
    n = 8
    assert all(0 < r["live_edges"] < 2 * n and 0 < r["live_nodes"] <= n for r in rows)
    res = _tiny_run(**{"checkpoint_every": 0})
    assert "live_edges" not in res.final
