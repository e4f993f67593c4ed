"""The MLP's GEMM layout (issue 11): a padded flat row whose first ``(in+1)·h`` coordinates the
first layer reads as a matrix. Checked against flax's MLP on the unpadded ``ravel_pytree`` row
(the previous layout, ``models._wrap``): same loss, gradient, init and D-SGD / DP-SGD runs on
the live coordinates to float rounding, exact zeros on the dead ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import redeem_jax as rj
from redeem_jax import models

D_IN, CLASSES = 784, 10


def _pair(hidden, task="classification"):
    """The new model and the previous layout (flax module on the unpadded row) of one MLP."""
    new = models.get("mlp", (D_IN,), CLASSES, task, hidden=hidden)
    feats = 1 if task == "regression" else CLASSES
    old = models._wrap("mlp", task, models.MLP(tuple(hidden), feats), np.zeros((1, D_IN), np.float32), 0.0)
    return new, old


# (128,): the benchmark's 784-128-10; (64, 32): a hidden tail layer; 11 tail layers: Dense_10
# sorts before Dense_2 in ravel order.
@pytest.mark.parametrize("hidden", [(128,), (64, 32), (48,) + (4,) * 10])
def test_loss_gradient_and_init_equal_flax_on_live_coordinates(hidden):
    new, old = _pair(hidden)
    d = old.num_params
    assert new.num_live == d and new.pad == new.num_params - d and new.num_params % hidden[0] == 0
    assert 0 < new.pad < hidden[0] or new.num_params == d
    key = jax.random.PRNGKey(0)
    row = new.init(key)
    np.testing.assert_array_equal(row[:d], old.init(key))  # live coordinates bit-identical
    assert not np.any(np.asarray(row[d:]))
    # Parameters off init (and garbage on the dead coordinates: they must not be read).
    theta = row.at[:d].add(0.1 * jax.random.normal(jax.random.PRNGKey(1), (d,)))
    theta_dead = theta.at[d:].set(7.0)
    x = jax.random.normal(jax.random.PRNGKey(2), (16, D_IN))
    y = jax.random.randint(jax.random.PRNGKey(3), (16,), 0, CLASSES)
    mask = jnp.arange(16) < 13

    def lg(model, p):
        return jax.jit(jax.value_and_grad(lambda q: models.loss_and_metrics(model, q, x, y, mask)[0]))(p)

    (l_new, g_new), (l_old, g_old), (l_dead, g_dead) = lg(new, theta), lg(old, theta[:d]), lg(new, theta_dead)
    np.testing.assert_allclose(l_new, l_old, rtol=1e-5)
    np.testing.assert_allclose(g_new[:d], g_old, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(g_old))))
    assert not np.any(np.asarray(g_new[d:]))  # exactly zero gradient on the dead coordinates
    np.testing.assert_array_equal(l_dead, l_new)
    np.testing.assert_array_equal(g_dead, g_new)
    # unravel: flax's pytree, from the padded row or from a row of the logical length.
    tree = new.unravel(theta)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), tree, old.unravel(theta[:d])))
    np.testing.assert_array_equal(ravel_pytree(new.unravel(theta[:d]))[0], theta[:d])


def test_l2_ignores_dead_coordinates_and_head_mask_pads():
    new, _ = _pair((128,))
    new = new._replace(l2=0.5)
    x, y, m = jnp.zeros((2, D_IN)), jnp.zeros((2,), jnp.int32), jnp.ones((2,), bool)
    row = new.init(jax.random.PRNGKey(0))
    noisy = row.at[new.num_live :].set(3.0)  # e.g. DP noise landed on the padding
    lg = jax.jit(jax.value_and_grad(lambda p: models.loss_and_metrics(new, p, x, y, m)[0]))
    (l0, _), (l1, g1) = lg(row), lg(noisy)
    np.testing.assert_array_equal(l0, l1)
    assert not np.any(np.asarray(g1[new.num_live :]))
    mask = models.head_mask(new)
    assert mask.shape == (new.num_params,) and mask.sum() == 128 * 10 + 10 and mask[-1 - new.pad]
    assert not mask[new.num_live :].any()


def test_small_and_output_only_models_keep_the_flax_layout():
    for m in (models.get("mlp", (4,), 2, hidden=(3,)), models.get("mlp", (784,), 10, hidden=(128,) * 11)):
        assert m.pad == 0 and m.num_params == m.num_live


def _run(model, oracle_of, n=4, rounds=3, batch=8):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, 16, D_IN)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, CLASSES, size=(n, 16)).astype(np.int32))
    nd = rj.data.NodeData(x, y, jnp.full((n,), 16, jnp.int32))
    topo = rj.topology.ring(n)
    opt = rj.optim.local_optimizer("sgd", rj.core.hyper("optimizer.learning_rate", 0.05))
    algo = rj.algorithms.dsgd.dsgd(opt, "atc", 1)
    oracle = oracle_of(model, batch)
    channels = {"model": rj.channels.gossip(topo, "sparse")}
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    # Different starting rows per node, the same live coordinates for both layouts.
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    x0 = jax.vmap(model.init)(keys)
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(1), topology=topo)
    hp = {"optimizer.learning_rate": jnp.float32(0.05)}
    run = jax.jit(lambda s: jax.lax.scan(lambda s, _: step(s, nd, hp), s, None, length=rounds))
    state, metrics = run(state)
    return np.asarray(state.algorithm.x), metrics


@pytest.fixture(scope="module")
def runs():
    new, old = _pair((64,))
    dp = lambda m, b: rj.oracles.dp_sgd(m, b, clip_norm=1.0, noise_multiplier=0.5)  # noqa: E731
    return {
        (name, layout): _run(model, oracle)
        for name, oracle in (("dsgd", rj.oracles.minibatch), ("dp", dp))
        for layout, model in (("new", new), ("old", old))
    }, new.num_live


@pytest.mark.parametrize("name", ["dsgd", "dp"])
def test_runs_equal_the_previous_layout_on_live_coordinates(runs, name):
    """Same keys, same minibatches; the per-node DP noise is drawn with shape [d_pad] from the
    same key, whose first d values are those of shape [d] (threefry is partitionable), so the
    live coordinates follow the same trajectory; the dead ones get no noise and stay zero."""
    out, d = runs
    (x_new, m_new), (x_old, m_old) = out[(name, "new")], out[(name, "old")]
    scale = float(np.max(np.abs(x_old)))
    np.testing.assert_allclose(x_new[:, :d], x_old, rtol=1e-5, atol=1e-5 * scale)
    for k in m_old:
        if k != "bytes_sent":
            np.testing.assert_allclose(np.asarray(m_new[k]), np.asarray(m_old[k]), rtol=1e-5, err_msg=k)
    # The padding travels: bytes count the padded row (0.2% more here).
    np.testing.assert_allclose(np.asarray(m_new["bytes_sent"]) * d, np.asarray(m_old["bytes_sent"]) * x_new.shape[1])
    assert not np.any(x_new[:, d:])


def test_rows_of_the_flax_length_still_work(tmp_path):
    """A state or checkpoint from before the padding: ``apply`` takes the d-row as it is (same
    outputs, its gradient is the flax one), and ``rj.lora.load_base`` pads a saved flat or named
    flax row to the model's row."""
    new, old = _pair((64,))
    d = new.num_live
    row = old.init(jax.random.PRNGKey(0)) + 0.05 * jax.random.normal(jax.random.PRNGKey(1), (d,))
    x = jax.random.normal(jax.random.PRNGKey(2), (4, D_IN))
    padded = jnp.pad(row, (0, new.pad))
    np.testing.assert_array_equal(jax.jit(new.apply)(row, x), jax.jit(new.apply)(padded, x))
    g = jax.jit(jax.grad(lambda p: jnp.sum(new.apply(p, x) ** 2)))
    np.testing.assert_array_equal(g(row), g(padded)[:d])
    np.savez(tmp_path / "flat.npz", theta=np.asarray(row))
    leaves = jax.tree_util.tree_flatten_with_path(old.unravel(row))[0]
    named = {"/".join(str(p.key) for p in path): np.asarray(v) for path, v in leaves}
    np.savez(tmp_path / "named.npz", **named)
    for f in ("flat.npz", "named.npz"):
        base = rj.lora.load_base(new, str(tmp_path / f))
        np.testing.assert_array_equal(base, padded)


def test_lora_on_the_padded_mlp_adapts_its_dense_layers():
    """LoRA intercepts flax's Dense calls: on the GEMM layout it goes through ``flax_apply``, so
    it finds both layers and, with b = 0, the adapted model is the base model."""
    new, _ = _pair((64,))
    x = jax.random.normal(jax.random.PRNGKey(2), (4, D_IN))
    lm, spec = rj.lora.lora_model(new, x[:1], rank=2, targets=("mlp", "head"))
    assert sorted(t.path for t in spec.targets) == ["Dense_0", "Dense_1"]
    out = jax.jit(lm.apply)(lm.init(jax.random.PRNGKey(5)), x)
    np.testing.assert_allclose(out, new.apply(spec.base, x), rtol=1e-5, atol=1e-5)


def _big_copies(model, n=4):
    """The compiled vmapped SGD step's copy / slice / concatenate / pad ops with at least a first
    kernel's worth of values per node (what the layout exists to remove)."""
    import re

    x = jnp.zeros((n, 8, D_IN))
    y = jnp.zeros((n, 8), jnp.int32)
    m = jnp.ones((8,), bool)
    loss = lambda p, xb, yb: models.loss_and_metrics(model, p, xb, yb, m)[0]  # noqa: E731
    step = jax.jit(lambda p: p - 0.1 * jax.vmap(jax.grad(loss))(p, x, y))
    txt = step.lower(jnp.zeros((n, model.num_params))).compile().as_text()
    ops = re.findall(r"= f32\[([\d,]+)\]\{[^}]*\} (copy|concatenate|slice|pad)\(", txt)
    return [(shape, op) for shape, op in ops if np.prod([int(v) for v in shape.split(",")]) >= n * D_IN * 64]


def test_compiled_step_copies_no_kernel():
    new, old = _pair((64,))
    assert _big_copies(old)  # the flax layout slices the kernel out of the rows (the check sees it)
    assert _big_copies(new) == []


@pytest.mark.parametrize(
    "over",
    [
        {"byzantine.attack": "gaussian", "algorithm.name": "fedavg"},
        {"byzantine.attack": "gaussian", "aggregation.rule": "clipped_gossip"},  # lifted, per edge
        {"byzantine.attack": "gaussian", "aggregation.rule": "clipped_gossip", "byzantine.view": "global"},
        {"byzantine.num": 0, "privacy.mode": "dp_sgd", "privacy.noise_multiplier": 1.0},
    ],
    ids=["gaussian-server", "gaussian-gossip", "gaussian-global", "dp"],
)
def test_attacks_and_dp_noise_leave_the_padding_zero(over):
    """Noise and attacks write only the live coordinates: the padding stays exactly zero in every
    row, so robust rules' distances and norms see the law of the unpadded layout (without
    ``channels.live_only`` the gaussian rows put N(0, σ²) on the 64-wide padding, and the fedavg
    mean carried it into every model)."""
    from tests._configs import small_config

    c = small_config(**{"model.hidden": (512,), "byzantine.num": 1, "num_nodes": 6, **over})
    exp = rj.build(c)
    m = exp.model
    assert m.pad > 0, "digits 64-512-10 must take the GEMM layout for this test to mean anything"
    state, hp = exp.init_state(), exp.hp_values()
    step = jax.jit(exp.step)
    for _ in range(2):
        state, _ = step(state, exp.node_data, hp)
    x = np.asarray(state.algorithm.x)
    assert np.all(np.isfinite(x[:, : m.num_live]).any(axis=1)) and np.any(x[:, : m.num_live])
    assert not np.any(x[:, m.num_live :])


def test_gaussian_attack_law_on_the_live_coordinates():
    """The gaussian attack's [f, d_pad] draw (live part) against the [f, d] draw of the unpadded
    row: row 0 is the same numbers (threefry counters), later rows are other numbers of the same
    i.i.d. N(0, σ²) stream; checked by a two-sample Kolmogorov–Smirnov test on the later rows,
    by a one-sample test against the normal law, and by independence across rows."""
    from scipy import stats

    f, d, pad, sigma = 4, 5000, 64, 2.0
    honest = jnp.zeros((7, d + pad))
    t = rj.channels.live_only(rj.channels.vector_tamper(rj.attacks.get("gaussian"), sigma=sigma), d)
    ctx = rj.core.Ctx(jnp.int32(0), jax.random.PRNGKey(3), None, jnp.ones(7, bool), {})
    new, _ = t.update(honest, f, (), ctx)
    old = rj.attacks.get("gaussian")(jnp.zeros((7, d)), f, ctx.key, sigma=sigma)
    new, old = np.asarray(new), np.asarray(old)
    assert not np.any(new[:, d:])
    np.testing.assert_array_equal(new[0, :d], old[0])
    assert stats.ks_2samp(new[1:, :d].ravel(), old[1:].ravel()).pvalue > 1e-3
    assert stats.kstest(new[:, :d].ravel() / sigma, "norm").pvalue > 1e-3
    r = np.corrcoef(new[:, :d])[np.triu_indices(f, 1)]
    assert np.all(np.abs(r) < 5 / np.sqrt(d))  # 5 standard errors of a null correlation
