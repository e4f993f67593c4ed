"""Numbers a run reports must be true: ε of fixed-size DP-SGD, resumes that would change a run's
past, workdirs that mix runs, and sweeps that resume another grid (issue 9). Each test failed
before the fix."""

import json

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

import redeem_jax as rj
from redeem_jax.config import ConfigError

from _configs import small_config

TINY = {
    "num_nodes": 4,
    "model.hidden": (8,),
    "eval.max_test_examples": 200,
    "optimizer.name": "sgd",
    "optimizer.learning_rate": 0.1,
}


def _exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """ε of one Gaussian mechanism of sensitivity/σ = μ (Balle & Wang 2018, Thm. 8)."""
    return brentq(lambda e: norm.cdf(-e / mu + mu / 2) - np.exp(e) * norm.cdf(-e / mu - mu / 2) - delta, 0.0, 500.0)


def test_a_full_batch_dp_run_reports_at_least_t_gaussians_of_sensitivity_2c():
    # batch_size >= every shard: each round releases the clipped sum of the whole shard plus
    # N(0, σ²C²); under replace-one (fixed-size batches) that sum moves by up to 2C.
    c = small_config(
        **TINY,
        **{
            "num_rounds": 10,
            "data.batch_size": 4096,
            "privacy.mode": "dp_sgd",
            "privacy.noise_multiplier": 1.0,
            "privacy.sampling": "fixed",
        },
    )
    res = rj.run(c)
    assert res.experiment.privacy["sample_rate"] == 1.0
    exact = _exact_gaussian_epsilon(2 * np.sqrt(10) / 1.0, 1e-5)  # 46.21
    reported = res.final["epsilon"]
    assert exact <= reported <= 1.1 * exact, (reported, exact)  # RDP: a tight upper bound here


def test_resume_that_would_recalibrate_sigma_or_reshape_a_schedule_is_refused(tmp_path):
    base = {**TINY, "eval_every": 5, "checkpoint_every": 5, "data.batch_size": 8}
    dp = {
        "privacy.mode": "dp_sgd",
        "privacy.target_epsilon": 2.0,
        "privacy.sampling": "poisson",
        "privacy.sample_rate": 0.1,
    }
    rj.run(small_config(**base, **dp, num_rounds=10), tmp_path / "dp")
    with pytest.raises(ConfigError, match=r"^config\.num_rounds: .*target_epsilon"):
        rj.run(small_config(**base, **dp, num_rounds=20), tmp_path / "dp")
    cos = {"optimizer.schedule": "cosine"}
    rj.run(small_config(**base, **cos, num_rounds=10), tmp_path / "cos")
    with pytest.raises(ConfigError, match=r"^config\.num_rounds: .*cosine"):
        rj.run(small_config(**base, **cos, num_rounds=20), tmp_path / "cos")
    # With a fixed σ and a constant rate nothing depended on the horizon: extending is exact,
    # and the ε reported is the ε of the rounds actually run.
    fixed = {"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 1.5}
    rj.run(small_config(**base, **fixed, num_rounds=10), tmp_path / "ext")
    ext = rj.run(small_config(**base, **fixed, num_rounds=20), tmp_path / "ext")
    whole = rj.run(small_config(**base, **fixed, num_rounds=20), tmp_path / "whole")
    np.testing.assert_array_equal(np.asarray(ext.params), np.asarray(whole.params))
    assert ext.final["epsilon"] == whole.final["epsilon"]


def test_resume_false_clears_the_older_run_so_it_is_never_resumed(tmp_path):
    base = {**TINY, "eval_every": 5, "checkpoint_every": 20, "data.batch_size": 8}
    rj.run(small_config(**{**base, "optimizer.learning_rate": 0.3}, num_rounds=60), tmp_path / "w")  # ckpt 40, 60
    fresh = rj.run(small_config(**base, num_rounds=10, resume=False), tmp_path / "w")  # ckpt 10 only
    assert {p.name for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()} == {"10"}
    longer = rj.run(small_config(**base, num_rounds=30), tmp_path / "w")  # continues the fresh run, not the old
    rows = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 5, 10, 15, 20, 25, 30]
    reference = rj.run(small_config(**base, num_rounds=30), tmp_path / "ref")
    np.testing.assert_array_equal(np.asarray(longer.params), np.asarray(reference.params))
    assert [r["test_loss"] for r in longer.rows] == [r["test_loss"] for r in reference.rows]
    assert fresh.final["round"] == 10


def test_a_sweep_refuses_to_resume_another_grid_or_config(tmp_path):
    base = {**TINY, "num_rounds": 4, "eval_every": 2, "checkpoint_every": 2, "optimizer.name": "momentum"}
    c = small_config(**base)
    axes = {"optimizer.learning_rate": [0.05, 0.1]}
    rj.sweep(c, axes, tmp_path)
    with pytest.raises(ConfigError, match=r"^sweep\.optimizer\.learning_rate: the sweep in .* \[0\.05, 0\.1\]"):
        rj.sweep(c, {"optimizer.learning_rate": [0.3, 1.0]}, tmp_path)
    with pytest.raises(ConfigError, match=r"^sweep\.optimizer\.learning_rate: "):
        rj.sweep(c, {"optimizer.learning_rate": [0.05, 0.1, 0.3]}, tmp_path)  # more points: no orbax crash
    other = small_config(**{**base, "optimizer.momentum": 0.5})
    with pytest.raises(ConfigError, match=r"^config\.optimizer\.momentum: "):
        rj.sweep(other, axes, tmp_path)
    # resume=False starts that sweep afresh, equal to the sweep in an empty workdir.
    other.resume = False
    fresh = rj.sweep(other, {"optimizer.learning_rate": [0.3, 1.0]}, tmp_path)
    other.resume = True
    clean = rj.sweep(other, {"optimizer.learning_rate": [0.3, 1.0]}, tmp_path / "clean")
    cols = [k for k in clean.columns if k != "wall_time"]
    assert fresh[cols].equals(clean[cols])
    assert json.loads((tmp_path / "sweep.json").read_text())["axes"] == {"optimizer.learning_rate": [0.3, 1.0]}
