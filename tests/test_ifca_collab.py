"""IFCA (Ghosh et al. 2020) and graph-regularized collaborative learning (Vanhaesebrouck, Bellet &
Tommasi 2017): planted clusters, the k = 1 reduction to D-SGD, the closed-form fixed point of
model propagation, the μ = 0 and μ → ∞ limits, and a config run that checkpoints and resumes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.algorithms import collab, dsgd, ifca
from redeem_jax.local.optim import local_optimizer

N, D = 8, 3


def _run(algo, topo, data, oracle, rounds, x0, seed=0):
    """Per round (stacked): the evaluated models ``algo.models(state)`` and the metrics."""
    channels = {k: rj.channels.gossip(topo) for k in algo.exchanges}
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(seed), topology=topo)
    step = rj.round.make_step(algo, oracle, channels, topology=topo)

    def body(s, _):
        s, m = step(s, data, {})
        return s, (algo.models(s.algorithm), m)

    final, out = jax.jit(lambda s: jax.lax.scan(body, s, None, length=rounds))(state)
    return final, out


def _quadratic_oracle():
    """fᵢ(x) = ½‖x − bᵢ‖² with bᵢ the node data (full gradients)."""

    def update(x, s, ctx, B):
        return 0.5 * jnp.sum((x - B) ** 2, axis=1), x - B, s

    return rj.core.Oracle(lambda x: (), update)


# --------------------------------------------------------------------------- IFCA
def _regression_oracle():
    """fᵢ(w) = (1/2m)‖Xᵢw − yᵢ‖² on node i's whole shard (data = (X [N, m, D], y [N, m]))."""

    def update(w, s, ctx, data):
        X, y = data
        r = jnp.einsum("nmd,nd->nm", X, w) - y
        return 0.5 * jnp.mean(r**2, axis=1), jnp.einsum("nmd,nm->nd", X, r) / X.shape[1], s

    return rj.core.Oracle(lambda x: (), update)


W_STAR = np.array([[2.0, -1.0, 1.0], [-1.0, 2.0, 0.5]])  # the two planted optima
GROUP = np.arange(N) % 2  # nodes 0, 2, 4, 6 in group 0; interleaved so a ring mixes the groups


def _two_clusters(m=40, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, m, D))
    y = np.einsum("nmd,nd->nm", X, W_STAR[GROUP]) + 0.1 * rng.normal(size=(N, m))
    # The independent reference: each group's pooled least-squares fit over its nodes' data.
    ref = np.stack(
        [np.linalg.lstsq(X[GROUP == g].reshape(-1, D), y[GROUP == g].ravel(), rcond=None)[0] for g in (0, 1)]
    )
    return (jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)), ref


@pytest.mark.parametrize(
    "topo_name,averaging,tol",
    [("complete", "gradient", 1e-4), ("complete", "model", 1e-4), ("ring", "gradient", 0.05), ("ring", "model", 0.05)],
)
def test_ifca_recovers_planted_clusters(topo_name, averaging, tol):
    """Two groups of nodes with different linear-regression optima: after training every node
    picks its group's model (the two groups different models) and each model is its group's
    pooled least-squares fit. On the complete graph with uniform weights (the server) both
    exchanges are the paper's options I and II exactly, whose fixed point is that fit (tight
    tolerance); on a ring gossip leaves an O(η) consensus error (0.05 against optima ~2.5 apart)."""
    data, ref = _two_clusters()
    topo = getattr(rj.topology, topo_name)(N)
    algo = ifca.ifca(local_optimizer("sgd", 0.2), clusters=2, averaging=averaging, init_scale=0.5)
    final, (models, m) = _run(algo, topo, data, _regression_oracle(), 400, jnp.zeros((N, D)))
    choice = np.asarray(final.algorithm.choice)
    assert len(set(choice[GROUP == 0])) == 1 and len(set(choice[GROUP == 1])) == 1
    assert choice[0] != choice[1]
    np.testing.assert_allclose(np.asarray(models[-1]), ref[GROUP], atol=tol)
    assert int(m["clusters_used"][-1]) == 2
    # both shared models, not only the chosen copies, sit at the two fits
    x = np.asarray(final.algorithm.x)
    for g in (0, 1):
        np.testing.assert_allclose(x[choice[g]], np.broadcast_to(ref[g], (N, D)), atol=tol)


@pytest.mark.parametrize("averaging", ["gradient", "model"])
def test_ifca_with_one_cluster_is_dsgd(averaging):
    """k = 1: the one model is the run's x₀, every node picks it, and both exchanges reduce to
    W·x̃ (option II's ratio has denominator [W1]ᵢ = 1): D-SGD in ATC order with the same local
    steps, optimizer (momentum: its state must follow the chosen copy) and minibatches."""
    B = jnp.asarray(np.random.default_rng(1).normal(size=(N, D)), jnp.float32)
    x0 = jnp.asarray(np.random.default_rng(0).normal(size=(N, D)) * 3.0, jnp.float32)
    opt = local_optimizer("momentum", 0.05, momentum=0.9)
    topo = rj.topology.ring(N)
    _, (mi, ma) = _run(ifca.ifca(opt, 1, local_steps=2, averaging=averaging), topo, B, _quadratic_oracle(), 30, x0)
    _, (md, mb) = _run(dsgd.dsgd(opt, "atc", 2), topo, B, _quadratic_oracle(), 30, x0)
    np.testing.assert_allclose(np.asarray(mi), np.asarray(md), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ma["train_loss"]), np.asarray(mb["train_loss"]), rtol=1e-5)


@pytest.mark.parametrize("averaging", ["gradient", "model"])
def test_ifca_round_against_a_dense_numpy_reference(averaging):
    """One round, k = 3 on a ring, against NumPy with the dense W: each node picks its
    lowest-loss copy, takes one SGD step on it, then option I gossips all copies (W x̃ⱼ) and
    option II takes the ratio W(sⱼ⊙x̃ⱼ) / W sⱼ where some in-neighbour chose j, else W xⱼ."""
    k, lr = 3, 0.1
    B = jnp.asarray(np.random.default_rng(1).normal(size=(N, D)) * 2.0, jnp.float32)
    topo = rj.topology.ring(N)
    algo = ifca.ifca(local_optimizer("sgd", lr), k, averaging=averaging, init_scale=1.0)
    channels = {name: rj.channels.gossip(topo) for name in algo.exchanges}
    s0 = rj.round.init_state(
        algo, _quadratic_oracle(), channels, jnp.zeros((N, D)), jax.random.PRNGKey(3), topology=topo
    )
    s1, _ = jax.jit(rj.round.make_step(algo, _quadratic_oracle(), channels, topology=topo))(s0, B, {})
    x, b, W = np.asarray(s0.algorithm.x, np.float64), np.asarray(B, np.float64), np.asarray(topo.mixing_matrix())
    loss = 0.5 * ((x - b[None]) ** 2).sum(-1)  # [k, N]
    choice = loss.argmin(0)
    s = (np.arange(k)[:, None] == choice[None]).astype(np.float64)  # [k, N]
    assert len(set(choice)) == k, "the reference should exercise every cluster"
    xt = x - lr * s[..., None] * (x - b[None])
    if averaging == "gradient":
        ref = np.einsum("ij,kjd->kid", W, xt)
    else:
        num, den = np.einsum("ij,kjd->kid", W, s[..., None] * xt), W @ s.T  # den [N, k]
        ref = np.where(den.T[..., None] > 0, num / np.maximum(den.T, 1e-300)[..., None], np.einsum("ij,kjd->kid", W, x))
        assert (den == 0).any(), "some node should hear no chooser of some cluster"
    np.testing.assert_array_equal(np.asarray(s1.algorithm.choice), choice)
    np.testing.assert_allclose(np.asarray(s1.algorithm.x), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(algo.models(s1.algorithm)), ref[choice, np.arange(N)], rtol=1e-5, atol=1e-5)


def test_ifca_options_are_validated_and_registered():
    opt = local_optimizer("sgd", 0.1)
    with pytest.raises(ValueError, match="clusters"):
        ifca.ifca(opt, clusters=0)
    with pytest.raises(ValueError, match="averaging"):
        ifca.ifca(opt, averaging="median")
    with pytest.raises(ValueError, match="graph only"):
        ifca.ifca(opt, averaging="model", over="server")
    # option I: one model-shaped exchange per cluster, so the server and stateful channels apply
    assert sorted(ifca.ifca(opt, clusters=3).exchanges) == ["model_0", "model_1", "model_2"]
    assert rj.algorithms.options("ifca")["clusters"] == 2
    assert rj.algorithms.options("collab")["mu"] == 1.0


# --------------------------------------------------------------------------- collab
def _collab_run(mu, topo, rounds, c=None, lr=None):
    rng = np.random.default_rng(5)
    B = rng.normal(size=(N, D)) * 2.0
    c = rng.uniform(0.5, 2.0, size=N) if c is None else np.asarray(c)
    lr = 1.0 / (c.max() + 4.0 * mu) if lr is None else lr  # η(max c + 4μ) < 2: a contraction
    x0 = rng.normal(size=(N, D))
    algo = collab.collab(local_optimizer("sgd", lr), mu=mu, confidence=tuple(c))
    _, (models, _) = _run(algo, topo, jnp.asarray(B, jnp.float32), _quadratic_oracle(), rounds, jnp.asarray(x0))
    return np.asarray(models), B, c, x0, lr


@pytest.mark.parametrize("topo_name,mu", [("ring", 0.3), ("ring", 3.0), ("erdos_renyi", 1.0)])
def test_collab_fixed_point_is_the_closed_form_linear_solve(topo_name, mu):
    """Quadratic losses ½‖θ − bᵢ‖² with confidences cᵢ: the rounds converge to the solution of
    (C + 2μ(I − W))Θ = CB (dense NumPy on the topology's W), the stationarity condition of
    Σcᵢ½‖θᵢ − bᵢ‖² + (μ/2)ΣᵢⱼWᵢⱼ‖θᵢ − θⱼ‖²; :func:`collab.closed_form` is that same solve."""
    topo = rj.topology.ring(N) if topo_name == "ring" else rj.topology.erdos_renyi(N, 0.5, seed=2)
    models, B, c, _, _ = _collab_run(mu, topo, 3000)
    W = np.asarray(topo.mixing_matrix(), np.float64)
    np.testing.assert_allclose(W, W.T, atol=1e-7)
    ref = np.linalg.solve(np.diag(c) + 2 * mu * (np.eye(N) - W), c[:, None] * B)
    np.testing.assert_allclose(models[-1], ref, atol=1e-4)
    np.testing.assert_allclose(collab.closed_form(W, B, c, mu), ref, atol=1e-12)
    # the c-weighted mean is μ-independent: 1ᵀ(I − W) = 0
    np.testing.assert_allclose(c @ models[-1] / c.sum(), c @ B / c.sum(), atol=1e-4)


def test_collab_with_mu_zero_is_local_training():
    """μ = 0: every node runs gradient descent on cᵢ·½‖θ − bᵢ‖² alone, θₜ = bᵢ + (1 − ηcᵢ)ᵗ(θ₀ − bᵢ)
    at every round (not only at the fixed point), on any graph."""
    models, B, c, x0, lr = _collab_run(0.0, rj.topology.ring(N), 20, lr=0.3)
    t = np.arange(1, 21)[:, None, None]
    expect = B[None] + (1 - lr * c)[None, :, None] ** t * (x0 - B)[None]
    np.testing.assert_allclose(models, expect, rtol=1e-4, atol=1e-5)


def test_collab_with_large_mu_reaches_consensus():
    """μ → ∞: the models agree on argmin Σcᵢ½‖θ − bᵢ‖² = Σcᵢbᵢ/Σcᵢ; the spread of the fixed point is
    O(1/μ) (its ratio to the spread of the bᵢ shrinks tenfold from μ = 10 to μ = 100)."""
    topo = rj.topology.ring(N)
    spread = {}
    for mu in (10.0, 100.0):
        models, B, c, _, _ = _collab_run(mu, topo, 20000)
        mean = c @ B / c.sum()
        np.testing.assert_allclose(c @ models[-1] / c.sum(), mean, atol=1e-3)
        spread[mu] = np.abs(models[-1] - mean).max() / np.abs(B - mean).max()
    assert spread[100.0] < 0.02
    assert spread[100.0] < spread[10.0] / 5


# --------------------------------------------------------------------------- from a config
def _tiny_run(workdir=None, **over):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _configs import small_config

    c = small_config(**{"num_rounds": 6, "eval_every": 3, "checkpoint_every": 3, "model.hidden": (), **over})
    return rj.run(c, workdir)


def test_ifca_runs_from_a_config_and_resumes_identically(tmp_path):
    """IFCA (k = 3, option II) from a config on a ring of 8 digits nodes: a run stopped at round 3
    and resumed equals the uninterrupted one (the k models, their optimizer states and the
    choices are all in the checkpointed state)."""
    over = {"algorithm.name": "ifca", "algorithm.clusters": 3, "algorithm.averaging": "model"}
    full = _tiny_run(tmp_path / "full", **over)
    _tiny_run(tmp_path / "resumed", **{**over, "num_rounds": 3})
    resumed = _tiny_run(tmp_path / "resumed", **over)
    assert [r["test_loss"] for r in resumed.rows] == [r["test_loss"] for r in full.rows]
    assert np.isfinite(full.final["test_loss"])
