"""The runner: accuracy on digits, one compilation, determinism, resume, outputs, config errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.config import ConfigError

from _configs import small_config

ROOT = Path(__file__).resolve().parents[1]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def _default_config():
    sys.path.insert(0, str(ROOT / "configs"))
    try:
        import default
    finally:
        sys.path.pop(0)
    c = default.get_config()
    c.progress = False
    return c


def test_dsgd_on_a_16_node_ring_reaches_90_percent_on_digits(tmp_path):
    c = _default_config()  # the default's attack-free reference run
    c.byzantine.num = 0
    c.compare.key = ""
    res = rj.run(c, tmp_path)
    assert c.topology.name == "ring" and c.num_nodes == 16
    assert res.final["round"] == c.num_rounds
    assert res.final["test_accuracy"] >= 0.90
    assert res.final["node_test_accuracy_mean"] >= 0.90
    assert res.compilations == 1
    for name in ("metrics.jsonl", "config.json", "metrics.png", "partition.json", "partition.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(0, c.num_rounds + 1, c.eval_every))
    for key in ("test_loss", "test_accuracy", "node_test_accuracy_std", "consensus_distance", "wall_time"):
        assert key in rows[-1]


def test_default_run_shows_plain_gossip_breaking_and_the_robust_rule_holding(tmp_path):
    c = _default_config()
    c.checkpoint_every = 0
    res = rj.run(c, tmp_path)
    ref = res["reference (byzantine.num=0)"].final["node_test_accuracy_mean"]
    assert ref >= 0.90
    assert res["mean"].final["node_test_accuracy_mean"] < 0.5  # ALIE breaks plain gossip
    assert res["clipped_gossip"].final["node_test_accuracy_mean"] >= ref - 0.05
    assert (tmp_path / "comparison.png").exists() and (tmp_path / "comparison.json").exists()
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == {"mean", "clipped_gossip", "reference"}


def test_round_compiles_once_with_a_partial_last_chunk():
    res = rj.run(small_config())  # 25 rounds in chunks of 10: the last chunk is masked
    assert res.compilations == 1
    assert [r["round"] for r in res.rows] == [0, 10, 20, 25]
    assert int(res.state.round) == 25


def test_same_seed_gives_identical_metrics_and_other_seed_differs():
    a, b = rj.run(small_config()), rj.run(small_config())
    assert _strip(a.rows) == _strip(b.rows)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    c = rj.run(small_config(seed=1))
    assert _strip(c.rows) != _strip(a.rows)


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    full = rj.run(small_config(num_rounds=40, checkpoint_every=20), tmp_path / "full")
    part = rj.run(small_config(num_rounds=20, checkpoint_every=20), tmp_path / "resumed")
    assert int(part.state.round) == 20
    resumed = rj.run(small_config(num_rounds=40, checkpoint_every=20), tmp_path / "resumed")
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))
    assert _strip(resumed.rows) == _strip(full.rows)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [0, 10, 20, 30, 40]
    # A changed config in the same workdir is refused, naming the field.
    with pytest.raises(ConfigError, match="config.optimizer"):
        rj.run(
            small_config(num_rounds=60, checkpoint_every=20, **{"optimizer.learning_rate": 0.5}), tmp_path / "resumed"
        )


BAD = [
    ({"optimzer": 1}, "config.optimzer: unknown field"),
    ({"topology.name": "rign"}, r"config.topology.name: 'rign' is not one of ring, path"),
    ({"topology.weights": "mh"}, "config.topology.weights: 'mh' is not one of metropolis_hastings"),
    ({"num_nodes": 0}, "config.num_nodes: must be >= 1"),
    ({"num_rounds": 2.5}, "config.num_rounds: must be an integer"),
    ({"optimizer.learning_rate": -1.0}, "config.optimizer.learning_rate: must be > 0"),
    ({"optimizer.learning_rate": float("nan")}, "config.optimizer.learning_rate: must be a finite number"),
    ({"optimizer.momentum": 1.0}, "config.optimizer.momentum: must be < 1"),
    ({"data.name": "imagenet"}, "config.data.name: 'imagenet' is not one of"),
    ({"data.partition": "random"}, "config.data.partition: 'random' is not one of iid"),
    ({"data.alpha": 0.0}, "config.data.alpha: must be > 0"),
    ({"data.batch_size": 0}, "config.data.batch_size: must be >= 1"),
    ({"data.name": "mnist"}, "config.data.path"),
    ({"data.name": "mnist", "data.path": "/nonexistent/mnist.npz"}, "config.data.path"),
    ({"model.name": "resnet"}, "config.model.name: 'resnet' is not one of"),
    ({"model.hidden": (0,)}, "config.model.hidden: must be a tuple of positive integers"),
    ({"model.name": "transformer"}, "config.model.name: 'transformer' needs data.name = 'text'"),
    ({"algorithm.order": "both"}, "config.algorithm.order: 'both' is not one of atc, cta"),
    ({"algorithm.local_steps": 0}, "config.algorithm.local_steps: must be >= 1"),
    ({"perf.gossip": "fast"}, "config.perf.gossip: 'fast' is not one of auto, dense, sparse, roll"),
    ({"checkpoint_every": 15}, "config.checkpoint_every: must be 0 or a multiple of eval_every"),
    ({"plots": "yes"}, "config.plots: must be True or False"),
    ({"compare.key": "topology.nam", "compare.choices": ("ring",)}, "config.compare.key"),
    ({"compare.key": "topology.name", "compare.choices": ("ring", "blob")}, "config.compare.choices"),
    ({"topology.name": "torus", "num_nodes": 15}, "config.topology.name: 'torus' with num_nodes=15"),
    ({"topology.name": "hypercube", "num_nodes": 12}, "config.topology.name: 'hypercube' with num_nodes=12"),
]


@pytest.mark.parametrize("over,match", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_invalid_config_fields_get_clear_errors(over, match):
    c = rj.config.base_config().to_dict()
    for k, v in over.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    with pytest.raises(ConfigError, match=match):
        rj.run(c)


def test_cli_runs_writes_outputs_and_reports_bad_fields(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "redeem_jax",
        "--config",
        str(ROOT / "configs/default.py"),
        "--config.num_nodes=4",
        "--config.num_rounds=4",
        "--config.eval_every=2",
        "--config.byzantine.num=0",
        "--config.compare.key=",
        "--config.checkpoint_every=2",
        "--config.model.hidden=(8,)",
        "--workdir",
        str(tmp_path / "w"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "outputs in" in out.stdout
    for name in ("metrics.jsonl", "config.json", "metrics.png", "checkpoints"):
        assert (tmp_path / "w" / name).exists()
    bad = subprocess.run(
        cmd[:-2] + ["--config.optimizer.name=sdg", "--workdir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode != 0 and "config.optimizer.name: 'sdg' is not one of" in bad.stderr


def test_compare_runs_each_value_and_plots(tmp_path):
    c = small_config(num_rounds=10, plots=True)
    c.compare.key = "topology.name"
    c.compare.choices = ("ring", "complete")
    res = rj.run(c, tmp_path)
    assert set(res) == {"ring", "complete"}
    assert (tmp_path / "comparison.png").exists() and (tmp_path / "ring" / "metrics.jsonl").exists()
    # The complete graph averages exactly each round.
    assert res["complete"].final["consensus_distance"] < 1e-10 < res["ring"].final["consensus_distance"]


def test_the_default_experiment_keeps_its_honest_nodes_connected():
    """The first command a user runs must not start with a warning: the default attackers sit
    side by side, so the honest nodes of its ring stay one component, each with an honest
    neighbour (spread out, the same three would cut the ring into honest arcs)."""
    import importlib.util

    from redeem_jax.byzantine import placement

    spec = importlib.util.spec_from_file_location("_default_config", ROOT / "configs" / "default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    topo = rj.topology.ring(c.num_nodes)
    byz = np.zeros(c.num_nodes, bool)
    byz[list(c.byzantine.ids)] = True
    assert placement.check_honest_connectivity(topo, byz) is None
    byz[:] = False
    byz[[0, 5, 10]] = True
    assert len(placement.honest_components(topo, byz)) == 3
