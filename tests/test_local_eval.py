"""Per-node evaluation (issue 14, point 1): local train/test splits with each node's own label
distribution (``data.local_test_fraction``) and the ``local_test_*`` metrics of ``evaluate_fn``."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.data import sampling
from redeem_jax.experiment.build import evaluate_fn

from _configs import small_config

N, C, M = 8, 5, 600


def _id_dataset(seed=0):
    """A dataset whose features are the example ids, so that every stacked row names its example."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, M).astype(np.int32)
    x = np.arange(M, dtype=np.float32)[:, None]
    return types.SimpleNamespace(x_train=x, y_train=y, num_classes=C, task="classification")


def _rows(a, sizes):
    """Per node, the real rows (example ids) of a padded [N, m, 1] array."""
    a, sizes = np.asarray(a)[..., 0].astype(np.int64), np.asarray(sizes)
    return [a[i, : sizes[i]] for i in range(len(sizes))]


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_fraction_zero_is_the_split_of_before(method):
    ds = _id_dataset()
    opts = dict(alpha=0.1, shards_per_node=2)
    nd0, s0 = sampling.distribute_with_summary(ds, N, method, seed=3, local_test_fraction=0.0, **opts)
    # Independent reference: the list partition stacked by stack_parts (the pre-existing path).
    ref = sampling.stack_parts(ds.x_train, ds.y_train, rj.data.partition(ds.y_train, N, method, seed=3, **opts))
    for a, b in zip((nd0.x, nd0.y, nd0.sizes), (ref.x, ref.y, ref.sizes)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.dtype == b.dtype
    assert nd0.test_x is None and nd0.test_y is None and nd0.test_sizes is None
    assert len(jax.tree.leaves(nd0)) == 3  # the step sees the same pytree leaves as before
    assert not rj.data.local_test_split(ds.y_train, np.zeros(M, np.int64), 0.0).any()


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_local_test_keeps_each_nodes_label_distribution_and_is_disjoint(method):
    ds, f = _id_dataset(1), 0.2
    opts = dict(alpha=0.1, shards_per_node=2)
    nd, summary = sampling.distribute_with_summary(ds, N, method, seed=5, local_test_fraction=f, **opts)
    parts = rj.data.partition(ds.y_train, N, method, seed=5, **opts)  # the node assignment without a split
    train, test = _rows(nd.x, nd.sizes), _rows(nd.test_x, nd.test_sizes)
    y = ds.y_train
    for i in range(N):  # host-side check, a loop over 8 nodes
        assert np.intersect1d(train[i], test[i]).size == 0  # no example in both
        np.testing.assert_array_equal(np.sort(np.concatenate([train[i], test[i]])), parts[i])  # same node data
        np.testing.assert_array_equal(np.asarray(nd.y)[i, : len(train[i])], y[train[i]])  # labels follow rows
        np.testing.assert_array_equal(np.asarray(nd.test_y)[i, : len(test[i])], y[test[i]])
        h_all = np.bincount(y[parts[i]], minlength=C)
        h_test = np.bincount(y[test[i]], minlength=C)
        # Stratified: every (node, class) cell gives round(f·count) examples to test.
        assert np.all(np.abs(h_test - f * h_all) <= 0.5 + 1e-9), (i, h_test, h_all)
        np.testing.assert_array_equal(summary.histogram[i], h_all - h_test)  # the summary is of the train split
    # Padding: rows past test_sizes are zero, as for the train arrays.
    pad = np.arange(nd.test_x.shape[1])[None, :] >= np.asarray(nd.test_sizes)[:, None]
    assert not np.asarray(nd.test_x)[pad].any() and not np.asarray(nd.test_y)[pad].any()
    assert int(np.asarray(nd.test_sizes).sum()) == sum(
        np.floor(f * np.bincount(y[p], minlength=C) + 0.5).sum() for p in parts
    )


def test_split_rejects_a_fraction_that_empties_a_node():
    y = np.array([0, 1, 2, 0], np.int32)
    with pytest.raises(ValueError, match="no train example"):
        rj.data.local_test_split(y, np.array([0, 0, 0, 1]), 0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        rj.data.local_test_split(y, np.zeros(4, np.int64), 1.0)
    with pytest.raises(rj.config.ConfigError, match="local_test_fraction"):
        rj.build(small_config(**{"data.local_test_fraction": 1.0}))


def _numpy_reference(model, params, lx, ly, lsizes, honest):
    """Per-node loop: accuracy and mean cross-entropy of node i's model on its real local rows."""
    acc, loss, keep = [], [], []
    for i in range(params.shape[0]):
        s = int(lsizes[i])
        logits = np.asarray(model.apply(params[i], lx[i, : max(s, 1)]), np.float64)[:s]
        z = logits - logits.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        acc.append(np.mean(logits.argmax(1) == ly[i, :s]) if s else 0.0)
        loss.append(-np.mean(logp[np.arange(s), ly[i, :s]]) if s else 0.0)
        keep.append(bool(honest[i]) and s > 0)
    keep = np.array(keep)
    out = {}
    for name, v in (("accuracy", np.array(acc)), ("loss", np.array(loss))):
        out[f"local_test_{name}_mean"] = v[keep].mean()
        out[f"local_test_{name}_std"] = v[keep].std()
        out[f"local_test_{name}_min"] = v[keep].min()
        out[f"local_test_{name}_max"] = v[keep].max()
    return out


def test_local_metrics_equal_a_numpy_loop_over_nodes():
    n, t, dim = 6, 7, 4
    model = rj.models.get("mlp", (dim,), 3, "classification", hidden=(5,))
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = jax.random.normal(k[0], (n, model.num_params))
    lx = np.asarray(jax.random.normal(k[1], (n, t, dim)))
    ly = np.asarray(jax.random.randint(k[2], (n, t), 0, 3)).astype(np.int32)
    lsizes = np.array([7, 3, 0, 5, 1, 6], np.int32)  # node 2 has no local test example: left out
    live = np.arange(t)[None, :] < lsizes[:, None]
    lx, ly = np.where(live[..., None], lx, 0.0).astype(np.float32), np.where(live, ly, 0)
    honest = np.array([True, True, True, False, True, True])  # node 3 is Byzantine: left out
    x_test = np.asarray(jax.random.normal(k[3], (20, dim)))
    y_test = np.arange(20) % 3
    out = evaluate_fn(model, x_test, y_test, local_test=(lx, ly, lsizes))(params, jnp.asarray(honest))
    ref = _numpy_reference(model, np.asarray(params), lx, ly, lsizes, honest)
    for key, v in ref.items():
        np.testing.assert_allclose(float(out[key]), v, rtol=2e-5, atol=1e-6, err_msg=key)
    plain = evaluate_fn(model, x_test, y_test)(params, jnp.asarray(honest))
    assert not any("local" in key for key in plain)  # no local test set: the metrics of before
    for key, v in plain.items():  # and the global metrics are untouched by the local ones
        assert float(out[key]) == float(v), key
    # max_nodes: the local statistics over the same evenly spaced nodes as the node_test ones.
    sub = evaluate_fn(model, x_test, y_test, max_nodes=3, local_test=(lx, ly, lsizes))(params, jnp.asarray(honest))
    idx = np.linspace(0, n - 1, 3).round().astype(int)
    ref_sub = _numpy_reference(model, np.asarray(params)[idx], lx[idx], ly[idx], lsizes[idx], honest[idx])
    np.testing.assert_allclose(float(sub["local_test_accuracy_mean"]), ref_sub["local_test_accuracy_mean"], rtol=1e-6)


def _isolated(n, monkeypatch):
    """A graph with no edges (W = I): D-SGD on it is local-only training. The topology module
    refuses disconnected graphs for gossip, so the check is lifted for this one construction."""
    from redeem_jax.network import topology

    monkeypatch.setattr(topology, "_check_connected", lambda *a: None)
    return rj.topology.from_mixing_matrices([np.eye(n)], name="isolated")


@pytest.mark.parametrize("how", ["dsgd_without_edges", "local_only"])
def test_local_only_scores_higher_on_local_than_on_global_test(how, monkeypatch):
    # Dirichlet alpha = 0.1: each node holds mostly one to three of the ten digits, so a model
    # trained on its own data alone fits its own distribution (the local test set) but can be
    # right on the global test set only for those few classes (at most ~30% of it).
    c = small_config(
        **{"data.partition": "dirichlet", "data.alpha": 0.1, "data.local_test_fraction": 0.2, "num_rounds": 30}
    )
    if how == "local_only":
        if "local_only" not in rj.algorithms.REGISTRY:
            pytest.skip("algorithm local_only is not registered")
        c.algorithm.name = "local_only"
        res = rj.run(c)
    else:
        res = rj.run(c, topology=_isolated(8, monkeypatch))
    m = {k: float(v[-1]) for k, v in res.metrics.items()}
    local, node_global = m["local_test_accuracy_mean"], m["node_test_accuracy_mean"]
    assert local > node_global + 0.3, (local, node_global)
    assert m["local_test_accuracy_min"] > m["node_test_accuracy_max"]  # even the worst node, locally
    assert m["local_test_accuracy_min"] <= local <= m["local_test_accuracy_max"]
    assert m["local_test_accuracy_std"] >= 0.0 and np.isfinite(m["local_test_loss_mean"])


def test_build_with_fraction_zero_changes_nothing():
    small = {"num_nodes": 4, "num_rounds": 2, "eval_every": 1, "model.hidden": (8,)}
    base = small_config(**small)
    zero = small_config(**small, **{"data.local_test_fraction": 0.0})
    a, b = rj.run(base), rj.run(zero)
    assert b.experiment.node_data.test_x is None
    assert set(a.metrics) == set(b.metrics) and not any("local" in k for k in b.metrics)
    for k in set(a.metrics) - {"wall_time"}:
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k], err_msg=k)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
