"""Sharding the node axis over 8 fake CPU devices (tests/conftest.py) gives the unsharded results.

Tolerances: ppermute gossip only moves rows between devices and then applies the
same ``c_0 x + sum_s c_s roll(x, s)`` as ``gossip.mix(method="roll")``, but XLA's
CPU code generator may contract ``a*x + y`` into an FMA in one program and not in
the other, so results may differ by one float32 ulp (observed <= 1.2e-7 on
O(1) values). We assert ``atol = rtol = 1e-6`` (about 8 ulps) on one step, and
``2e-6`` after 12 rounds of training (observed <= 1.2e-7; SGD with lr 0.05 and a
contractive gossip does not amplify roundoff in so few rounds). Where no rounding
happens at all it is exact: pure row shifts, and the one-peer exponential graph
whose weights 1/2 make every product exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import redeem_jax as rj
from redeem_jax import distributed, sharding

from _configs import small_config

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices (tests/conftest.py sets 8 CPU devices)")

TOL = dict(rtol=1e-6, atol=1e-6)
RUN_TOL = dict(rtol=2e-6, atol=2e-6)


def _x(n, d=6, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, d), jnp.float32)


# --------------------------------------------------------------------------- meshes
def test_make_mesh_shapes_and_errors():
    assert sharding.make_mesh((8,)).shape == {"nodes": 8}
    assert sharding.make_mesh((-1,)).shape == {"nodes": len(jax.devices())}
    assert sharding.make_mesh((4, 2)).shape == {"nodes": 4, "model": 2}
    assert sharding.make_mesh((-1, 2)).shape == {"nodes": len(jax.devices()) // 2, "model": 2}
    assert sharding.make_mesh((2, 4), axis_names=("sweep", "nodes")).axis_names == ("sweep", "nodes")
    with pytest.raises(ValueError, match="needs 16 devices but only 8"):
        sharding.make_mesh((16,), devices=jax.devices()[:8])
    with pytest.raises(ValueError, match="12 nodes cannot be split evenly over the mesh's 8"):
        sharding.make_mesh((8,), num_nodes=12)
    with pytest.raises(ValueError, match="at most one entry may be -1"):
        sharding.make_mesh((-1, -1))
    with pytest.raises(ValueError, match="cannot be split evenly"):
        sharding.shard_nodes(_x(12), sharding.make_mesh((8,)))


def test_shard_nodes_places_node_leaves_and_replicates_the_rest():
    exp = rj.build(
        small_config(
            num_nodes=16,
            **{
                "data.name": "logistic",
                "model.name": "mlp",
                "model.hidden": (3,),
                "data.dim": 4,
                "optimizer.name": "momentum",
            },
        )
    )
    model = exp.model  # d = 4*3+3+3*2+2 = 23 (odd)
    state = exp.init_state()
    mesh = sharding.make_mesh((8,))
    s = sharding.shard_nodes(state, mesh)
    assert exp.models(s).sharding == NamedSharding(mesh, P("nodes"))
    assert all(leaf.sharding.spec == P("nodes") for leaf in jax.tree.leaves(s.algorithm.opt) if leaf.ndim)
    assert s.round.sharding.spec == P() and s.key.sharding.spec == P()
    assert exp.models(s).addressable_shards[0].data.shape == (2, model.num_params)
    np.testing.assert_array_equal(exp.models(s), exp.models(state))
    # 2-D mesh: the model axis splits d when it divides, else that leaf is replicated along it.
    mesh2 = sharding.make_mesh((4, 2))
    assert model.num_params % 2 == 1
    assert exp.models(sharding.shard_nodes(state, mesh2)).sharding.spec == P("nodes")
    even = sharding.shard_nodes(_x(16, 6), mesh2)
    assert even.sharding.spec == P("nodes", "model") and even.addressable_shards[0].data.shape == (4, 3)


def test_shard_sweep_adds_a_leading_axis():
    xs = jnp.stack([_x(16, 4, s) for s in range(4)])  # [G, n, d]
    rounds = jnp.arange(4)  # [G] per-point scalars
    mesh = sharding.make_mesh((8,))
    a, r = sharding.shard_sweep((xs, rounds), mesh, num_nodes=16)
    assert a.sharding.spec == P(None, "nodes") and r.sharding.spec == P()
    smesh = sharding.make_mesh((2, 4), axis_names=("sweep", "nodes"))
    a, r = sharding.shard_sweep((xs, rounds), smesh, num_nodes=16)
    assert a.sharding.spec == P("sweep", "nodes") and r.sharding.spec == P("sweep")
    # Gossip vmapped over the sweep axis on either layout equals the unsharded mix.
    topo = rj.topology.ring(16)
    want = jax.vmap(lambda x: rj.gossip.mix(topo, x, method="sparse"))(xs)
    got = jax.jit(jax.vmap(lambda x: sharding.ppermute_mix(topo, x, mesh)))(sharding.shard_sweep(xs, mesh, 16))
    assert got.sharding.spec == P(None, "nodes")
    np.testing.assert_allclose(got, want, **TOL)
    # spmd_axis_name tells shard_map the vmapped axis is split over "sweep" (no all-gather).
    got = jax.jit(jax.vmap(lambda x: sharding.ppermute_mix(topo, x, smesh), spmd_axis_name="sweep"))(a)
    assert got.sharding.spec == P("sweep", "nodes")
    np.testing.assert_allclose(got, want, **TOL)


# --------------------------------------------------------------------------- gossip
@pytest.mark.parametrize("n", [16, 24])
def test_block_shifts_equal_roll_exactly(n):
    # The data movement alone (every shift, both block-aligned and straddling two blocks).
    mesh = sharding.make_mesh((8,))
    x = sharding.shard_nodes(_x(n, 3), mesh)
    for s in range(-1, n + 1):
        f = jax.shard_map(
            lambda b: sharding._block_roll(b, s, n, 8), mesh=mesh, in_specs=P("nodes"), out_specs=P("nodes")
        )
        np.testing.assert_array_equal(jax.jit(f)(x), jnp.roll(x, s, axis=0))


@pytest.mark.parametrize("mesh_shape", [(8,), (4, 2)])
@pytest.mark.parametrize(
    "topo",
    [rj.topology.ring(16), rj.topology.exponential(24), rj.topology.complete(8), rj.topology.exponential(32)],
    ids=lambda t: f"{t.name}{t.n}",
)
def test_ppermute_mix_equals_mix_on_circulant_graphs(topo, mesh_shape):
    mesh = sharding.make_mesh(mesh_shape)
    assert sharding.uses_ppermute(topo)
    for d in (6, 5):  # 5: the model axis does not divide d, rows replicated along it
        x = _x(topo.n, d)
        got = jax.jit(lambda v: sharding.ppermute_mix(topo, v, mesh))(sharding.shard_nodes(x, mesh))
        assert got.sharding.spec[0] == "nodes"
        for method in ("roll", "sparse", "dense"):
            np.testing.assert_allclose(got, rj.gossip.mix(topo, x, method=method), **TOL)


@pytest.mark.parametrize("mesh_shape", [(8,), (4, 2)])
def test_one_peer_exponential_over_several_rounds_is_exact(mesh_shape):
    topo = rj.topology.one_peer_exponential(32)  # period 5; W(t) = (I + P^(2^t)) / 2
    mesh = sharding.make_mesh(mesh_shape)
    x = _x(32, 4)
    rounds = 2 * topo.period + 1

    def run(mix, x):  # traced round, as inside a scanned chunk
        return jax.lax.fori_loop(0, rounds, lambda t, v: mix(v, t), x)

    got = jax.jit(lambda v: run(lambda v, t: sharding.ppermute_mix(topo, v, mesh, round=t), v))(
        sharding.shard_nodes(x, mesh)
    )
    for method in ("roll", "sparse", "dense"):
        want = jax.jit(lambda v: run(lambda v, t: rj.gossip.mix(topo, v, round=t, method=method), v))(x)
        np.testing.assert_array_equal(got, want)  # weights 1/2: no rounding differs
    # Static rounds pick the branch in Python.
    for t in range(topo.period):
        np.testing.assert_array_equal(
            sharding.ppermute_mix(topo, x, mesh, round=t), rj.gossip.mix(topo, x, round=t, method="roll")
        )


@pytest.mark.parametrize(
    "topo", [rj.topology.torus(4, 4), rj.topology.random_regular(16, 3, seed=1)], ids=lambda t: t.name
)
def test_non_circulant_graphs_gather_on_sharded_rows(topo):
    mesh = sharding.make_mesh((8,))
    assert not sharding.uses_ppermute(topo)
    with pytest.raises(ValueError, match="circulant"):
        sharding.ppermute_mix(topo, _x(16), mesh)
    x = _x(16)
    comm = rj.channels.gossip(topo, "auto", mesh)
    ref = rj.channels.gossip(topo, "sparse")

    def exchange(channel, x):
        ctx = rj.core.Ctx(
            jnp.int32(3), jax.random.PRNGKey(0), rj.core.Edges.of(topo, jnp.int32(3)), jnp.ones(16, bool), {}
        )
        return channel.update(x, (), ctx)[0]

    got = jax.jit(lambda x: exchange(comm, x))(sharding.shard_nodes(x, mesh))
    np.testing.assert_allclose(got, exchange(ref, x), **TOL)
    with pytest.raises(ValueError, match="circulant"):
        rj.channels.gossip(topo, "roll", mesh)


# --------------------------------------------------------------------------- whole runs
RUNS = {
    "dsgd_ring": ({}, (8,)),
    "dsgd_one_peer_2d": ({"topology.name": "one_peer_exponential"}, (4, 2)),
    "clipped_gossip_alie": (
        {"aggregation.rule": "clipped_gossip", "byzantine.num": 1, "byzantine.attack": "alie"},
        (8,),
    ),
    "dp_sgd": ({"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 1.0}, (-1,)),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_sharded_run_equals_unsharded_run(name):
    over, mesh = RUNS[name]
    ref = rj.run(small_config(num_rounds=12, eval_every=6, **over))
    got = rj.run(small_config(num_rounds=12, eval_every=6, **{"perf.mesh": mesh}, **over))
    assert got.params.sharding.spec[0] == "nodes"
    assert len(got.params.sharding.device_set) == 8
    assert got.compilations == 1
    np.testing.assert_allclose(got.params, ref.params, **RUN_TOL)
    assert set(got.metrics) == set(ref.metrics)
    for k in ref.metrics:
        if k != "wall_time":
            np.testing.assert_allclose(got.metrics[k], ref.metrics[k], err_msg=k, **RUN_TOL)


def test_mesh_that_does_not_divide_the_nodes_is_a_config_error():
    with pytest.raises(rj.config.ConfigError, match="perf.mesh.*12 nodes cannot be split"):
        rj.build(small_config(num_nodes=12, **{"perf.mesh": (8,)}))


# --------------------------------------------------------------------------- distributed
def test_distributed_initialize_is_a_no_op_for_one_process(monkeypatch):
    for v in (
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
        "SLURM_JOB_ID",
        "OMPI_MCA_orte_hnp_uri",
        "TPU_WORKER_HOSTNAMES",
        "KUBERNETES_SERVICE_HOST",
    ):
        monkeypatch.delenv(v, raising=False)
    assert distributed.initialize(rj.config.base_config()) is False
    assert distributed.initialize() is False
    assert not distributed.is_initialized()
    env = {"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"}
    assert distributed.settings(None, env) == {"coordinator_address": "h:1234", "num_processes": 4, "process_id": 2}
    c = rj.config.base_config()
    c.distributed.coordinator, c.distributed.num_processes, c.distributed.process_id = "a:1", 2, 0
    assert distributed.settings(c, env) == {"coordinator_address": "a:1", "num_processes": 2, "process_id": 0}


def test_node_data_is_split_over_the_mesh_not_copied():
    exp = rj.build(small_config())
    mesh = sharding.make_mesh((8,), num_nodes=exp.config.num_nodes)
    data = sharding.shard_nodes(exp.node_data, mesh, num_nodes=exp.config.num_nodes)
    for leaf in (data.x, data.y, data.sizes):
        assert leaf.sharding.spec[0] == "nodes"
        shard = leaf.addressable_shards[0].data
        assert shard.shape[0] == exp.config.num_nodes // 8  # each device holds only its nodes' rows
