"""The round protocol: a new algorithm is one file and one registry entry; every mechanism gets its
own key; hyper-parameters are arguments of the step; the ported D-SGD is the hand-written one;
DIGing and Choco-SGD run with DP, attacks, sharding and sweeps like D-SGD; whole-state resume."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.config import ConfigError

from _configs import small_config

TINY = {"num_nodes": 8, "model.hidden": (8,), "num_rounds": 6, "eval_every": 3, "eval.max_test_examples": 200}


def tiny(**over):
    return small_config(**{**TINY, **over})


# --------------------------------------------------------------------------- a toy algorithm
class ToyState(NamedTuple):
    x: jax.Array


def toy(optimizer, step_size: float = 0.5, gossip_twice: bool = False):
    """A toy algorithm written only against rj.core: a plain gradient step of its own size, then
    one (or two) model exchanges. Its float option is a hyper-parameter by name."""
    del optimizer  # it takes its own step

    def init(x0, ctx):
        return ToyState(x0)

    def update(a, oracle, channels, ctx):
        loss, g = oracle(a.x, ctx)
        x = channels["model"](a.x - ctx.value(step_size) * g, ctx)
        if gossip_twice:
            x = channels["model"](x, ctx)
        return ToyState(x), {"train_loss": rj.metrics.masked_mean(loss, ctx.honest)}

    return rj.core.Algorithm(init, update, lambda a: a.x, {"model": rj.core.Exchange(robust=True)}, "toy")


@pytest.fixture
def registered_toy():
    rj.algorithms.register("toy", toy, overwrite=True)
    yield
    rj.algorithms.REGISTRY.pop("toy", None)


def test_a_new_algorithm_needs_only_its_file_and_a_registry_entry(registered_toy, tmp_path):
    c = tiny(**{"algorithm.name": "toy"})
    c.algorithm.step_size = 0.1  # the toy's own option, validated against its factory
    res = rj.run(c, tmp_path / "run")
    assert res.compilations == 1 and np.isfinite(res.final["test_loss"])
    assert res.final["test_loss"] < res.rows[0]["test_loss"]
    assert "algorithm.step_size" in res.experiment.hp  # a float option: a hyper-parameter
    # It sweeps like any algorithm: its option is vmapped, one compile for the grid.
    df = rj.sweep(c, {"algorithm.step_size": [0.05, 0.2], "seed": [0, 1]})
    assert df.attrs["traces"] == [1] and df["point"].nunique() == 4
    alone = rj.run(tiny(**{"algorithm.name": "toy", "algorithm.step_size": 0.2, "topology.seed": 0, "data.seed": 0}))
    point = df[(df["algorithm.step_size"] == 0.2) & (df["seed"] == 0)].sort_values("round")
    np.testing.assert_allclose(point["test_loss"], alone.metrics["test_loss"], rtol=2e-5)
    # Its options are checked by name and type, like every config field.
    bad = tiny(**{"algorithm.name": "toy"})
    bad.algorithm.step_size = "big"
    with pytest.raises(ConfigError, match="config.algorithm.step_size: must be a finite number"):
        rj.run(bad)
    bad = tiny(**{"algorithm.name": "toy"})
    bad.algorithm.stepsize = 0.1
    with pytest.raises(ConfigError, match="config.algorithm.stepsize: unknown field"):
        rj.run(bad)
    with pytest.raises(ConfigError, match="config.algorithm.local_steps: toy has no option 'local_steps'"):
        rj.run(tiny(**{"algorithm.name": "toy", "algorithm.local_steps": 2}))


def test_every_channel_call_gets_its_own_key():
    def noisy(x, ctx):
        return x + jax.random.normal(ctx.key, x.shape)

    def two_exchanges(optimizer):
        def update(a, oracle, channels, ctx):
            y1 = channels["a"](a, ctx)
            y2 = channels["a"](a, ctx)
            y3 = channels["b"](a, ctx)
            return a, {"train_loss": jnp.stack([y1, y2, y3])}

        ex = {"a": rj.core.Exchange(), "b": rj.core.Exchange()}
        return rj.core.Algorithm(lambda x0, ctx: x0, update, lambda a: a, ex, "two")

    ch = rj.core.stateless_channel(noisy)
    oracle = rj.oracles.minibatch(rj.models.get("linear", (3,), 1, "regression"), 2)
    algo = two_exchanges(None)
    x0 = jnp.zeros((4, 3))
    state = rj.round.init_state(algo, oracle, {"a": ch, "b": ch}, x0, jax.random.PRNGKey(0))
    step = rj.round.make_step(algo, oracle, {"a": ch, "b": ch})
    data = rj.data.NodeData(jnp.zeros((4, 2, 3)), jnp.zeros((4, 2)), jnp.full((4,), 2, jnp.int32))
    _, m = step(state, data, {})
    y = np.asarray(m["train_loss"])
    assert not np.allclose(y[0], y[1]) and not np.allclose(y[0], y[2]) and not np.allclose(y[1], y[2])
    _, m2 = step(state._replace(round=state.round + 1), data, {})
    assert not np.allclose(np.asarray(m2["train_loss"])[0], y[0])  # another round, another key


def test_hyper_parameters_are_arguments_of_the_step_not_constants():
    exp = rj.build(tiny())
    step = jax.jit(exp.step)
    s0 = exp.init_state()
    a, _ = step(s0, exp.node_data, exp.hp_values())
    b, _ = step(s0, exp.node_data, exp.hp_values(**{"optimizer.learning_rate": 0.5}))
    assert not np.allclose(np.asarray(exp.models(a)), np.asarray(exp.models(b)))
    assert step._cache_size() == 1  # a new value, the same program
    with pytest.raises(KeyError, match="not a hyper-parameter"):
        exp.hp_values(**{"optimizer.learning_rat": 0.5})


def test_ported_dsgd_is_the_hand_written_round_bit_for_bit():
    """An independent D-SGD round (vmap of SGD over nodes, then x ← W x with the dense W), with
    the engine's key schedule, equals the protocol's round exactly (one-hot weights: no roundoff)."""
    c = tiny(
        **{
            "optimizer.name": "sgd",
            "optimizer.learning_rate": 0.1,
            "topology.name": "complete",
            "topology.weights": "uniform",
            "perf.gossip": "dense",
            "num_nodes": 4,
        }
    )
    exp = rj.build(c)
    s = exp.init_state()
    model, data = exp.model, exp.node_data
    W = jnp.asarray(exp.topology.mixing_matrix(), jnp.float32)
    x = exp.models(s)
    for t in range(3):
        round_key = jax.random.split(jax.random.fold_in(s.key, t))[0]
        # The minibatch oracle's schedule: one key per local step, every node's rows from it.
        key = jax.random.fold_in(jax.random.fold_in(round_key, rj.core.tag("minibatch")), 0)
        idx, mask = rj.data.subset_indices(key, data.sizes, data.x.shape[1], 8)
        xb, yb = (jax.vmap(lambda a, i: a[i])(a, idx) for a in (data.x, data.y))
        grads = jax.vmap(jax.grad(lambda p, a, b, m: rj.models.loss_and_metrics(model, p, a, b, m)[0]))(x, xb, yb, mask)
        x = jnp.matmul(W, x - 0.1 * grads, precision=jax.lax.Precision.HIGHEST)
    s3 = s
    for _ in range(3):
        s3, _ = jax.jit(exp.step)(s3, data, exp.hp_values())
    np.testing.assert_allclose(np.asarray(exp.models(s3)), np.asarray(x), rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- DIGing and Choco like D-SGD
ALGOS = {
    "diging": {"algorithm.name": "diging", "optimizer.name": "sgd", "optimizer.learning_rate": 0.05},
    "choco_sgd": {
        "algorithm.name": "choco_sgd",
        "compression.name": "top_k",
        "compression.ratio": 0.3,
        "compression.gamma": 0.4,
    },
}


@pytest.mark.parametrize("algo", list(ALGOS))
def test_dp_sgd_and_robust_rules_under_attack_run_with(algo):
    base = {**ALGOS[algo], "num_nodes": 9, "topology.name": "torus"}
    dp = rj.run(tiny(**base, **{"privacy.mode": "dp_sgd", "privacy.noise_multiplier": 1.0}))
    assert np.isfinite(dp.final["test_loss"]) and dp.final["epsilon"] > 0
    attack = {"byzantine.num": 1, "byzantine.attack": "sign_flip", "byzantine.strength": 30.0, "num_rounds": 12}
    atk = rj.run(tiny(**base, **attack, **{"aggregation.rule": "clipped_gossip"}))
    plain = rj.run(tiny(**base, **attack))
    assert np.isfinite(atk.final["test_loss"])
    assert atk.final["node_test_loss_mean"] < plain.final["node_test_loss_mean"]  # the rule does its job
    assert atk.compilations == dp.compilations == 1


@pytest.mark.parametrize("algo", list(ALGOS))
def test_sharded_over_8_devices_equals_unsharded(algo):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (tests/conftest.py)")
    ref = rj.run(tiny(**ALGOS[algo]))
    got = rj.run(tiny(**ALGOS[algo], **{"perf.mesh": (8,)}))
    assert got.params.sharding.spec[0] == "nodes" and len(got.params.sharding.device_set) == 8
    np.testing.assert_allclose(got.params, ref.params, rtol=2e-6, atol=2e-6)
    for k in ("test_loss", "train_loss", "consensus_distance", "bytes_sent"):
        np.testing.assert_allclose(got.metrics[k], ref.metrics[k], rtol=2e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("algo, axis", [("diging", "optimizer.learning_rate"), ("choco_sgd", "compression.gamma")])
def test_sweeps_compile_once_and_equal_the_runs(algo, axis):
    values = [0.05, 0.1] if axis.startswith("optimizer") else [0.2, 0.6]
    df = rj.sweep(tiny(**ALGOS[algo]), {axis: values, "seed": [0, 1]})
    assert df.attrs["traces"] == [1]
    # The graph and the data come from config.seed (0) for the whole sweep; a point's seed redraws the rest.
    alone = rj.run(tiny(**{**ALGOS[algo], axis: values[1], "seed": 1, "topology.seed": 0, "data.seed": 0}))
    point = df[(df[axis] == values[1]) & (df["seed"] == 1)].sort_values("round")
    for m in ("test_loss", "train_loss", "consensus_distance"):
        np.testing.assert_allclose(point[m], alone.metrics[m], rtol=2e-5, atol=1e-7, err_msg=m)


def test_a_diging_checkpoint_resumes_to_the_uninterrupted_run(tmp_path):
    c = {**ALGOS["diging"], "num_rounds": 12, "eval_every": 3, "checkpoint_every": 6}
    full = rj.run(tiny(**c), tmp_path / "full")
    rj.run(tiny(**{**c, "num_rounds": 6}), tmp_path / "resumed")
    resumed = rj.run(tiny(**c), tmp_path / "resumed")
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the whole state: trackers too
    assert [r["test_loss"] for r in resumed.rows] == [r["test_loss"] for r in full.rows]
    # A checkpoint of another algorithm (or config) is refused, naming the field.
    with pytest.raises(ConfigError, match=r"^config\.algorithm\.name: 'diging' -> 'dsgd': the checkpoint in "):
        rj.run(tiny(**{**c, "algorithm.name": "dsgd"}), tmp_path / "full")


# --------------------------------------------------------------------------- stateful mechanisms
def test_centered_clipping_starts_from_its_previous_output():
    """Karimireddy, He & Jaggi 2021: v_t = v_{t-1} + (1/n)Σclip(Δᵢ − v_{t-1}, τ), the server's state."""
    exp = rj.build(
        tiny(
            **{
                "algorithm.name": "fedavg",
                "aggregation.rule": "centered_clipping",
                "byzantine.num": 1,
                "byzantine.attack": "sign_flip",
            }
        )
    )
    ch = exp.channels["model"]
    rule = rj.aggregators.get("centered_clipping")
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 5))
    s = ch.init(x)
    ctx = rj.core.Ctx(jnp.int32(0), jax.random.PRNGKey(1), None, jnp.asarray(exp.honest), exp.hp_values())
    prev = np.zeros(5, np.float32)
    for t in range(3):
        base = np.asarray(s["model"])
        x = x + 0.1 * jax.random.normal(jax.random.PRNGKey(t + 5), x.shape)
        y, s = ch.update(x, s, ctx._replace(round=jnp.int32(t)))
        delta = np.asarray(x) - base
        honest = delta[exp.honest]
        delta[~exp.honest] = -honest.mean(0)  # sign flip
        want = rule(jnp.asarray(delta), 1, start=jnp.asarray(prev))
        np.testing.assert_allclose(np.asarray(s["rule"]), np.asarray(want), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(y[0]), base + np.asarray(want), rtol=1e-5, atol=1e-6)
        prev = np.asarray(want)


def test_mimic_tracks_the_top_principal_direction_online():
    tamper = rj.channels.mimic_online(warmup=5)
    rng = np.random.default_rng(0)
    direction = np.zeros(6)
    direction[2] = 1.0
    s = tamper.init(6)
    ctx = rj.core.Ctx(jnp.int32(0), jax.random.PRNGKey(0), None, jnp.ones(7, bool), {})
    for _ in range(12):
        # honest rows spread mostly along e₂: the top principal direction
        honest = rng.normal(size=(7, 6)) * 0.1 + rng.normal(size=(7, 1)) * 3.0 * direction
        out, s = tamper.update(jnp.asarray(honest, jnp.float32), 2, s, ctx)
        assert out.shape == (2, 6)
        target = int(s["target"])
        np.testing.assert_allclose(np.asarray(out[0]), honest[target], rtol=1e-6)  # copies one honest row
    assert abs(float(np.asarray(s["z"])[2])) > 0.99  # the online estimate found e₂
    assert int(s["t"]) == 12
    frozen = int(s["target"])
    honest = rng.normal(size=(7, 6))
    out, s = tamper.update(jnp.asarray(honest, jnp.float32), 2, s, ctx)
    assert int(s["target"]) == frozen  # after the warm-up the mimicked worker stays the same
