"""rj.sweep: a grid of whole runs vmapped into one program, equal to the runs one by one."""

import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
import pytest

import redeem_jax as rj
from redeem_jax.sweep import final

from _configs import small_config

TINY = {"num_nodes": 4, "model.hidden": (8,), "num_rounds": 4, "eval_every": 2, "eval.max_test_examples": 200}
METRICS = ["test_loss", "test_accuracy", "node_test_loss_mean", "train_loss", "consensus_distance"]


def tiny(**overrides):
    return small_config(**{**TINY, **overrides})


def pinned(c, **values):
    """The single-run config of one sweep point: the point's values, host-side seeds pinned."""
    sub = ml_collections.ConfigDict(c.to_dict())
    sub.topology.seed = c.seed
    sub.data.seed = c.seed
    for k, v in values.items():
        rj.config.set_field(sub, k, v)
    return sub


def test_eight_seeds_by_four_learning_rates_compile_once():
    df = rj.sweep(tiny(), {"seed": list(range(8)), "optimizer.learning_rate": [0.01, 0.03, 0.1, 0.3]})
    assert df.attrs["traces"] == [1]
    last = final(df)
    assert len(last) == 32 and set(last["round"]) == {4}
    assert np.isfinite(last[METRICS].to_numpy()).all()
    # Seeds really redraw the run, and the learning rate really changes it.
    assert last.groupby("optimizer.learning_rate")["test_loss"].nunique().min() == 8
    assert last.groupby("seed")["test_loss"].nunique().min() == 4
    # Every evaluated round is in the table: rounds 0, 2, 4 for every point.
    assert all(tuple(r) == (0, 2, 4) for r in df.groupby("point")["round"].apply(list))


@pytest.mark.parametrize("case", ["plain", "dp_sigma", "byzantine_strength"])
def test_a_sweep_point_equals_its_run_alone(case):
    if case == "plain":
        c, axes = tiny(), {"seed": [0, 3], "optimizer.learning_rate": [0.02, 0.1]}
    elif case == "dp_sigma":
        c = tiny(**{"privacy.mode": "dp_sgd", "privacy.sampling": "poisson", "privacy.sample_rate": 0.3})
        axes = {"seed": [1], "privacy.noise_multiplier": [0.5, 2.0]}
    else:
        c = tiny(
            **{
                "num_nodes": 6,
                "byzantine.num": 1,
                "byzantine.placement": "given",
                "byzantine.ids": (2,),
                "byzantine.attack": "alie",
                "aggregation.rule": "clipped_gossip",
            }
        )
        axes = {"byzantine.strength": [0.5, 3.0]}
    df = rj.sweep(c, axes)
    assert df.attrs["traces"] == [1]
    point = final(df).iloc[-1]
    values = {k: int(point[k]) if k == "seed" else float(point[k]) for k in axes}
    alone = rj.run(pinned(c, **values))
    rows = df[df["point"] == point["point"]].sort_values("round")
    assert list(rows["round"]) == list(alone.metrics["round"])
    for m in METRICS:
        # vmap over the grid batches the same float ops; only reassociation may differ.
        np.testing.assert_allclose(rows[m].to_numpy(), alone.metrics[m], rtol=2e-5, atol=1e-6, err_msg=m)
    if case == "dp_sigma":
        np.testing.assert_allclose(point["epsilon"], alone.final["epsilon"], rtol=1e-9)


def test_target_epsilon_axis_is_calibrated_per_point():
    c = tiny(**{"privacy.mode": "dp_sgd", "privacy.sampling": "poisson", "privacy.sample_rate": 0.3})
    df = rj.sweep(c, {"privacy.target_epsilon": [1.0, 4.0]})
    last = final(df).sort_values("privacy.target_epsilon")
    np.testing.assert_allclose(last["epsilon"], last["privacy.target_epsilon"], rtol=1e-2)
    assert last["noise_multiplier"].is_monotonic_decreasing  # more budget, less noise


def test_shape_changing_axes_loop_with_one_program_each():
    df = rj.sweep(tiny(), {"topology.name": ["ring", "complete"], "seed": [0, 1]})
    assert df.attrs["traces"] == [1, 1]
    last = final(df)
    assert len(last) == 4 and set(last["topology.name"]) == {"ring", "complete"}
    ring = last[last["topology.name"] == "ring"]["consensus_distance"].to_numpy()
    complete = last[last["topology.name"] == "complete"]["consensus_distance"].to_numpy()
    assert (complete < 1e-10).all() and (ring > complete).all()  # exact averaging on the complete graph


def test_an_interrupted_sweep_resumes_to_the_same_table(tmp_path, monkeypatch):
    import tqdm.auto

    c = tiny(**{"num_rounds": 6, "checkpoint_every": 2})
    axes = {"seed": [0, 1], "optimizer.learning_rate": [0.05, 0.2]}
    whole = rj.sweep(c, axes, tmp_path / "whole")
    calls = []
    original = tqdm.auto.tqdm.update

    def crash_on_second_chunk(self, n=1):
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, n)

    monkeypatch.setattr(tqdm.auto.tqdm, "update", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        rj.sweep(c, axes, tmp_path / "resumed")
    monkeypatch.setattr(tqdm.auto.tqdm, "update", original)
    resumed = rj.sweep(c, axes, tmp_path / "resumed")
    cols = [k for k in whole.columns if k != "wall_time"]
    pd.testing.assert_frame_equal(whole[cols], resumed[cols])
    on_disk = pd.read_csv(tmp_path / "resumed" / "sweep.csv")
    assert len(on_disk) == len(whole) == 4 * 4  # rounds 0, 2, 4, 6 of 4 points, none repeated


@pytest.mark.parametrize(
    "overrides, axes, message",
    [
        ({}, {"optimizer.learning_rat": [0.1]}, "sweep.optimizer.learning_rat: not a config field"),
        ({}, {"optimizer.learning_rate": []}, "sweep.optimizer.learning_rate: give at least one value"),
        ({}, {"seed": [-1]}, "sweep.seed: must be >= 0"),
        ({}, {"privacy.noise_multiplier": [1.0]}, "has no effect because privacy.mode is 'none'"),
        ({}, {"optimizer.momentum": [0.5]}, None),  # small_config uses momentum: fine
        ({"optimizer.name": "sgd"}, {"optimizer.momentum": [0.5]}, "has no effect because optimizer.name is 'sgd'"),
        (
            {"privacy.mode": "dp_sgd"},
            {"privacy.noise_multiplier": [1.0], "privacy.target_epsilon": [1.0]},
            "sweep σ or the target ε, not both",
        ),
        ({}, {"num_nodes": [4, 0]}, "sweep.num_nodes: must be >= 1"),
        ({}, {}, "give at least one axis"),
    ],
)
def test_bad_axes_are_refused_with_the_field_named(overrides, axes, message):
    c = tiny(**{"num_rounds": 2, **overrides})
    if message is None:
        assert len(final(rj.sweep(c, axes))) == 1
        return
    with pytest.raises(rj.config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rj.sweep(c, axes)


def test_command_line(tmp_path):
    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "redeem_jax.sweep",
        "--config",
        str(root / "configs/sweep.py"),
        "--config.num_nodes=4",
        "--config.num_rounds=2",
        "--config.eval_every=2",
        "--config.model.hidden=(8,)",
        "--config.progress=False",
        "--sweep.seed=0,1",
        "--sweep.optimizer.learning_rate=0.05,0.2",
        "--workdir",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 runs, 1 compiled program(s)" in out.stdout
    last = pd.read_csv(tmp_path / "final.csv")
    assert len(last) == 4 and {"seed", "optimizer.learning_rate", "test_accuracy"} <= set(last.columns)
    assert (tmp_path / "sweep_test_loss.png").exists()


@pytest.mark.parametrize("where", [{"perf.mesh": (4,)}, {"sweep_devices": 4}])
def test_sharded_sweeps_equal_the_single_device_sweep(where):
    import jax

    if jax.device_count() < 4:
        pytest.skip("needs 4 devices (tests/conftest.py asks for 8 CPU devices)")
    axes = {"seed": [0, 1], "optimizer.learning_rate": [0.05, 0.2]}
    c = tiny(**{k: v for k, v in where.items() if k.startswith("perf.")})
    sharded = rj.sweep(c, axes, sweep_devices=where.get("sweep_devices", 0))
    single = rj.sweep(tiny(), axes)
    assert sharded.attrs["traces"] == [1]
    for m in METRICS:  # the same float ops, partitioned: reassociation at most
        np.testing.assert_allclose(sharded[m], single[m], rtol=2e-6, atol=1e-7, err_msg=m)


def test_sweep_devices_must_divide_the_grid():
    import jax

    if jax.device_count() < 4:
        pytest.skip("needs 4 devices")
    with pytest.raises(rj.config.ConfigError, match="3 points cannot be split evenly over 4 devices"):
        rj.sweep(tiny(**{"num_rounds": 2}), {"seed": [0, 1, 2]}, sweep_devices=4)
