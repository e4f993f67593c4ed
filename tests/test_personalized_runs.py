"""Personalized runs sweep and shard like the others (issue 14, acceptance).

(a) ``rj.sweep`` over the seed and a hyper-parameter (Ditto's λ, FedRep's learning rate, IFCA's
initial scale) compiles once and each point equals its ``rj.run`` alone (the reference is the
unvmapped run, float tolerance: vmap batches the same operations, only reassociation may
differ). (b) Ditto and FedRep sharded over 8 fake CPU devices (``perf.mesh = (8,)``,
tests/conftest.py) equal the unsharded run, including the per-node personal state (Ditto's
personal models ``v``, FedRep's rows whose heads never leave the node).
"""

import jax
import ml_collections
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.sweep import final

from _configs import small_config

TOL = dict(rtol=2e-5, atol=1e-6)
# Tiny digits runs: 8 nodes of a ring, a linear model (FedRep: one hidden layer of 4, so that
# the head is a strict part of the model), 4 rounds evaluated at 0, 2, 4.
TINY = {"num_rounds": 4, "eval_every": 2, "model.hidden": (), "eval.max_test_examples": 200}
ALGOS = {
    "ditto": ({"algorithm.name": "ditto", "algorithm.lam": 0.3}, "algorithm.lam", [0.1, 1.0]),
    "fedrep": (
        {"algorithm.name": "fedrep", "algorithm.personal": "head", "model.hidden": (4,)},
        "optimizer.learning_rate",
        [0.02, 0.1],
    ),
    "ifca": ({"algorithm.name": "ifca", "algorithm.clusters": 2}, "algorithm.init_scale", [0.1, 0.5]),
}
METRICS = ["test_loss", "test_accuracy", "train_loss"]


def _config(name, **over):
    base, _, _ = ALGOS[name]
    return small_config(**{**TINY, **base, **over})


def _pinned(c, **values):
    """The single-run config of one sweep point (the sweep pins the host-side seeds to c.seed)."""
    sub = ml_collections.ConfigDict(c.to_dict())
    sub.topology.seed = c.seed
    sub.data.seed = c.seed
    for k, v in values.items():
        rj.config.set_field(sub, k, v)
    return sub


@pytest.fixture(scope="module")
def runs():
    """Per algorithm: its config, the sweep's table, and ``rj.run`` alone of the sweep's last point
    (seed 1, the larger hyper-parameter value): one sweep compile and one run compile each."""
    out = {}
    for name, (_, key, values) in ALGOS.items():
        c = _config(name)
        df = rj.sweep(c, {"seed": [0, 1], key: values})
        point = final(df).iloc[-1]
        assert int(point["seed"]) == 1 and float(point[key]) == pytest.approx(values[-1])
        pinned = _pinned(c, seed=1, **{key: values[-1]})
        out[name] = (pinned, df, point, rj.run(pinned))
    return out


@pytest.mark.parametrize("name", list(ALGOS))
def test_sweep_over_seed_and_a_hyper_compiles_once_and_equals_the_runs(runs, name):
    _, key, _ = ALGOS[name]
    _, df, point, alone = runs[name]
    # One trace for the whole 2 x 2 grid: both axes are vmapped (a looped axis adds a compile).
    assert df.attrs["traces"] == [1]
    last = final(df)
    assert len(last) == 4 and np.isfinite(last[METRICS].to_numpy()).all()
    # Both axes change the run (the sweep is not four copies of one point).
    assert last.groupby(key)["test_loss"].nunique().min() == 2
    assert last.groupby("seed")["test_loss"].nunique().min() == 2
    rows = df[df["point"] == point["point"]].sort_values("round")
    assert list(rows["round"]) == list(alone.metrics["round"])
    for m in METRICS:
        np.testing.assert_allclose(rows[m].to_numpy(), alone.metrics[m], err_msg=f"{name} {m}", **TOL)


def _state_leaves(state):
    return jax.tree_util.tree_leaves(state.algorithm)


@pytest.mark.parametrize("name", ["ditto", "fedrep"])
def test_sharded_personalized_run_equals_unsharded(runs, name):
    pinned, _, _, ref = runs[name]
    c = ml_collections.ConfigDict(pinned.to_dict())
    rj.config.set_field(c, "perf.mesh", (8,))
    got = rj.run(c)
    assert got.compilations == 1
    assert got.params.sharding.spec[0] == "nodes" and len(got.params.sharding.device_set) == 8
    np.testing.assert_allclose(got.params, ref.params, **TOL)
    # The whole per-node algorithm state: Ditto's personal models v and shared x, FedRep's rows.
    a, b = _state_leaves(got.state), _state_leaves(ref.state)
    assert len(a) == len(b) and len(a) >= 1
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL)
    if name == "ditto":
        v = got.state.algorithm.v
        assert v.sharding.spec[0] == "nodes" and len(v.sharding.device_set) == 8
        assert not np.allclose(np.asarray(v), np.asarray(got.state.algorithm.x))  # personal ≠ shared
    for k in ref.metrics:
        if k != "wall_time":
            np.testing.assert_allclose(got.metrics[k], ref.metrics[k], err_msg=k, **TOL)
