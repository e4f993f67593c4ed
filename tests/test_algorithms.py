"""Gradient tracking, exact diffusion and compressed gossip on the round protocol, against closed forms.

On whitened least squares every node's loss is exactly fᵢ(x) = ½‖x − bᵢ‖² + cᵢ, so with full
batches each method is a linear recursion whose fixed point and rate are known
(``rj.theory``): constant-step D-SGD stops at α(αI + I − W)⁻¹b (CTA) or α(I − (1−α)W)⁻¹Wb (ATC),
off the optimum x* = mean(b); DIGing, exact diffusion and D² reach x* at the spectral radius
of their error iteration.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj

N, DIM, M = 8, 5, 20


def _config(algorithm="dsgd", lr=0.3, rounds=200, **over):
    c = rj.config.base_config()
    fields = {
        "num_nodes": N,
        "topology.name": "ring",
        "data.name": "linear",
        "data.whiten": True,
        "data.dim": DIM,
        "data.num_examples": N * M,
        "data.heterogeneity": 1.0,
        "data.batch_size": M,
        "model.name": "linear",
        "optimizer.name": "sgd",
        "optimizer.learning_rate": lr,
        "num_rounds": rounds,
        "eval_every": rounds,
        "checkpoint_every": 0,
        "progress": False,
        "plots": False,
        "algorithm.name": algorithm,
        **over,
    }
    for k, v in fields.items():
        rj.config.set_field(c, k, v)
    return c


def _trajectory(exp, rounds):
    """Every node's model after each of ``rounds`` rounds: ``[rounds, N, d]`` (float64)."""
    state, hp = exp.init_state(), exp.hp_values()

    def body(s, _):
        s, _ = exp.step(s, exp.node_data, hp)
        return s, exp.models(s)

    _, xs = jax.jit(lambda s: jax.lax.scan(body, s, None, length=rounds))(state)
    return np.asarray(xs, np.float64)


def _problem(exp):
    B = np.asarray(exp.dataset.info["node_targets"], np.float64).reshape(N, DIM)
    return B, B.mean(0), exp.topology.mixing_matrix()


@pytest.mark.parametrize("order", ["cta", "atc"])
def test_dsgd_keeps_the_consensus_bias_of_its_closed_form(order):
    exp = rj.build(_config("dsgd", **{"algorithm.order": order}))
    B, x_star, W = _problem(exp)
    x = _trajectory(exp, 200)[-1]
    fixed = rj.theory.dsgd_fixed_point(W, B, 0.3, order)
    np.testing.assert_allclose(x, fixed, atol=1e-6)
    assert np.abs(fixed - x_star).max() > 1e-2  # the bias is real, far above the tolerance


@pytest.mark.parametrize(
    "name, order, lr",
    [("diging", "cta", 0.1), ("diging", "atc", 0.2), ("exact_diffusion", None, 0.5), ("d2", None, 0.7)],
)
def test_exact_methods_reach_the_optimum_at_their_spectral_rate(name, order, lr):
    # A 3-regular graph: its weights (1/4) are exact in float32, so W stays exactly doubly
    # stochastic (with weights 1/3 the float32 column sums miss 1 by 3e-8, which moves ED's fixed
    # point by ~1e-6); this one has λ_min(W) = -0.309 > -1/3, as D² needs.
    over = {"topology.name": "random_regular", "topology.k": 3, "topology.seed": 6}
    if order:
        over["algorithm.order"] = order
    exp = rj.build(_config(name, lr, **over))
    B, x_star, W = _problem(exp)
    if name == "diging":
        rate = rj.theory.diging_rate(W, lr, 1.0, order)
    elif name == "exact_diffusion":
        rate = rj.theory.exact_diffusion_rate(W, lr, 1.0)
    else:
        rate = rj.theory.d2_rate(W, lr, 1.0)
    # Run until the closed-form rate has shrunk the error to ~1e-8, not far beyond: in float32
    # the second-order recursions of ED/D² let rounding errors accumulate (a slow drift).
    rounds = int(np.ceil(np.log(1e-8) / np.log(rate))) + 10
    xs = _trajectory(exp, rounds)
    np.testing.assert_allclose(xs[-1], np.broadcast_to(x_star, (N, DIM)), atol=1e-6)
    err = np.linalg.norm(xs - x_star, axis=(1, 2))
    window = np.flatnonzero((err < 1e-2) & (err > 1e-5))  # the linear tail, above float32 noise
    assert window.size >= 10, window
    measured = np.exp(np.polyfit(window, np.log(err[window]), 1)[0])
    assert measured == pytest.approx(rate, rel=2e-2), (measured, rate)


def test_diging_tracker_keeps_its_sum_while_robust_rules_act_on_the_models():
    # Mean(Y_t) = mean(G_t) every round (Nedić et al. 2017) needs a sum-preserving exchange: the
    # tracker is declared non-robust, so ClippedGossip under attack applies to the models only.
    c = _config(
        "diging",
        0.1,
        30,
        **{
            "num_nodes": 9,
            "topology.name": "torus",
            "data.num_examples": 9 * M,
            "byzantine.num": 1,
            "byzantine.attack": "sign_flip",
            "aggregation.rule": "clipped_gossip",
        },
    )
    exp = rj.build(c)
    assert exp.channels["tracker"].conserving and not exp.channels["model"].conserving
    state, hp = exp.init_state(), exp.hp_values()
    step = jax.jit(exp.step)
    for _ in range(30):
        state, _ = step(state, exp.node_data, hp)
        a = state.algorithm
        gap = np.abs(np.asarray(a.y).sum(0) - np.asarray(a.g).sum(0)).max()
        assert gap <= 1e-4 * max(1.0, np.abs(np.asarray(a.g)).sum(0).max()), gap


def test_exact_diffusion_refuses_a_non_symmetric_mixing_matrix():
    n = 6
    P = np.roll(np.eye(n), 1, axis=1)
    directed = rj.topology.from_mixing_matrices([(np.eye(n) + P) / 2], name="directed_ring")
    assert directed.is_doubly_stochastic and not directed.is_symmetric
    c = _config("exact_diffusion", **{"num_nodes": n, "data.num_examples": n * M})
    with pytest.raises(rj.config.ConfigError, match="config.algorithm.name: exact_diffusion needs a symmetric"):
        rj.build(c, topology=directed)
    rj.build(_config("diging", **{"num_nodes": n, "data.num_examples": n * M}), topology=directed)  # allowed


def test_d2_refuses_lambda_min_below_minus_one_third():
    n = 2  # W = [[0, 1], [1, 0]] has λ_min = -1
    W = np.array([[0.0, 1.0], [1.0, 0.0]])
    topo = rj.topology.from_mixing_matrices([W], name="swap")
    with pytest.raises(rj.config.ConfigError, match="λ_min"):
        rj.build(_config("d2", **{"num_nodes": n, "data.num_examples": n * M}), topology=topo)


# --------------------------------------------------------------------------- compression
def _ctx(topo, round=0, key=0):
    return rj.core.Ctx(
        jnp.int32(round), jax.random.PRNGKey(key), rj.core.Edges.of(topo, round), jnp.ones(topo.n, bool), {}
    )


@pytest.mark.parametrize(
    "name, opts",
    [("top_k", {"ratio": 0.2}), ("random_k", {"ratio": 0.3}), ("qsgd", {"levels": 4}), ("sign", {}), ("identity", {})],
)
@pytest.mark.parametrize("gamma", [0.05, 0.7])
def test_choco_gossip_preserves_the_network_mean_for_every_compressor(name, opts, gamma):
    topo = rj.topology.ring(10)
    ch = rj.channels.choco(rj.channels.gossip(topo), rj.compress.get(name, **opts), gamma)
    x = jax.random.normal(jax.random.PRNGKey(0), (10, 40))
    s = ch.init(x)
    mean0 = np.asarray(x, np.float64).mean(0)
    for t in range(20):
        x, s = ch.update(x, s, _ctx(topo, t, t))
        np.testing.assert_allclose(np.asarray(x, np.float64).mean(0), mean0, atol=2e-6)


def test_choco_gossip_with_identity_and_gamma_one_is_plain_gossip():
    topo = rj.topology.torus(3)
    x = jax.random.normal(jax.random.PRNGKey(1), (9, 7))
    ch = rj.channels.choco(rj.channels.gossip(topo), rj.compress.identity(), 1.0)
    y, _ = ch.update(x, ch.init(x), _ctx(topo))
    np.testing.assert_allclose(y, topo.mixing_matrix() @ np.asarray(x, np.float64), atol=1e-6)


def test_choco_sgd_with_identity_and_gamma_one_equals_dsgd():
    base = {
        "data.name": "digits",
        "model.name": "mlp",
        "model.hidden": (8,),
        "data.batch_size": 8,
        "data.num_examples": 2000,
        "optimizer.name": "momentum",
        "optimizer.learning_rate": 0.05,
        "num_rounds": 12,
        "eval_every": 6,
    }
    choco = rj.run(_config("choco_sgd", **base, **{"compression.gamma": 1.0}))
    plain = rj.run(_config("dsgd", **base))
    np.testing.assert_allclose(np.asarray(choco.params), np.asarray(plain.params), atol=2e-6)
    for k in ("test_loss", "train_loss", "consensus_distance"):
        np.testing.assert_allclose(choco.metrics[k], plain.metrics[k], rtol=1e-4, atol=1e-8, err_msg=k)


def test_compression_shows_in_the_bytes_sent():
    base = {"num_rounds": 4, "eval_every": 2}
    plain = rj.run(_config("dsgd", **base))
    topk = rj.run(
        _config(
            "choco_sgd", **base, **{"compression.name": "top_k", "compression.ratio": 0.2, "compression.gamma": 0.5}
        )
    )
    d = plain.experiment.model.num_params
    edges = int(plain.experiment.topology.edge_mask.sum())
    assert plain.final["bytes_per_round"] == edges * 4 * d  # one float32 row per directed edge
    assert plain.final["bytes_sent"] == 4 * edges * 4 * d
    k = max(1, round(0.2 * d))
    assert topk.final["bytes_per_round"] == edges * k * (32 + int(np.ceil(np.log2(d)))) / 8
    fed = rj.run(_config("fedavg", **base))
    assert fed.final["bytes_per_round"] == 2 * N * 4 * d  # up to the server and back


def test_deepsqueeze_error_feedback_keeps_what_compression_dropped():
    topo = rj.topology.ring(8)
    q = rj.compress.top_k(ratio=0.25)
    ch = rj.channels.error_feedback(rj.channels.gossip(topo), q, 0.5)
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 12))
    s = ch.init(x)
    y, s = ch.update(x, s, _ctx(topo))
    sent = q.compress(x)
    np.testing.assert_allclose(s["error"], x - sent, atol=1e-6)  # e = v − Q(v), v = x + 0
    W = topo.mixing_matrix()
    np.testing.assert_allclose(y, np.asarray(x) + 0.5 * (W @ np.asarray(sent) - np.asarray(sent)), atol=1e-6)


def test_a_compressor_on_an_uncompressed_algorithm_is_refused():
    with pytest.raises(rj.config.ConfigError, match="config.compression.name: dsgd sends its messages uncompressed"):
        rj.build(_config("dsgd", **{"compression.name": "top_k"}))
