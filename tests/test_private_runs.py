"""DP-SGD through the runner: the non-private limit, the ε it reports, calibration, errors."""

import jax
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.config import ConfigError

from _configs import small_config


def _config(**over):
    return small_config(
        **{"data.batch_size": 16, "optimizer.name": "sgd", "optimizer.learning_rate": 0.1, "num_rounds": 20, **over}
    )


@pytest.mark.parametrize("clipping", ["ghost", "vmap"])
def test_dp_without_noise_or_clipping_equals_the_non_private_run(clipping):
    plain = rj.run(_config())
    dp = rj.run(
        _config(
            **{
                "privacy.mode": "dp_sgd",
                "privacy.noise_multiplier": 0.0,
                "privacy.clip_norm": float("inf"),
                "privacy.clipping": clipping,
            }
        )
    )
    np.testing.assert_allclose(np.asarray(dp.params), np.asarray(plain.params), rtol=1e-4, atol=1e-5)


def test_reported_epsilon_is_the_accountants_and_grows():
    res = rj.run(_config(**{"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 1.1}))
    eps = [r["epsilon"] for r in res.rows if "epsilon" in r]
    assert len(eps) == 2 and 0 < eps[0] < eps[1]
    q = res.experiment.privacy["sample_rate"]
    expected = rj.privacy.accounting.epsilon(1.1, q, 20, 1e-5, accountant="rdp", sampling="fixed")
    assert eps[-1] == pytest.approx(expected, rel=1e-9)
    assert res.compilations == 1


def test_target_epsilon_calibrates_the_noise():
    res = rj.run(
        _config(
            **{
                "privacy.mode": "dp_sgd",
                "privacy.target_epsilon": 2.0,
                "privacy.sampling": "poisson",
                "privacy.sample_rate": 0.2,
            }
        )
    )
    assert res.final["epsilon"] == pytest.approx(2.0, abs=1e-3)
    assert res.experiment.privacy["noise_multiplier"] > 0


BAD = [
    ({"privacy.mode": "dp"}, "config.privacy.mode: 'dp' is not one of none, dp_sgd"),
    ({"privacy.mode": "dp_sgd", "privacy.clip_norm": 0.0}, "config.privacy.clip_norm: must be a positive number"),
    ({"privacy.mode": "dp_sgd", "privacy.delta": 1.0}, "config.privacy.delta: must be < 1"),
    (
        {"privacy.mode": "dp_sgd", "privacy.sampling": "poisson", "privacy.sample_rate": 1.5},
        "config.privacy.sample_rate: must be in",
    ),
    ({"privacy.mode": "dp_sgd", "privacy.accountant": "pld"}, "config.privacy.accountant: fixed-size sampling"),
    ({"privacy.mode": "dp_sgd", "privacy.target_epsilon": 0.0}, "config.privacy.target_epsilon"),
    ({"privacy.mode": "dp_sgd", "privacy.clipping": "ghost", "model.name": "cnn"}, "config.privacy.clipping"),
]


@pytest.mark.parametrize("over,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_invalid_privacy_fields_get_clear_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        rj.build(_config(**over))


def _central(**over):
    return _config(
        **{
            "algorithm.name": "fedavg",
            "num_nodes": 16,
            "privacy.mode": "central",
            "privacy.clip_norm": 0.5,
            "num_rounds": 40,
            "eval_every": 20,
            **over,
        }
    )


def test_central_dp_without_noise_is_fedavg_of_clipped_updates_through_secure_aggregation():
    # σ = 0 and a clip norm no update reaches: DP-FedAvg is FedAvg, up to the fixed-point
    # quantisation of secure aggregation (n·2^-21 per coordinate per round).
    plain = rj.run(_config(**{"algorithm.name": "fedavg", "num_nodes": 16, "num_rounds": 40, "eval_every": 20}))
    dp = rj.run(_central(**{"privacy.noise_multiplier": 0.0, "privacy.clip_norm": 100.0}))
    np.testing.assert_allclose(np.asarray(dp.params), np.asarray(plain.params), atol=2e-3)


def test_central_dp_calibrates_to_the_target_and_learns():
    # Node-level ε = 5 over 40 rounds needs σ ≈ 6; averaged over 64 nodes the noise is σC/64.
    res = rj.run(
        _central(
            **{"privacy.target_epsilon": 5.0, "num_nodes": 64, "privacy.clip_norm": 1.0, "optimizer.learning_rate": 0.3}
        )
    )
    assert res.final["epsilon"] == pytest.approx(5.0, abs=1e-3)
    q_local = res.experiment.privacy
    assert q_local["sample_rate"] == 1.0 and q_local["steps_per_round"] == 1
    assert res.final["test_accuracy"] > 0.45  # well above chance (0.1) despite node-level DP


def test_central_dp_needs_a_server():
    with pytest.raises(ConfigError, match="config.privacy.mode: 'central'"):
        rj.build(_config(**{"privacy.mode": "central"}))


ROBUST = [(r, "fedavg") for r in rj.aggregators.RULES if r != "mean"] + [
    ("nnm+trimmed_mean", "fedavg"),
    ("clipped_gossip", "dsgd"),
    ("ios", "dsgd"),
    ("cs_plus", "dsgd"),
    ("trimmed_mean", "dsgd"),
]


def _robust_dp(rule, algorithm, **over):
    return small_config(
        **{
            "num_nodes": 9,
            "topology.name": "complete",
            "model.hidden": (4,),
            "num_rounds": 2,
            "eval_every": 1,
            "byzantine.num": 1,
            "byzantine.attack": "alie",
            "byzantine.placement": "given",
            "byzantine.ids": (4,),
            "aggregation.rule": rule,
            "algorithm.name": algorithm,
            "privacy.mode": "dp_sgd",
            "privacy.noise_multiplier": 1.0,
            **over,
        }
    )


@pytest.mark.parametrize("rule, algorithm", ROBUST)
def test_dp_sgd_runs_under_every_robust_rule_on_noisy_messages(rule, algorithm):
    exp = rj.build(_robust_dp(rule, algorithm))
    state, metrics = jax.jit(exp.round_fn)(exp.init_state())
    honest = np.asarray(exp.models(state))[exp.honest]
    assert np.isfinite(honest).all() and np.isfinite(float(metrics["train_loss"]))
    # The noise really reaches the messages: another noise draw moves the honest nodes.
    other, _ = jax.jit(exp.round_fn)(exp.init_state(seed=1))
    assert not np.allclose(np.asarray(exp.models(other))[exp.honest], honest)


@pytest.mark.parametrize("rule, algorithm", [("trimmed_mean", "fedavg"), ("clipped_gossip", "dsgd")])
def test_dp_without_noise_or_clipping_under_a_robust_rule_is_the_robust_run(rule, algorithm):
    exp = rj.build(_robust_dp(rule, algorithm, **{"privacy.noise_multiplier": 0.0, "privacy.clip_norm": float("inf")}))
    ref = rj.build(_robust_dp(rule, algorithm, **{"privacy.mode": "none"}))
    dp_state, _ = jax.jit(exp.round_fn)(exp.init_state())
    ref_state, _ = jax.jit(ref.round_fn)(ref.init_state())
    np.testing.assert_allclose(
        np.asarray(exp.models(dp_state)), np.asarray(ref.models(ref_state)), rtol=1e-4, atol=1e-5
    )
