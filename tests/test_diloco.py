"""DiLoCo (Douillard et al. 2023) on the round protocol, against hand-written references.

On whitened least squares with full batches, fᵢ(x) = ½‖x − bᵢ‖² + cᵢ, so H inner GD steps of
size γ from x are x̃ᵢ = bᵢ + (1 − γ)^H (x − bᵢ): affine in x with the same linear part on every
node. The pseudo-gradient is then Δᵢ = xᵢ − x̃ᵢ = (1 − a)(xᵢ − bᵢ), a = (1 − γ)^H, and the
server's outer Nesterov step (PyTorch's form) is m ← μm + Δ̄, x ← x − η(Δ̄ + μm).

Gossip variant: x ← W u with uᵢ = xᵢ − η(Δᵢ + μmᵢ). Averaging over nodes with 1ᵀW = 1ᵀ (W
column-stochastic, e.g. doubly stochastic) gives x̄ ← ū = x̄ − η(Δ̄ + μm̄), m̄ ← μm̄ + Δ̄, and
Δ̄ = (1 − a)(x̄ − b̄) depends on x̄ alone exactly when the inner map is affine with a common
linear part (here: a common Hessian, full batches, plain GD). So the network mean follows the
server run exactly; with node-dependent Hessians it does not (checked below).
"""

import re

import jax
import numpy as np
import pytest
from test_algorithms import DIM, N
from test_algorithms import _config as _linear_config

import redeem_jax as rj

H, GAMMA = 3, 0.2


def _config(algorithm="diloco", rounds=30, **over):
    """test_algorithms' whitened linear regression on 8 nodes of a ring, full batches, plain GD
    (γ = 0.2), with H local steps."""
    return _linear_config(algorithm, lr=GAMMA, rounds=rounds, **{"algorithm.local_steps": H, **over})


_RUNS = {}


def _trajectory(exp, rounds, **hp):
    """Every node's model after each round ``[rounds, N, d]`` (float64) and the metrics, with
    ``hp`` passed as an argument of one jitted run per (experiment, rounds)."""
    key = (id(exp), rounds)
    if key not in _RUNS:

        def run(s, hpv):
            def body(s, _):
                s, m = exp.step(s, exp.node_data, hpv)
                return s, (exp.models(s), m)

            return jax.lax.scan(body, s, None, length=rounds)[1]

        _RUNS[key] = (exp, jax.jit(run))  # holding exp keeps its id from being reused
    xs, ms = _RUNS[key][1](exp.init_state(), exp.hp_values(**hp))
    return np.asarray(xs, np.float64), jax.tree.map(np.asarray, ms)


def _targets(exp):
    return np.asarray(exp.dataset.info["node_targets"], np.float64).reshape(N, DIM)


def _reference_server(x0, B, eta, mu, rounds):
    """Hand-written DiLoCo on the closed-form inner phase: the server model after each round."""
    a = (1 - GAMMA) ** H
    x, m, out = x0.mean(0), np.zeros(DIM), []
    for _ in range(rounds):
        delta = np.mean((1 - a) * (x - B), axis=0)
        m = mu * m + delta
        x = x - eta * (delta + mu * m)
        out.append(x)
    return np.stack(out)


@pytest.fixture(scope="module")
def server():
    """The server variant, built once; η and μ are arguments of its one compiled step."""
    return rj.build(_config(**{"algorithm.over": "server"}))


@pytest.fixture(scope="module")
def gossip():
    return rj.build(_config(**{"algorithm.over": "graph"}))


def test_outer_lr_one_without_momentum_is_fedavg_and_local_dsgd(server, gossip):
    one = {"algorithm.outer_lr": 1.0, "algorithm.outer_momentum": 0.0}
    xs, _ = _trajectory(server, 30, **one)
    ref, _ = _trajectory(rj.build(_config("fedavg")), 30)
    np.testing.assert_allclose(xs, ref, atol=1e-6)
    xs, _ = _trajectory(gossip, 30, **one)
    ref, _ = _trajectory(rj.build(_config("dsgd")), 30)  # D-SGD with H local steps on the same ring
    np.testing.assert_allclose(xs, ref, atol=1e-6)


@pytest.mark.parametrize("eta, mu", [(0.7, 0.9), (1.3, 0.5)])
def test_outer_nesterov_step_matches_a_hand_written_reference(server, eta, mu):
    xs, ms = _trajectory(server, 30, **{"algorithm.outer_lr": eta, "algorithm.outer_momentum": mu})
    x0 = np.asarray(server.models(server.init_state()), np.float64)
    ref = _reference_server(x0, _targets(server), eta, mu, 30)
    np.testing.assert_allclose(xs, np.broadcast_to(ref[:, None], xs.shape), atol=1e-5)
    # The optimum of the average loss is b̄: DiLoCo reaches it (server: no consensus error).
    np.testing.assert_allclose(ref[-1], _targets(server).mean(0), atol=1e-3)
    # One exchange of d floats per node, up and down, every round.
    np.testing.assert_allclose(ms["bytes_sent"], 2 * N * 4 * DIM)  # linear model: d = DIM
    assert _RUNS[(id(server), 30)][1]._cache_size() == 1  # every (η, μ) ran through one compile


def test_gossip_network_mean_follows_the_server_when_inner_steps_are_linear(server, gossip):
    hp = {"algorithm.outer_lr": 0.7, "algorithm.outer_momentum": 0.9}
    xg, _ = _trajectory(gossip, 30, **hp)
    xs, _ = _trajectory(server, 30, **hp)
    np.testing.assert_allclose(xg.mean(1), xs[:, 0], atol=1e-5)
    assert np.abs(xg - xg.mean(1, keepdims=True)).max() > 1e-3  # the nodes themselves disagree
    # The condition is needed: unwhitened data (a Hessian per node) breaks it.
    over = {"data.whiten": False}
    xg, _ = _trajectory(rj.build(_config(**over, **{"algorithm.over": "graph"})), 30, **hp)
    xs, _ = _trajectory(rj.build(_config(**over, **{"algorithm.over": "server"})), 30, **hp)
    assert np.abs(xg.mean(1) - xs[:, 0]).max() > 1e-4


@pytest.mark.parametrize("how", ["choco", "error_feedback"])
def test_compressed_gossip_keeps_the_mean_and_sends_fewer_bytes(server, gossip, how):
    # Choco's public copies and DeepSqueeze's error feedback both add γ(W c − c) terms whose
    # network sum is 0 (1ᵀW = 1ᵀ): the mean still follows the server run, for any compressor.
    over = {"algorithm.over": "graph", "algorithm.compression": how, "compression.name": "top_k"}
    exp = rj.build(_config(**over, **{"compression.ratio": 0.4}))
    hp = {"algorithm.outer_lr": 0.7, "algorithm.outer_momentum": 0.5}
    xc, mc = _trajectory(exp, 60, **hp)
    xs, _ = _trajectory(server, 60, **hp)
    np.testing.assert_allclose(xc.mean(1), xs[:, 0], atol=1e-4)
    xp, mp = _trajectory(gossip, 60, **hp)
    if how == "choco":  # Choco-Gossip (γ = 1) converges to the uncompressed run's fixed point
        np.testing.assert_allclose(xc[-1], xp[-1], atol=1e-4)
    assert np.all(np.isfinite(xc))
    assert float(mc["bytes_sent"][0]) < 0.8 * float(mp["bytes_sent"][0])


@pytest.mark.parametrize(
    "over",
    [
        {"algorithm.over": "server", "aggregation.rule": "nnm+trimmed_mean"},
        {"algorithm.over": "graph", "topology.name": "complete", "aggregation.rule": "nnm+trimmed_mean"},
    ],
)
def test_pseudo_gradients_through_a_robust_channel_under_alie_stay_near_the_honest_optimum(over):
    byz = {"byzantine.num": 2, "byzantine.placement": "given", "byzantine.ids": (0, 4), "byzantine.attack": "alie"}
    hp = {"algorithm.outer_lr": 0.7, "algorithm.outer_momentum": 0.9}
    honest = np.ones(N, bool)
    honest[[0, 4]] = False
    errs = {}
    for rule in (over["aggregation.rule"], "mean"):
        exp = rj.build(_config(rounds=60, **{**over, **byz, "aggregation.rule": rule, "byzantine.strength": 5.0}))
        xs, ms = _trajectory(exp, 60, **hp)
        b_star = _targets(exp)[honest].mean(0)  # the honest nodes' optimum
        errs[rule] = np.linalg.norm(xs[-1][honest] - b_star, axis=1).max()
        assert np.all(np.isfinite(ms["pseudo_grad_norm"]))
    spread = np.linalg.norm(_targets(exp)[honest] - b_star, axis=1).max()
    robust = errs[over["aggregation.rule"]]
    assert robust < 0.5 * spread, errs  # bounded by a fraction of the honest heterogeneity
    assert errs["mean"] > 2 * robust, errs  # the plain mean is dragged away


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("algorithm.outer_momentum", 1.0, "outer_momentum: must be in [0, 1)"),
        ("algorithm.outer_lr", 0.0, "outer_lr: must be > 0"),
        ("algorithm.over", "cloud", "is not one of graph, server"),
        ("algorithm.compression", "zip", "is not one of none, choco, error_feedback"),
        ("algorithm.local_steps", 0, "local_steps"),
    ],
)
def test_bad_options_are_config_errors(field, value, message):
    # (a ConfigError, or for algorithm.over the ValueError config validation raises for every
    # algorithm with an ``over`` option)
    with pytest.raises(ValueError, match=re.escape(message)):
        rj.build(_config(**{field: value}))


def test_compression_needs_the_graph_and_a_declared_scheme():
    with pytest.raises(rj.config.ConfigError, match="server exchange is uncompressed"):
        rj.build(_config(**{"algorithm.over": "server", "algorithm.compression": "choco"}))
    with pytest.raises(rj.config.ConfigError, match="sends its messages uncompressed"):
        rj.build(_config(**{"compression.name": "top_k"}))


def test_diloco_run_from_a_config_checkpoints_and_resumes_identically(tmp_path):
    # Inner AdamW: its moments and the outer momentum are both in the checkpointed state.
    over = {"eval_every": 3, "checkpoint_every": 3, "optimizer.name": "adamw", "optimizer.learning_rate": 0.05}
    full = rj.run(_config(rounds=6, **over), tmp_path / "full")
    rj.run(_config(rounds=3, **over), tmp_path / "resumed")
    resumed = rj.run(_config(rounds=6, **over), tmp_path / "resumed")
    assert [r["test_loss"] for r in resumed.rows] == [r["test_loss"] for r in full.rows]
    for a, b in zip(jax.tree.leaves(resumed.state.algorithm), jax.tree.leaves(full.state.algorithm)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert full.rows[-1]["test_loss"] < full.rows[0]["test_loss"]
    assert np.abs(np.asarray(full.state.algorithm.m)).max() > 0
