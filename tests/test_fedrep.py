"""Shared body, personal head (FedPer, FedRep) and the local-only baseline, against references.

* ``rj.channels.shared_coordinates``: whatever the inner exchange does (a robust rule under a
  Byzantine attack), the personal columns come out bit for bit as they went in, and the shared
  ones equal the inner exchange run on the shared columns alone; one row costs d_shared floats.
* FedRep's round (head steps, then body steps, then the body's server average) against a
  hand-written loop over nodes with ``jax.grad`` of each node's own loss.
* ``local_only``: N independent gradient-descent runs.
* From a config: FedRep checkpoints and resumes identically, and logs d_shared floats per edge.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.algorithms import fedrep as fr
from redeem_jax.algorithms import local_only as lo

N = 8


def _ctx(topo=None, n=N, honest=None, key=0):
    edges = rj.core.Edges.of(topo, 0) if topo is not None else None
    h = jnp.ones(n, bool) if honest is None else jnp.asarray(honest)
    return rj.core.Ctx(jnp.int32(0), jax.random.PRNGKey(key), edges, h, {})


def _tiny_mlp():
    return rj.models.get("mlp", (3,), 2, hidden=(4,))


def test_head_mask_is_the_last_dense_layer_in_ravel_order():
    model = _tiny_mlp()  # Dense_0: 3·4 + 4 = 16 body floats, Dense_1: 4·2 + 2 = 10 head floats
    mask = rj.models.head_mask(model)
    assert mask.shape == (model.num_params,) and mask.sum() == 10
    # Independent check: a row that is 1 on the mask unravels to ones exactly in Dense_1.
    tree = model.unravel(jnp.asarray(mask, jnp.float32))["params"]
    assert all(np.all(v == 1) for v in jax.tree.leaves(tree["Dense_1"]))
    assert all(np.all(v == 0) for v in jax.tree.leaves(tree["Dense_0"]))
    assert rj.models.head_mask(rj.models.get("linear", (3,), 2)).all()  # a linear model is all head


def _huge(honest, f, key=None, mask=None, num_byzantine=None):
    return jnp.full((f, honest.shape[1]), 1e9, honest.dtype)


def test_robust_gossip_under_attack_never_touches_the_personal_coordinates():
    """Ring, node 3 Byzantine sending 1e9 on every coordinate, trimmed mean with b = 1 over
    {self, left, right}: an honest node's shared coordinates are the coordinate-wise median of
    the three (dense NumPy reference); its personal ones are exactly its own, and so are the
    Byzantine node's (the attack never reaches a personal column)."""
    topo = rj.topology.ring(N)
    byz = np.zeros(N, bool)
    byz[3] = True
    rule = rj.aggregators.get("trimmed_mean")
    inner = rj.channels.robust_gossip(topo, rule, 1, byz, rj.channels.edge_tamper(rj.attacks.lift(_huge), "huge"))
    d = 12
    mask = np.zeros(d, bool)
    mask[[0, 2, 3, 7, 8]] = True
    ch = rj.channels.shared_coordinates(inner, mask)
    x = jax.random.normal(jax.random.PRNGKey(1), (N, d)) * 3.0
    ctx = _ctx(topo, honest=~byz)
    y, _ = ch.update(x, ch.init(x), ctx)
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_array_equal(y[:, ~mask], x[:, ~mask])  # bit for bit, Byzantine row included
    sent = x[:, mask].copy()
    sent[3] = 1e9
    ref = np.median(np.stack([sent, np.roll(sent, 1, 0), np.roll(sent, -1, 0)]), axis=0)
    honest = ~byz
    np.testing.assert_allclose(y[honest][:, mask], ref[honest], rtol=1e-6)
    alone, _ = inner.update(jnp.asarray(x[:, mask]), inner.init(jnp.asarray(x[:, mask])), ctx)
    np.testing.assert_array_equal(y[:, mask], np.asarray(alone))  # the inner channel on the body alone
    assert np.abs(y[honest]).max() < 20  # the huge values were trimmed, not averaged in


def test_server_with_alie_and_trimmed_mean_sees_only_the_body():
    """A server with a trimmed mean under ALIE (f = 2 of 8): personal columns unchanged bit for
    bit; shared ones equal the same server run on the shared columns alone (same key); the
    ALIE rows are computed from the shared columns only (a body-only reference by hand)."""
    byz = np.zeros(N, bool)
    byz[[1, 5]] = True
    make = lambda: rj.channels.server(  # noqa: E731
        rule=rj.aggregators.get("trimmed_mean"),
        f=2,
        byzantine=byz,
        attack=rj.channels.vector_tamper(rj.attacks.get("alie"), "alie"),
    )
    d = 10
    mask = np.arange(d) < 6
    x = jax.random.normal(jax.random.PRNGKey(3), (N, d))
    x = x.at[:, 6:].set(1e6 * jnp.arange(1, N + 1)[:, None])  # huge personal values: must not leak
    ch = rj.channels.shared_coordinates(make(), mask)
    ctx = _ctx(honest=~byz)
    y, s = ch.update(x, ch.init(x), ctx)
    np.testing.assert_array_equal(np.asarray(y[:, 6:]), np.asarray(x[:, 6:]))
    inner = make()
    alone, _ = inner.update(x[:, :6], inner.init(x[:, :6]), ctx)
    np.testing.assert_array_equal(np.asarray(y[:, :6]), np.asarray(alone))
    assert s["model"].shape == (6,)  # the server keeps only the body
    # NumPy reference: x̄ = honest mean of the body; Δ = rows − x̄; ALIE rows = mean − z·std of the
    # honest Δ; trimmed mean over 8 rows cutting 2 at each end per coordinate.
    xb = np.asarray(x[:, :6], np.float64)
    xbar = xb[~byz].mean(0)
    delta = xb - xbar
    z = rj.attacks.alie_z_max(N, 2)
    delta[byz] = delta[~byz].mean(0) - z * delta[~byz].std(0, ddof=1)
    ref = xbar + np.sort(delta, 0)[2:-2].mean(0)
    np.testing.assert_allclose(np.asarray(y[:, :6]), np.broadcast_to(ref, (N, 6)), atol=1e-5)


def test_bytes_count_only_the_shared_coordinates():
    topo = rj.topology.ring(N)
    mask = np.zeros(20, bool)
    mask[:7] = True
    for inner, rows in [(rj.channels.gossip(topo), 2 * N), (rj.channels.server(), 2 * N)]:
        messages, bits = rj.channels.shared_coordinates(inner, mask).wire(20, _ctx(topo))
        assert int(messages) == rows and bits == 32 * 7
    bf16 = rj.core.chain(rj.channels.round_messages("bfloat16"), rj.channels.gossip(topo))
    assert rj.channels.shared_coordinates(bf16, mask).wire(20, _ctx(topo))[1] == 16 * 7
    messages, _ = rj.channels.shared_coordinates(rj.channels.gossip(topo), np.zeros(20, bool)).wire(20, _ctx(topo))
    assert messages == 0  # nothing shared, nothing sent


# --------------------------------------------------------------------------- one round by hand
def _problem(n=4, m=6, seed=0):
    model = _tiny_mlp()
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    xs = jax.random.normal(k[0], (n, m, 3))
    ys = jax.random.randint(k[1], (n, m), 0, 2)
    x0 = jax.vmap(model.init)(jax.random.split(k[2], n))
    ones = jnp.ones((m,), bool)

    def node_loss(p, xi, yi):
        return rj.models.loss_and_metrics(model, p, xi, yi, ones)[0]

    def update(x, s, ctx, data):  # full-batch gradients: a deterministic oracle
        loss, g = jax.vmap(jax.value_and_grad(node_loss))(x, data[0], data[1])
        return loss, g, s

    oracle = rj.core.Oracle(lambda x: (), update)
    return model, (xs, ys), x0, oracle, node_loss


def _run(algorithm, channels, oracle, x0, data, rounds):
    step = rj.round.make_step(algorithm, oracle, channels)
    state = rj.round.init_state(algorithm, oracle, channels, x0, jax.random.PRNGKey(0))
    step = jax.jit(step)
    for _ in range(rounds):
        state, metrics = step(state, data, {})
    return np.asarray(algorithm.models(state.algorithm), np.float64), metrics


def test_fedrep_round_matches_a_hand_written_reference():
    """Collins et al. 2021, Alg. 1 with the server: per node, τ_h = 2 gradient steps on the head
    (body fixed), τ_b = 1 on the body (head fixed), then the body is replaced by the nodes'
    mean and the heads stay. Two rounds against a Python loop over nodes."""
    model, data, x0, oracle, node_loss = _problem()
    lr, n = 0.5, x0.shape[0]
    shared = ~rj.models.head_mask(model)
    opt = rj.local.optim.local_optimizer("sgd", lr)
    alg = fr.fedrep(opt, shared, head_steps=2, local_steps=1, over="server")
    ch = {"body": rj.channels.shared_coordinates(rj.channels.server(), shared)}
    got, metrics = _run(alg, ch, oracle, x0, data, 2)
    grad = jax.grad(node_loss)
    ref = np.asarray(x0, np.float64)
    for _ in range(2):
        rows = []
        for i in range(n):
            p = jnp.asarray(ref[i], jnp.float32)
            for _ in range(2):
                p = p - lr * jnp.where(shared, 0.0, grad(p, data[0][i], data[1][i]))
            p = p - lr * jnp.where(shared, grad(p, data[0][i], data[1][i]), 0.0)
            rows.append(np.asarray(p, np.float64))
        ref = np.stack(rows)
        ref[:, shared] = ref[:, shared].mean(0)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    assert np.ptp(got[:, shared], axis=0).max() < 1e-6  # one body
    assert np.ptp(got[:, ~shared], axis=0).min() > 1e-3  # personal heads
    assert float(metrics["bytes_sent"]) == 2 * n * 4 * shared.sum()


def test_fedper_round_matches_a_hand_written_reference():
    """Arivazhagan et al. 2019: local steps on every coordinate, then the body is gossiped (ring
    W = (I + P + Pᵀ)/3 on 4 nodes); the head stays."""
    model, data, x0, oracle, node_loss = _problem()
    lr, n = 0.3, x0.shape[0]
    shared = ~rj.models.head_mask(model)
    topo = rj.topology.ring(n)
    alg = fr.fedper(rj.local.optim.local_optimizer("sgd", lr), shared, local_steps=2)
    step = rj.round.make_step(
        alg, oracle, {"body": rj.channels.shared_coordinates(rj.channels.gossip(topo), shared)}, topology=topo
    )
    state = rj.round.init_state(
        alg,
        oracle,
        {"body": rj.channels.shared_coordinates(rj.channels.gossip(topo), shared)},
        x0,
        jax.random.PRNGKey(0),
        topology=topo,
    )
    state, _ = jax.jit(step)(state, data, {})
    got = np.asarray(alg.models(state.algorithm), np.float64)
    grad = jax.grad(node_loss)
    rows = []
    for i in range(n):
        p = x0[i]
        for _ in range(2):
            p = p - lr * grad(p, data[0][i], data[1][i])
        rows.append(np.asarray(p, np.float64))
    ref = np.stack(rows)
    W = topo.mixing_matrix()
    ref[:, shared] = W @ ref[:, shared]
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_local_only_is_every_node_trained_alone():
    model, data, x0, oracle, node_loss = _problem()
    lr = 0.4
    alg = lo.local_only(rj.local.optim.local_optimizer("sgd", lr), local_steps=3)
    assert dict(alg.exchanges) == {}
    got, metrics = _run(alg, {}, oracle, x0, data, 2)
    grad = jax.grad(node_loss)
    for i in range(x0.shape[0]):
        p = x0[i]
        for _ in range(6):
            p = p - lr * grad(p, data[0][i], data[1][i])
        np.testing.assert_allclose(got[i], np.asarray(p, np.float64), atol=2e-6)
    assert float(metrics["bytes_sent"]) == 0.0


# --------------------------------------------------------------------------- from a config
def _tiny_run(workdir=None, **over):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _configs import small_config

    base = {"num_rounds": 4, "eval_every": 2, "checkpoint_every": 2, "model.hidden": (4,)}
    return rj.run(small_config(**{**base, **over}), workdir)


def test_fedrep_from_a_config_resumes_identically_and_sends_only_the_body(tmp_path):
    over = {"algorithm.name": "fedrep", "algorithm.personal": "head", "algorithm.head_steps": 2}
    full = _tiny_run(tmp_path / "full", **over)
    _tiny_run(tmp_path / "resumed", **{**over, "num_rounds": 2})
    resumed = _tiny_run(tmp_path / "resumed", **over)
    assert [r["test_loss"] for r in resumed.rows] == [r["test_loss"] for r in full.rows]
    exp = full.experiment
    d_shared = int((~rj.models.head_mask(exp.model)).sum())
    edges = int(exp.topology.edge_mask.sum())
    assert full.final["bytes_per_round"] == edges * 4 * d_shared
    assert np.isfinite(full.final["test_loss"])


def test_config_wiring_dp_byzantine_and_errors():
    """Built, not run: DP-SGD accounts for head and body steps (an oracle call each); a
    Byzantine ALIE attack with a trimmed mean is the inner exchange of the shared coordinates,
    on a graph and on the server; local_only declares no exchange; bad configs name the field."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _configs import small_config

    dp = rj.build(
        small_config(
            **{"algorithm.name": "fedrep", "algorithm.head_steps": 2, "algorithm.local_steps": 3}
            | {"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 1.0, "privacy.clip_norm": 1.0}
        )
    )
    assert dp.privacy["steps_per_round"] == 5
    byz = {"byzantine.num": 1, "byzantine.attack": "alie", "aggregation.rule": "trimmed_mean"}
    graph = rj.build(small_config(**{"algorithm.name": "fedper", "topology.name": "complete"} | byz))
    d_shared = int((~rj.models.head_mask(graph.model)).sum())
    assert graph.channels["body"].name.startswith(f"shared[{d_shared}/{graph.model.num_params}](robust_gossip")
    fed = rj.build(small_config(**{"algorithm.name": "fedrep", "algorithm.over": "server"} | byz))
    assert fed.channels["body"].name.endswith("(server[robust])")
    assert rj.build(small_config(**{"algorithm.name": "local_only"})).channels == {}
    with pytest.raises(rj.config.ConfigError, match="config.model.name: 'linear' is its head alone"):
        rj.build(small_config(**{"algorithm.name": "fedrep", "model.name": "linear"}))
    with pytest.raises(rj.config.ConfigError, match="config.algorithm.personal"):
        rj.build(small_config(**{"algorithm.name": "fedper", "algorithm.personal": "body"}))
