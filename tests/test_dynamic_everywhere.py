"""Everything keeps working on graphs drawn every round (issue 13, part 4): p, q and s as swept
hyper-parameters (one compile), network-DP leakage from a run's realised matrices, sharding of a
drawn graph, and edge attacks only along this round's live edges."""

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.core import hyper
from redeem_jax.network import random_graphs as rg
from redeem_jax.network import unreliable as U
from redeem_jax.sweep import final

from _configs import small_config

TINY = {"num_nodes": 6, "model.hidden": (8,), "num_rounds": 4, "eval_every": 2, "eval.max_test_examples": 200}
METRICS = ["test_loss", "train_loss", "consensus_distance"]


def tiny(**overrides):
    return small_config(**{**TINY, **overrides})


def pinned(c, **values):
    """The single-run config of one sweep point (host-side seeds pinned, as rj.sweep does)."""
    sub = ml_collections.ConfigDict(c.to_dict())
    sub.topology.seed = c.seed
    sub.data.seed = c.seed
    for k, v in values.items():
        rj.config.set_field(sub, k, v)
    return sub


# --------------------------------------------------------------------------- 1. sweeps over p, q, s
def _dense(n, edges):
    return np.asarray(U.dense_mixing(n, tuple(edges)), np.float64)


@pytest.mark.parametrize(
    "axes, overrides",
    [
        ({"topology.link_up": [0.3, 0.9], "topology.online": [0.5, 0.9]}, {}),
        ({"topology.s": [1, 2, 4]}, {"topology.name": "epidemic_oracle", "num_rounds": 2}),
    ],
)
def test_graph_sweeps_compile_once_and_each_point_is_its_run(axes, overrides):
    c = tiny(**overrides)
    df = rj.sweep(c, axes)
    assert df.attrs["traces"] == [1]  # one compiled step for every point of the grid
    last = final(df)
    points = int(np.prod([len(v) for v in axes.values()]))
    # every value reaches the draw: no two points end with the same metrics
    assert len({tuple(row) for row in last[METRICS].to_numpy()}) == points
    # A point equals rj.run of its config (s: with the sweep's padded width s_max), to float rounding.
    point = last.iloc[-1]
    values = {k: int(point[k]) if k == "topology.s" else float(point[k]) for k in axes}
    if "topology.s" in axes:
        values["topology.s_max"] = max(axes["topology.s"])
    alone = rj.run(pinned(c, **values))
    rows = df[df["point"] == point["point"]].sort_values("round")
    for m in METRICS:
        np.testing.assert_allclose(rows[m].to_numpy(), alone.metrics[m], rtol=2e-5, atol=1e-6, err_msg=m)


def test_traced_link_up_draws_the_static_value_graphs():
    base = rj.topology.ring(8)
    keys = jax.random.split(jax.random.PRNGKey(5), 6)
    traced = U.link_failures(base, hyper("topology.link_up", 0.5))
    assert traced.hypers and rj.core.hypers_of(traced) == {"topology.link_up": 0.5}
    for p in (0.2, 0.7):
        static = U.link_failures(base, p)
        got = jax.jit(
            jax.vmap(lambda k, v: U.dense_mixing(8, traced.draw(0, k, hp={"topology.link_up": v})), in_axes=(0, None))
        )(keys, jnp.float32(p))
        for i, k in enumerate(keys):
            np.testing.assert_array_equal(np.asarray(got[i]), np.asarray(U.dense_mixing(8, static.draw(0, k))))


@pytest.mark.parametrize("family", ["el_local", "k_out"])
def test_traced_fan_out_is_the_static_draw_for_every_s(family):
    """EL-Local and k-out take the first s of top_k(s_max): exactly the static draw's slots."""
    n, s_max = 9, 4
    base = rj.topology.erdos_renyi(n, 0.7, seed=1)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    for s in range(1, s_max + 1):
        if family == "el_local":
            static, traced = rg.el_local(n, s), rg.el_local(n, hyper("topology.s", 1), s_max=s_max)
        else:
            static, traced = rg.k_out(base, s), rg.k_out(base, hyper("topology.s", 1), k_max=s_max)
        for k in keys:
            np.testing.assert_array_equal(
                _dense(n, traced.draw(0, k, hp={"topology.s": jnp.float32(s)})), _dense(n, static.draw(0, k))
            )


def test_traced_el_oracle_s_max_is_the_static_draw_and_smaller_s_the_static_law():
    n, s_max, R = 6, 4, 6000
    static = rg.el_oracle(n, s_max)
    traced = rg.el_oracle(n, hyper("topology.s", 2), s_max=s_max)
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    for k in keys:  # s = s_max: the same live edges (in another slot order), the same W
        np.testing.assert_allclose(
            _dense(n, traced.draw(0, k, hp={"topology.s": jnp.float32(s_max)})),
            _dense(n, static.draw(0, k)),
            rtol=0,
            atol=1e-7,
        )
    # s = 2 < s_max: node 0's in-neighbour set must be a uniform 2-subset of the other n - 1 nodes
    # (the static law: every node receives from a uniform s-subset), each of C(5, 2) = 10 sets
    # with probability 1/10. Compared within 5 standard errors.
    keys = jax.random.split(jax.random.PRNGKey(1), R)
    nbr, w, sw, mask = jax.jit(jax.vmap(lambda k: traced.draw(0, k, hp={"topology.s": jnp.float32(2)})))(keys)
    nbr, mask = np.asarray(nbr), np.asarray(mask)
    assert (mask.sum(-1) == 2).all() and np.allclose(np.asarray(sw), 1 / 3)
    sets = [tuple(sorted(row[m])) for row, m in zip(nbr[:, 0], mask[:, 0])]
    subsets = list(itertools.combinations(range(1, n), 2))
    freq = np.array([sum(x == t for x in sets) for t in subsets]) / R
    se = math.sqrt(0.1 * 0.9 / R)
    assert np.all(np.abs(freq - 0.1) < 5 * se), freq
    # and the mean-square contraction is the closed form of s = 2 (the second moment of the law)
    W = jax.vmap(lambda a, b, c_, d: U.dense_mixing(n, (a, b, c_, d)))(*map(jnp.asarray, (nbr, w, sw, mask)))
    x = np.random.default_rng(0).standard_normal(n)
    x -= x.mean()
    ratio = np.sum((np.asarray(W, np.float64) @ x - 0.0) ** 2, axis=1) / np.sum(x**2)
    lam = rg.el_oracle_contraction(n, 2)
    assert abs(ratio.mean() - lam) < 5 * ratio.std() / math.sqrt(R)


# --------------------------------------------------------------------------- 3. sharding a drawn graph
RUN_TOL = dict(rtol=2e-5, atol=2e-6)


def _gossip_rounds(topo, n, d, T, hp, mesh=None):
    """T rounds of x <- W(t) x through make_step (gossip-only algorithm), optionally sharded."""
    from redeem_jax.core import Algorithm, Exchange, Oracle
    from redeem_jax.network import sharding

    alg = Algorithm(
        lambda x0, ctx: x0,
        lambda a, oracle, channels, ctx: (channels["gossip"](a, ctx), {"train_loss": jnp.zeros(())}),
        lambda a: a,
        {"gossip": Exchange()},
    )
    oracle = Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
    chans = {"gossip": rj.channels.gossip(topo)}
    x0 = jax.random.normal(jax.random.PRNGKey(0), (n, d))
    state = rj.round.init_state(alg, oracle, chans, x0, jax.random.PRNGKey(9), topology=topo, hp=hp)
    data = jnp.zeros((n, 1))
    if mesh is not None:
        state, data = sharding.shard_nodes((state, data), mesh, num_nodes=n)
    step = rj.round.make_step(alg, oracle, chans, topology=topo)
    run = jax.jit(lambda st, h: rj.round.scan_rounds(step, st, data, h, T, T)[0])
    return run(state, hp), alg, oracle, chans


@pytest.mark.parametrize("family", ["el_oracle", "link_failures"])
def test_a_drawn_graph_shards_through_make_step(family):
    """The node axis over 8 devices: every device draws the round's graph from the same key and
    the gathers of the drawn neighbours cross devices; equal to the unsharded rounds."""
    from redeem_jax.network import sharding

    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py asks for 8 CPU devices)")
    n, d, T = 16, 5, 4
    if family == "el_oracle":
        topo, hp = rg.el_oracle(n, 2), {}
    else:
        topo, hp = U.link_failures(rj.topology.ring(n), hyper("topology.link_up", 0.5)), {"topology.link_up": 0.5}
    ref = _gossip_rounds(topo, n, d, T, hp)[0]
    got = _gossip_rounds(topo, n, d, T, hp, sharding.make_mesh((8,), num_nodes=n))[0]
    assert got.algorithm.sharding.spec[0] == "nodes" and len(got.algorithm.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(got.algorithm), np.asarray(ref.algorithm), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(ref.algorithm), np.asarray(jax.random.normal(jax.random.PRNGKey(0), (n, d))))


@pytest.mark.slow  # two full runs on 8 devices; make_step's sharded = unsharded test above stays in make test
def test_a_drawn_graph_shards_through_the_runner():
    """ClippedGossip under ALIE with link failures p = 0.5, nodes over a 4 x 2 mesh: the same run."""
    over = {
        "topology.link_up": 0.5,
        "aggregation.rule": "clipped_gossip",
        "byzantine.num": 1,
        "byzantine.attack": "alie",
    }
    mesh = (4, 2)
    cfg = dict(num_nodes=8, num_rounds=4, eval_every=2, **over)
    ref = rj.run(small_config(**cfg))
    got = rj.run(small_config(**cfg, **{"perf.mesh": mesh}))
    assert got.params.sharding.spec[0] == "nodes" and len(got.params.sharding.device_set) == 8
    assert got.compilations == 1
    assert "live_edges" in got.metrics  # the graph really was drawn every round
    np.testing.assert_allclose(got.params, ref.params, **RUN_TOL)
    for k in ref.metrics:
        if k != "wall_time":
            np.testing.assert_allclose(got.metrics[k], ref.metrics[k], err_msg=k, **RUN_TOL)


# --------------------------------------------------------------------------- 4. edge attacks on live edges
def _tampers(byz):
    from redeem_jax import channels
    from redeem_jax.byzantine import attacks

    return {
        "alie_global": channels.global_view(channels.vector_tamper(attacks.get("alie")), byz),
        "huge_lifted": channels.edge_tamper(attacks.lift("huge", value=1e6)),
        "dissensus": channels.edge_tamper(attacks.dissensus),
    }


@pytest.mark.parametrize("rule", ["gossip", "clipped_gossip", "ios", "trimmed_mean"])
def test_a_byzantine_node_reaches_only_the_nodes_it_is_linked_to_this_round(rule):
    """Link failures p = 0.3 on a 3-regular graph, Byzantine node 0. Every round, an honest node
    with no live link to node 0 gets exactly the attack-free update (for every attack); when
    all of node 0's links are down, every honest node does; and some linked node is moved
    (the attack does reach its live neighbours)."""
    from redeem_jax import channels
    from redeem_jax.byzantine import aggregators

    n, d, R = 10, 3, 12
    base = rj.topology.random_regular(n, 3, seed=2)
    topo = U.link_failures(base, 0.3)
    byz = np.zeros(n, bool)
    byz[0] = True
    agg = aggregators.get("trimmed_mean") if rule == "trimmed_mean" else rule
    x = jax.random.normal(jax.random.PRNGKey(7), (n, d))
    clean = channels.robust_gossip(topo, agg, 1, byz, attack=None)
    tampers = _tampers(byz)
    tampered = {k: channels.robust_gossip(topo, agg, 1, byz, attack=t) for k, t in tampers.items()}

    def outputs(key):
        edges = rj.core.Edges.of(topo, jnp.int32(0), key)
        ctx = rj.core.Ctx(jnp.int32(0), jax.random.fold_in(key, 1), edges, jnp.asarray(~byz), {})
        ys = {k: ch.update(x, ch.init(x), ctx)[0] for k, ch in {"clean": clean, **tampered}.items()}
        # linked[i]: node 0 is a live in-neighbour of i this round
        linked = jnp.any((edges.neighbors == 0) & edges.mask, axis=1)
        # per-edge messages: a tamper may change only live slots from node 0 into honest nodes
        msgs = x[edges.neighbors]
        stray = jnp.zeros((), bool)
        for t in tampers.values():
            forged = t.update(msgs, x, edges, jnp.asarray(byz), t.init(d), ctx)[0]
            changed = jnp.any(forged != msgs, axis=-1)
            stray = stray | jnp.any(changed & ~((edges.neighbors == 0) & edges.mask & ~jnp.asarray(byz)[:, None]))
        return ys, linked, stray

    outputs = jax.jit(outputs)
    isolated_rounds = moved = 0
    for r in range(R):
        ys, linked, stray = outputs(jax.random.PRNGKey(100 + r))
        assert not bool(stray), f"a forged message on a down or non-Byzantine slot, round {r}"
        ys, linked = {k: np.asarray(v) for k, v in ys.items()}, np.asarray(linked)
        unlinked = ~linked & ~byz
        isolated_rounds += not linked[~byz].any()
        for k in tampered:
            np.testing.assert_array_equal(ys[k][unlinked], ys["clean"][unlinked], err_msg=f"{k}, round {r}")
            moved += bool(np.any(np.abs(ys[k][linked & ~byz] - ys["clean"][linked & ~byz]) > 1e-6))
    assert isolated_rounds >= 1 and moved >= 1  # both cases occurred among the R rounds


# --------------------------------------------------------------------------- 2. network DP from a run
def _run_key(seed):
    # build.Experiment.init_state: PRNGKey(seed) split into (init key, run key)
    return jax.random.split(jax.random.PRNGKey(seed))[1]


def _graph_key(run_key, t):
    # round.py: round t starts from fold_in(key, t), split into (round key, channels key); the
    # graph is drawn from fold_in(round key, tag("topology"))
    return jax.random.fold_in(jax.random.split(jax.random.fold_in(run_key, t))[0], rj.core.tag("topology"))


def _dense_leakage(W, v):
    """Independent dense NumPy network-DP leakage (noise once, neighbours observed, the observer
    knows its own value): rows of P_t = W_{t-1}...W_0 for v and its live in-neighbours at t,
    a_u^T (N N^T)^+ a_u with N = A (Cyffers & Bellet 2022)."""
    n = W.shape[1]
    P, rows = np.eye(n), []
    for t in range(W.shape[0]):
        seen = np.union1d(np.flatnonzero(W[t, v]), [v])
        rows.append(P[seen])
        P = W[t] @ P
    A = np.concatenate(rows)
    A[:, v] = 0.0
    N = np.delete(A, v, axis=1)
    G = np.linalg.pinv(N @ N.T, rcond=1e-10, hermitian=True)
    out = np.einsum("ru,rs,su->u", A, G, A)
    out[v] = 1.0
    return np.clip(out, 0, 1)


def test_network_dp_from_the_recorded_matrices_of_a_run(tmp_path):
    from redeem_jax.privacy.analysis import network_dp as ndp

    # static ring: the recording is the static sequence, the leakage exactly the static computation
    exp = rj.build(tiny())
    (tmp_path / "static").mkdir()
    ndp.record_run(exp, exp.init_state()._replace(round=jnp.int32(4)), tmp_path / "static")
    W = ndp.load_mixing_sequence(tmp_path / "static")
    np.testing.assert_array_equal(W, ndp.mixing_sequence(exp.topology, 4))
    np.testing.assert_array_equal(
        ndp.leakage_from_run(tmp_path / "static"), ndp.leakage_matrix(ndp.mixing_sequence(exp.topology, 4))
    )

    # link failures p = 0.5: the recording holds W(t) of the run's own graph keys
    c = tiny(**{"num_rounds": 5, "topology.link_up": 0.5, "privacy.network_dp_record": True, "seed": 3})
    res = rj.run(c, tmp_path / "drawn")
    W = ndp.load_mixing_sequence(tmp_path / "drawn")
    topo = res.experiment.topology
    assert W.shape == (5, 6, 6)
    np.testing.assert_array_equal(np.asarray(res.state.key), np.asarray(_run_key(3)))
    hp = {"topology.link_up": jnp.float32(0.5)}
    for t in range(5):
        np.testing.assert_allclose(
            W[t], topo.sample_mixing_matrix(t, _graph_key(_run_key(3), t), hp), rtol=0, atol=1e-7
        )
    assert len({W[t].tobytes() for t in range(5)}) > 1  # the graph really changed
    L = ndp.leakage_from_run(tmp_path / "drawn")
    for v in range(6):
        np.testing.assert_allclose(L[:, v], _dense_leakage(W, v), atol=1e-8, err_msg=f"observer {v}")
    np.testing.assert_allclose(ndp.leakage_from_run(res), L, atol=1e-12)  # from the RunResult alone


def test_realised_matrices_are_the_ones_the_step_gossiped_with():
    """A gossip-only round (x <- W(t) x) through make_step on a drawn graph with a traced p: after
    T rounds the models are prod_t W(t) x0 with the matrices realised_mixing_sequence returns."""
    from redeem_jax.privacy.analysis import network_dp as ndp

    n, d, T = 7, 3, 5
    topo = U.link_failures(rj.topology.erdos_renyi(n, 0.6, seed=3), hyper("topology.link_up", 0.5))
    hp = {"topology.link_up": jnp.float32(0.4)}
    state = _gossip_rounds(topo, n, d, T, hp)[0]
    x0 = jax.random.normal(jax.random.PRNGKey(0), (n, d))
    W = ndp.realised_mixing_sequence(topo, state.key, T, hp)
    want = np.asarray(x0, np.float64)
    for t in range(T):
        want = W[t] @ want
    np.testing.assert_allclose(np.asarray(state.algorithm), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(W[0], W[1])
