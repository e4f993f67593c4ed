"""Performance knobs (config.perf) change how a run is computed, never what it computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj

from _configs import small_config

TINY = {"num_nodes": 6, "model.hidden": (8,), "num_rounds": 6, "eval_every": 3, "eval.max_test_examples": 200}


def final_params(**overrides):
    res = rj.run(small_config(**{**TINY, **overrides}))
    return np.asarray(res.params), res.final


def test_buffer_donation_does_not_change_results():
    a, fa = final_params(**{"perf.donate": True})
    b, fb = final_params(**{"perf.donate": False})
    np.testing.assert_array_equal(a, b)
    assert fa["test_loss"] == fb["test_loss"]


@pytest.mark.parametrize("method", ["dense", "roll"])
def test_gossip_method_does_not_change_results(method):
    a, _ = final_params(**{"perf.gossip": "sparse"})
    b, _ = final_params(**{"perf.gossip": method})
    # Same weights, different summation order: float32 reassociation only.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dp_microbatch_size_does_not_change_results():
    dp = {"privacy.mode": "dp_sgd", "privacy.clipping": "vmap", "privacy.noise_multiplier": 0.7}
    a, _ = final_params(**dp, **{"perf.microbatch": 0})
    b, _ = final_params(**dp, **{"perf.microbatch": 3})
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _exchange(channel, x, topo):
    ctx = rj.core.Ctx(jnp.int32(0), jax.random.PRNGKey(1), rj.core.Edges.of(topo, 0), jnp.ones(8, bool), {})
    return channel.update(x, channel.init(x), ctx)[0]


def test_bfloat16_messages_are_float32_gossip_of_rounded_rows():
    topo = rj.topology.ring(8)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 33))
    exact = rj.channels.gossip(topo)
    rounded = rj.core.chain(rj.channels.round_messages(jnp.bfloat16), exact)
    got = _exchange(rounded, x, topo)
    want = topo.mixing_matrix() @ np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32), np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    err = np.abs(np.asarray(got) - np.asarray(_exchange(exact, x, topo)))
    assert 0 < err.max() <= 2**-8 * np.abs(np.asarray(x)).max()  # bf16 keeps 8 significant bits


@pytest.mark.parametrize("algorithm", ["dsgd", "fedavg"])
def test_bfloat16_messages_change_a_run_only_by_rounding(algorithm):
    a, fa = final_params(**{"algorithm.name": algorithm})
    b, fb = final_params(**{"algorithm.name": algorithm, "perf.message_dtype": "bfloat16"})
    assert not np.array_equal(a, b)  # the rounding really happens
    scale = np.abs(a).max()
    assert np.abs(a - b).max() <= 2e-2 * scale
    assert abs(fa["test_accuracy"] - fb["test_accuracy"]) <= 0.03
