"""Ditto and APFL on the round protocol, and Ditto's closed-form error on Gaussian mean estimation.

On whitened least squares with full batches fᵢ(x) = ½‖x − bᵢ‖² + cᵢ exactly, so local training
from x₀ is x_t = bᵢ + (1 − η)^{Ht}(x₀ − bᵢ), D-SGD stops at ``rj.theory.dsgd_fixed_point`` and
Ditto's personal model at (bᵢ + λxᵢ*)/(1 + λ): the references below are those closed forms.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.algorithms import apfl, ditto

sys.path.insert(0, str(Path(__file__).parent))
from _configs import small_config  # noqa: E402

N, DIM, M = 8, 5, 20


def _config(algorithm, lr=0.3, rounds=100, **over):
    """test_algorithms' linear-regression config (8 nodes of a ring), 100 rounds by default."""
    from test_algorithms import _config as linear_config

    return linear_config(algorithm, lr, rounds, **over)


def _run_exp(exp, rounds):
    """The evaluated models after each round ``[rounds, N, d]`` and the final algorithm state."""
    state, hp = exp.init_state(), exp.hp_values()

    def body(s, _):
        s, _ = exp.step(s, exp.node_data, hp)
        return s, exp.models(s)

    s, xs = jax.jit(lambda s: jax.lax.scan(body, s, None, length=rounds))(state)
    return np.asarray(xs, np.float64), s


def _targets(exp):
    return np.asarray(exp.dataset.info["node_targets"], np.float64).reshape(N, DIM)


def _x0(exp):
    return np.asarray(exp.models(exp.init_state()), np.float64)


def _local_training(x0, B, lr, steps):
    """Full-batch GD on ½‖x − bᵢ‖² from x₀: closed form after each of ``steps`` rounds."""
    return B + (1 - lr) ** steps[:, None, None] * (x0 - B)


# --------------------------------------------------------------------------- Ditto
@pytest.mark.parametrize("local_steps", [1, 2])
def test_ditto_with_lambda_zero_is_local_training(local_steps):
    exp = rj.build(_config("ditto", **{"algorithm.lam": 0.0, "algorithm.local_steps": local_steps}))
    xs, _ = _run_exp(exp, 30)
    ref = _local_training(_x0(exp), _targets(exp), 0.3, local_steps * np.arange(1, 31.0))
    np.testing.assert_allclose(xs, ref, atol=2e-5)


def test_ditto_personal_models_reach_their_closed_form_fixed_point():
    lam = 0.5
    exp = rj.build(_config("ditto", rounds=300, **{"algorithm.lam": lam}))
    xs, s = _run_exp(exp, 300)
    B, W = _targets(exp), exp.topology.mixing_matrix()
    x_star = rj.theory.dsgd_fixed_point(W, B, 0.3, "atc")
    np.testing.assert_allclose(np.asarray(s.algorithm.x), x_star, atol=1e-5)
    np.testing.assert_allclose(xs[-1], (B + lam * x_star) / (1 + lam), atol=1e-5)
    # Strictly between local (B) and shared (x*): far from both at this λ.
    assert np.abs(xs[-1] - B).max() > 0.05 and np.abs(xs[-1] - x_star).max() > 0.05


def _quadratic_oracle():
    """fᵢ(x) = ½‖x − bᵢ‖² with bᵢ the node data (full gradients, no sampling)."""

    def update(x, s, ctx, B):
        return 0.5 * jnp.sum((x - B) ** 2, axis=1), x - B, s

    return rj.core.Oracle(lambda x: (), update)


def _run_direct(algo, x0, B, rounds, edit=None):
    """The algorithm on a ring with plain gossip: per round (models, algorithm state);
    ``edit(algorithm_state)`` replaces the initial algorithm state."""
    topo = rj.topology.ring(N)
    oracle, channels = _quadratic_oracle(), {"model": rj.channels.gossip(topo)}
    x0 = jnp.asarray(x0, jnp.float32)
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), topology=topo)
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    if edit is not None:
        state = state._replace(algorithm=edit(state.algorithm))

    def body(s, _):
        s, _ = step(s, jnp.asarray(B, jnp.float32), {})
        return s, (algo.models(s.algorithm), s.algorithm)

    _, out = jax.jit(lambda s: jax.lax.scan(body, s, None, length=rounds))(state)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), out)


def _problem(seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, DIM)) * 3.0, rng.normal(size=(N, DIM)) * spread


def test_ditto_with_huge_lambda_follows_the_shared_model():
    # λ = 1e6 with ηλ = 1: v ← x − η∇f(v), so v trails the round-start shared model by η‖∇f‖
    # (≈ 1e-5), while the shared models themselves move by O(1) through gossip from x₀.
    x0, B = _problem()
    opt = rj.local.optim.local_optimizer("sgd", 1e-6)
    v, st = _run_direct(ditto.ditto(opt, 1e6), x0, B, 20)
    x_prev = np.concatenate([x0[None], st.x[:-1]])
    np.testing.assert_allclose(v, x_prev, atol=1e-4)
    assert np.abs(st.x[-1] - x0).max() > 1.0  # the shared model really moved
    v_local, _ = _run_direct(ditto.ditto(opt, 0.0), x0, B, 20)
    assert np.abs(v_local - x_prev).max() > 1.0  # λ = 0 does not follow it


def test_ditto_lambda_is_an_argument_of_the_compiled_step():
    # λ is a Hyper (config algorithm.lam): one compiled step, two values passed as its argument;
    # λ = 0 through the argument is local training (closed form), λ = 0.5 is not.
    exp = rj.build(_config("ditto", **{"algorithm.lam": 0.5}))
    step = jax.jit(exp.step)
    runs = {}
    for lam in (0.0, 0.5):
        s, hp = exp.init_state(), exp.hp_values(**{"algorithm.lam": lam})
        for _ in range(10):
            s, _ = step(s, exp.node_data, hp)
        runs[lam] = np.asarray(exp.models(s), np.float64)
    assert step._cache_size() == 1
    ref = _local_training(_x0(exp), _targets(exp), 0.3, np.arange(1, 11.0))[-1]
    np.testing.assert_allclose(runs[0.0], ref, atol=2e-5)
    assert np.abs(runs[0.5] - ref).max() > 1e-2


# --------------------------------------------------------------------------- APFL
def test_apfl_with_alpha_fixed_at_zero_is_the_shared_model_algorithm():
    # Minibatches (batch 5 of 20): the shared steps draw the very batches D-SGD draws.
    over = {"data.batch_size": 5, "data.whiten": False}
    ref, _ = _run_exp(rj.build(_config("dsgd", lr=0.1, **over)), 40)
    cfg = _config("apfl", lr=0.1, **over, **{"algorithm.alpha": 0.0, "algorithm.alpha_lr": 0.0})
    xs, s = _run_exp(rj.build(cfg), 40)
    np.testing.assert_allclose(xs, ref, atol=1e-6)
    assert np.all(np.asarray(s.algorithm.alpha) == 0.0)


def test_apfl_with_alpha_fixed_at_one_is_local_training():
    exp = rj.build(_config("apfl", **{"algorithm.alpha": 1.0, "algorithm.alpha_lr": 0.0}))
    xs, _ = _run_exp(exp, 30)
    ref = _local_training(_x0(exp), _targets(exp), 0.3, np.arange(1, 31.0))
    np.testing.assert_allclose(xs, ref, atol=2e-5)


@pytest.mark.parametrize("better", ["local", "shared"])
def test_apfl_alpha_moves_toward_the_better_model(better):
    # Models frozen (learning rate 0), α learned from 0.5: f(αv + (1 − α)w) is a convex
    # parabola in α with its minimum at α = 1 when v = bᵢ (the local model is the optimum)
    # and at α = 0 when w = bᵢ (homogeneous nodes, the shared model is the optimum; v is off
    # by noise). The α-gradient ⟨v − w, ∇f(v̄)⟩ must drive every αᵢ to that end.
    x0, B = _problem(spread=3.0)
    noise = np.random.default_rng(1).normal(size=(N, DIM))
    if better == "local":
        v0, w0 = B, x0  # gossip mixes w toward mean(x₀), still far from every bᵢ
    else:
        B = np.broadcast_to(B[0], B.shape)
        v0, w0 = B + noise, B  # w = b everywhere stays b under gossip
    opt = rj.local.optim.local_optimizer("sgd", 0.0)
    edit = lambda a: a._replace(v=jnp.asarray(v0, jnp.float32), w=jnp.asarray(w0, jnp.float32))  # noqa: E731
    mix, st = _run_direct(apfl.apfl(opt, 0.5, 0.05), x0, B, 200, edit)
    alpha = st.alpha[-1]
    if better == "local":
        assert np.all(alpha > 0.99), alpha
    else:
        assert np.all(alpha < 0.01), alpha
    np.testing.assert_allclose(mix[-1], B, atol=0.05)  # the mixture lands on the better model


# --------------------------------------------------------------------------- from a config
def test_ditto_run_from_a_config_checkpoints_and_resumes_identically(tmp_path):
    over = {"num_rounds": 6, "eval_every": 3, "checkpoint_every": 3, "model.hidden": (), "algorithm.name": "ditto"}
    over["algorithm.lam"] = 0.3
    full = rj.run(small_config(**over), tmp_path / "full")
    rj.run(small_config(**{**over, "num_rounds": 3}), tmp_path / "resumed")
    resumed = rj.run(small_config(**over), tmp_path / "resumed")
    assert [r["test_loss"] for r in resumed.rows] == [r["test_loss"] for r in full.rows]
    np.testing.assert_array_equal(np.asarray(resumed.state.algorithm.v), np.asarray(full.state.algorithm.v))
    assert np.isfinite(full.final["test_loss"])


@pytest.mark.parametrize(
    "name, over",
    [
        # APFL on a torus: 3 NaN senders against ClippedGossip.
        ("apfl", {"topology.name": "torus", "byzantine.attack": "nan", "aggregation.rule": "clipped_gossip"}),
        # Ditto through a server (algorithm.over): 3 sign-flippers against the trimmed mean. The
        # config's placement check reads the algorithm's default exchange (a ring): adjacent ids
        # leave the honest nodes connected on it, so it does not warn.
        (
            "ditto",
            {
                "algorithm.over": "server",
                "byzantine.attack": "sign_flip",
                "aggregation.rule": "trimmed_mean",
                "byzantine.placement": "given",
                "byzantine.ids": (0, 1, 2),
            },
        ),
    ],
)
def test_personal_models_stay_finite_under_attack_with_a_robust_channel(name, over):
    c = small_config(
        **{"num_nodes": 16, "num_rounds": 10, "eval_every": 10, "model.hidden": (), "byzantine.num": 3},
        **{"algorithm.name": name, **over},
    )
    res = rj.run(c)
    honest = np.asarray(res.experiment.honest)
    assert honest.sum() == 13
    assert np.isfinite(np.asarray(res.params)[honest]).all()
    assert np.isfinite(res.final["test_loss"])
    if name == "ditto":
        # The server broadcasts one shared model; the personal models stay apart.
        x = np.asarray(res.state.algorithm.x)[honest]
        assert np.abs(x - x[0]).max() == 0.0
        assert np.abs(np.asarray(res.params)[honest] - x).max() > 1e-3


# --------------------------------------------------------------------------- theory
def test_ditto_mse_closed_form_matches_monte_carlo_and_its_optimum():
    n, m, d, sigma2, tau2, R = 6, 5, 3, 1.0, 0.1, 40_000
    rng = np.random.default_rng(0)
    mu = rng.normal(size=d)
    delta = rng.normal(size=(R, n, d)) * np.sqrt(tau2)
    y = mu + delta[:, :, None, :] + rng.normal(size=(R, n, m, d)) * np.sqrt(sigma2)
    ybar, xbar = y.mean(2), y.mean((1, 2))[:, None, :]
    lam_star = rj.theory.ditto_optimal_lambda(m, sigma2, tau2, n, d)
    assert lam_star == pytest.approx(sigma2 / (m * tau2))
    lams = [0.0, 0.25 * lam_star, lam_star, 4 * lam_star, 50.0]
    mc = []
    for lam in lams:
        v = (ybar + lam * xbar) / (1 + lam)  # Ditto's fixed point (per-sample-mean loss)
        err = ((v - (mu + delta)) ** 2).sum(-1)  # [R, n]; nodes within a draw are correlated
        per_draw = err.mean(1)
        mean, se = per_draw.mean(), per_draw.std(ddof=1) / np.sqrt(R)
        assert abs(mean - rj.theory.ditto_mse(lam, m, sigma2, tau2, n, d)) < 3 * se, (lam, mean, se)
        mc.append(per_draw)
    # The Monte Carlo minimiser over the grid is λ*, with common random numbers: the gaps are
    # many standard errors wide.
    for j in (0, 1, 3, 4):
        gap = mc[j] - mc[2]
        assert gap.mean() > 3 * gap.std(ddof=1) / np.sqrt(R), lams[j]
    # And λ* is the closed form's minimiser on a fine grid.
    grid = np.geomspace(1e-3, 1e3, 20001)
    assert grid[np.argmin(rj.theory.ditto_mse(grid, m, sigma2, tau2, n, d))] == pytest.approx(lam_star, rel=1e-3)


@pytest.mark.parametrize("algo", ["ditto", "apfl", "fedrep"])
def test_config_checks_see_the_server_when_algorithm_over_is_server(algo):
    """With ``algorithm.over = "server"`` the config checks treat the run as federated: an edge
    attack (one vector per edge of a graph) is refused, central DP is accepted; on the graph it
    is the other way round."""
    server = {"algorithm.name": algo, "algorithm.over": "server", "byzantine.num": 1}
    with pytest.raises(rj.config.ConfigError, match="byzantine.attack"):
        rj.config.validate(small_config(**server, **{"byzantine.attack": "dissensus"}))
    rj.config.validate(small_config(**{**server, "byzantine.num": 0}, **{"privacy.mode": "central"}))
    with pytest.raises(rj.config.ConfigError, match="privacy.mode"):
        rj.config.validate(
            small_config(**{"algorithm.name": algo, "algorithm.over": "graph"}, **{"privacy.mode": "central"})
        )
