"""DP-SGD through the runner: the non-private limit, the ε it reports, calibration, errors."""

import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.config import ConfigError

from _configs import small_config


def _config(**over):
    return small_config(**{"data.batch_size": 16, "optimizer.name": "sgd", "optimizer.learning_rate": 0.1,
                           "num_rounds": 20, **over})


@pytest.mark.parametrize("clipping", ["ghost", "vmap"])
def test_dp_without_noise_or_clipping_equals_the_non_private_run(clipping):
    plain = rj.run(_config())
    dp = rj.run(_config(**{"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 0.0,
                           "privacy.clip_norm": float("inf"), "privacy.clipping": clipping}))
    np.testing.assert_allclose(np.asarray(dp.state.params), np.asarray(plain.state.params), rtol=1e-4, atol=1e-5)


def test_reported_epsilon_is_the_accountants_and_grows():
    res = rj.run(_config(**{"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 1.1}))
    eps = [r["epsilon"] for r in res.rows if "epsilon" in r]
    assert len(eps) == 2 and 0 < eps[0] < eps[1]
    q = res.experiment.privacy["sample_rate"]
    expected = rj.privacy.accounting.epsilon(1.1, q, 20, 1e-5, accountant="rdp", sampling="fixed")
    assert eps[-1] == pytest.approx(expected, rel=1e-9)
    assert res.compilations == 1


def test_target_epsilon_calibrates_the_noise():
    res = rj.run(_config(**{"privacy.mode": "dp_sgd", "privacy.target_epsilon": 2.0,
                            "privacy.sampling": "poisson", "privacy.sample_rate": 0.2}))
    assert res.final["epsilon"] == pytest.approx(2.0, abs=1e-3)
    assert res.experiment.privacy["noise_multiplier"] > 0


BAD = [
    ({"privacy.mode": "dp"}, "config.privacy.mode: 'dp' is not one of none, dp_sgd"),
    ({"privacy.mode": "dp_sgd", "privacy.clip_norm": 0.0}, "config.privacy.clip_norm: must be a positive number"),
    ({"privacy.mode": "dp_sgd", "privacy.delta": 1.0}, "config.privacy.delta: must be < 1"),
    ({"privacy.mode": "dp_sgd", "privacy.sampling": "poisson", "privacy.sample_rate": 1.5},
     "config.privacy.sample_rate: must be in"),
    ({"privacy.mode": "dp_sgd", "privacy.accountant": "pld"}, "config.privacy.accountant: fixed-size sampling"),
    ({"privacy.mode": "dp_sgd", "privacy.target_epsilon": 0.0}, "config.privacy.target_epsilon"),
    ({"privacy.mode": "dp_sgd", "privacy.clipping": "ghost", "model.name": "cnn"}, "config.privacy.clipping"),
]


@pytest.mark.parametrize("over,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_invalid_privacy_fields_get_clear_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        rj.build(_config(**over))
