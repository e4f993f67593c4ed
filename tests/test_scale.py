"""Large networks stay cheap: no dense [N, N] array, no Python loop over nodes.

The 10^6-node run itself is benchmarks/scale.py (docs/performance.md); these
checks take seconds. They assert sizes (peak host memory, stored arrays), never
wall-clock time: a loaded machine must not fail them.
"""

import importlib
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

import redeem_jax as rj

# rj.data.partition is the function; the module holds node_assignment / group_by_node.
# import_module, not sys.modules: with lazy imports the module may not be loaded yet.
_partition = importlib.import_module("redeem_jax.data.partition")

N = 20_000


def _config(**overrides):
    c = rj.config.base_config()
    fields = {
        "num_nodes": N,
        "topology.name": "random_regular",
        "topology.k": 8,
        "data.name": "linear",
        "model.name": "linear",
        "data.dim": 5,
        "data.num_examples": N * 5,
        "data.batch_size": 2,
        "optimizer.learning_rate": 0.05,
        "progress": False,
        "plots": False,
        "checkpoint_every": 0,
    }
    for k, v in {**fields, **overrides}.items():
        rj.config.set_field(c, k, v)
    return c


def test_build_and_gossip_rounds_at_scale_match_sparse_w():
    """Two D-SGD rounds with zero step size on a built 2·10^4-node network (K = 8) equal
    W²x from scipy and keep the node mean (benchmarks/scale.py runs the real round at 10^6)."""
    # Zero learning rate (a hyper-parameter: an argument of the step): the round is x <- W x
    # exactly (Lian et al. 2017, ATC).
    exp = rj.build(_config(**{"perf.gossip": "sparse"}))
    topo = exp.topology
    assert topo.n == N and topo.K == 8
    assert exp.node_data.x.shape == (N, 4, 5)  # 4 train examples per node, no padding
    hp = exp.hp_values(**{"optimizer.learning_rate": 0.0})
    s0 = exp.init_state(hp=hp)
    # The linear model starts at 0 on every node; disagree, so that gossip has work to do.
    x0 = jax.random.normal(jax.random.PRNGKey(2), (N, exp.model.num_params))
    s0 = s0._replace(algorithm=s0.algorithm._replace(x=x0))
    step = jax.jit(exp.step)
    s1, m1 = step(s0, exp.node_data, hp)
    s2, m2 = step(s1, exp.node_data, hp)
    W = topo.sparse_mixing_matrix()
    ref = W @ (W @ np.asarray(x0, np.float64))
    x2 = np.asarray(exp.models(s2), np.float64)
    np.testing.assert_allclose(x2, ref, atol=1e-5)
    np.testing.assert_allclose(x2.mean(0), np.asarray(x0, np.float64).mean(0), atol=1e-6)  # W doubly stochastic
    ones = jnp.ones(N, bool)
    cd = [float(rj.metrics.consensus_distance(exp.models(s), ones)) for s in (s0, s1, s2)]
    assert 0 < cd[2] < cd[1] < cd[0]
    assert int(s2.round) == 2 and np.isfinite(float(m1["train_loss"])) and np.isfinite(float(m2["train_loss"]))


def _peak_bytes(fn):
    """``(fn(), peak bytes numpy and Python allocated during it)`` (tracemalloc sees numpy)."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_million_node_topologies_are_sparse():
    """Degree <= 8 families on 10^6 nodes build in O(n + edges) memory (~90 bytes per node
    and edge here), without a dense matrix."""
    n = 10**6
    for name, K in (("ring", 2), ("torus", 4)):
        topo, peak = _peak_bytes(lambda: rj.topology.get(name, n))  # noqa: B023
        assert peak <= 256 * (n + topo.num_edges), (name, peak)
        assert topo.neighbors.shape == (n, K) and topo.weights.shape == (n, K)
        assert "adjacency" not in topo._cache  # nothing dense was built
        repr(topo)  # stays instant (no O(n^3) norm)
    ring = rj.topology.ring(n)
    rho = 1 / 3 + 2 / 3 * np.cos(2 * np.pi / n)  # Xiao & Boyd 2004; FFT path, not eigsh
    assert abs(ring.rho() - rho) < 1e-12


def test_hundred_thousand_node_erdos_renyi_is_o_of_edges():
    """G(n, p) at n = 10^5 (mean degree 20) drew 5·10^9 pair coins before (no result in 120 s);
    by geometric skipping its peak memory and stored arrays are O(n + edges)."""
    n, p = 100_000, 2e-4
    topo, peak = _peak_bytes(lambda: rj.topology.erdos_renyi(n, p, seed=0))
    m = topo.num_edges
    assert abs(m / 2 - n * (n - 1) / 2 * p) <= 5 * np.sqrt(n * (n - 1) / 2 * p)  # Binomial mean
    assert peak <= 256 * (n + m), peak
    assert not topo.is_padding_wasteful and topo.neighbors.size <= 4 * (n + m)
    assert "adjacency" not in topo._cache


def test_million_node_partition_is_vectorized():
    """Splitting 2·10^6 examples over 10^6 nodes is array work (O(examples) memory), and
    equals ``partition``."""
    n = 10**6
    y = np.zeros(2 * n, np.float32)
    (order, sizes), peak = _peak_bytes(
        lambda: _partition.group_by_node(_partition.node_assignment(y, n, "iid", seed=0), n)
    )
    assert peak <= 128 * y.size
    assert np.all(sizes == 2) and np.array_equal(np.sort(order), np.arange(2 * n))
    small = np.arange(103) % 3
    parts = rj.data.partition(small, 10, "iid", seed=4)
    o, s = _partition.group_by_node(_partition.node_assignment(small, 10, "iid", seed=4), 10)
    assert np.array_equal(np.concatenate(parts), o) and [len(p) for p in parts] == s.tolist()


def test_partition_plot_of_many_nodes_is_a_histogram():
    """A bar per node of a 10^6-node network would take minutes; above 512 nodes, a histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.arange(3000) % 4
    o, s = _partition.group_by_node(_partition.node_assignment(y, 1000, "iid"), 1000)
    ax = _partition.grouped_summary(y, o, s, 4).plot()
    assert len(ax.patches) < 100 and ax.get_xlabel() == "examples per node"
    plt.close(ax.figure)


def test_max_byzantine_neighbours_needs_no_dense_matrix():
    from redeem_jax.experiment.build import max_byzantine_neighbours

    topo = rj.topology.ring(1_000_000)
    byz = np.zeros(topo.n, bool)
    byz[[10, 12, 500]] = True
    assert max_byzantine_neighbours(topo, byz) == 2  # node 11 sits between two attackers
    small = rj.topology.get("torus", 16)
    b = np.zeros(16, bool)
    b[[0, 5]] = True
    A = small.mixing_matrix() != 0
    np.fill_diagonal(A, False)
    assert max_byzantine_neighbours(small, b) == int(A[~b][:, b].sum(1).max())


def test_per_node_evaluation_on_a_subset_of_nodes():
    from redeem_jax.experiment.build import evaluate_fn

    model = rj.models.get("linear", (3,), 1, "regression")
    x = jax.random.normal(jax.random.PRNGKey(0), (50, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5])
    params = jax.random.normal(jax.random.PRNGKey(1), (10, model.num_params))
    honest = jnp.ones(10, bool)
    full = evaluate_fn(model, x, y)(params, honest)
    sub = evaluate_fn(model, x, y, max_nodes=4)(params, honest)
    idx = np.linspace(0, 9, 4).round().astype(int)
    ref = evaluate_fn(model, x, y)(params[idx], honest[idx])
    assert float(sub["test_loss"]) == float(full["test_loss"])  # averaged model: every node
    for k in ("node_test_loss_mean", "node_test_loss_min", "node_test_loss_max"):
        np.testing.assert_allclose(float(sub[k]), float(ref[k]), rtol=1e-6)
    assert float(evaluate_fn(model, x, y, max_nodes=10)(params, honest)["node_test_loss_mean"]) == float(
        full["node_test_loss_mean"]
    )
