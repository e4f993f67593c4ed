"""The language-model workload (issue 15, part 1): byte-level text split by source, perplexity,
mixed precision, rematerialisation, gradient accumulation, the memory report, the 2-D mesh and
checkpoint / resume of an LM run.

One tiny transformer (d_model 16, one layer, 16-byte windows, 8 nodes) run once per module
(``lm_run``) serves the resume, sharding, bf16 and memory-file tests."""

import importlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.local import oracles

partition = importlib.import_module("redeem_jax.data.partition")

LM = {
    "num_nodes": 8,
    "data.name": "text",
    "data.seq_len": 16,
    "data.batch_size": 4,
    "data.partition": "by_source",
    "model.name": "transformer",
    "model.d_model": 16,
    "model.num_heads": 2,
    "model.num_layers": 1,
    "model.mlp_ratio": 2,
    "optimizer.name": "sgd",
    "optimizer.learning_rate": 0.5,
    "num_rounds": 4,
    "eval_every": 2,
    "checkpoint_every": 2,
    "eval.max_test_examples": 64,
    "progress": False,
    "plots": False,
}


def lm_config(**overrides):
    c = rj.config.base_config()
    for k, v in {**LM, **overrides}.items():
        rj.config.set_field(c, k, v)
    return c


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("lm") / "full"
    return rj.run(lm_config(), wd)


# --------------------------------------------------------------------------- data
def test_by_source_gives_every_source_to_one_node_and_balances_the_load():
    ds = rj.data.load("text", seq_len=32)
    src = ds.info["train_source"]
    node_of = partition.node_assignment(ds.y_train, 8, "by_source", groups=src)
    for s in np.unique(src):  # a document is never split
        assert np.unique(node_of[src == s]).size == 1
    load = np.bincount(node_of, minlength=8)
    sizes = np.bincount(src)
    assert load.sum() == len(src) and (load > 0).all()
    # Graham's LPT bound: the fullest node exceeds the mean by at most the largest source.
    assert load.max() <= len(src) / 8 + sizes.max()
    with pytest.raises(ValueError, match="39 sources.*40 nodes"):
        partition.node_assignment(ds.y_train, 40, "by_source", groups=src)


def test_text_file_splits_a_file_at_blank_lines_and_a_folder_by_file(tmp_path):
    paras = [("alpha " * 20).strip(), ("beta gamma " * 15).strip(), "tiny", ("delta " * 30).strip()]
    f = tmp_path / "corpus.txt"
    f.write_text("\n\n".join(paras[:2]) + "\n \n\n" + "\n\n".join(paras[2:]) + "\n")
    names, docs = rj.data.datasets.text_documents(f)
    assert [d.decode() for d in docs] == paras
    ds = rj.data.load("text_file", path=str(f), seq_len=8)
    src = ds.info["train_source"]
    # Document i's head (90%) gives floor((len - 8 - 1) / 8) + 1 train windows; "tiny" none.
    heads = [round(len(p) * 0.9) for p in paras]
    assert np.bincount(src, minlength=4).tolist() == [max(0, (h - 9) // 8 + 1) for h in heads]
    np.testing.assert_array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])  # y is x shifted by one byte
    first = np.frombuffer(paras[0].encode(), np.uint8)[:8]
    np.testing.assert_array_equal(ds.x_train[0], first)
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, p in enumerate(paras):
        (folder / f"{i}.txt").write_text(p)
    (folder / ".hidden").write_text("never read")
    names, docs = rj.data.datasets.text_documents(folder)
    assert names == ["0.txt", "1.txt", "2.txt", "3.txt"] and [d.decode() for d in docs] == paras
    # From a config: whole files to nodes, and the path is required.
    exp = rj.build(lm_config(**{"num_nodes": 3, "data.name": "text_file", "data.path": str(folder), "data.seq_len": 8}))
    assert exp.dataset.name == "text_file" and exp.node_data.x.shape[0] == 3
    with pytest.raises(rj.config.ConfigError, match="config.data.path: data.name 'text_file'"):
        rj.build(lm_config(**{"data.name": "text_file"}))
    with pytest.raises(rj.config.ConfigError, match="config.data.partition: 'by_source'"):
        rj.build(lm_config(**{"data.name": "digits", "model.name": "mlp", "model.mlp_ratio": 4}))


# --------------------------------------------------------------------------- perplexity
def _numpy_cross_entropy(logits, targets):
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, np.asarray(targets)[..., None], -1).mean()


def test_perplexity_is_exp_of_the_mean_token_cross_entropy(lm_run):
    exp = lm_run.experiment
    model = exp.model
    x = np.asarray(lm_run.params)
    xt, yt = exp.dataset.x_test[:64], exp.dataset.y_test[:64]
    # The logits of the 8 node models and of their average, in one compiled call.
    rows = np.concatenate([x, x.mean(0, keepdims=True)])
    logits = np.asarray(jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(rows, xt))
    ref = np.exp(_numpy_cross_entropy(logits[3], yt))
    np.testing.assert_allclose(
        float(jax.jit(rj.metrics.perplexity, static_argnums=0)(model, x[3], xt, yt)), ref, rtol=1e-5
    )
    # What the runner logged at the end: the honest-average model and every node's own.
    ref_bar = np.exp(_numpy_cross_entropy(logits[8], yt))
    np.testing.assert_allclose(lm_run.metrics["test_perplexity"][-1], ref_bar, rtol=1e-4)
    per_node = [np.exp(_numpy_cross_entropy(logits[i], yt)) for i in range(8)]
    np.testing.assert_allclose(lm_run.metrics["node_test_perplexity_mean"][-1], np.mean(per_node), rtol=1e-4)
    np.testing.assert_allclose(lm_run.metrics["node_test_perplexity_max"][-1], np.max(per_node), rtol=1e-4)
    assert lm_run.metrics["test_perplexity"][-1] < lm_run.metrics["test_perplexity"][0]  # it learns


# --------------------------------------------------------------------------- model knobs
class _Float32BlockOfBefore(nn.Module):
    """The transformer block as it was before the dtype / remat / mlp_ratio knobs (frozen copy)."""

    d_model: int
    num_heads: int

    @nn.compact
    def __call__(self, h, mask):
        a = nn.LayerNorm()(h)
        a = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=self.d_model)(a, a, mask=mask)
        h = h + a
        m = nn.LayerNorm()(h)
        m = nn.Dense(self.d_model)(nn.gelu(nn.Dense(4 * self.d_model)(m)))
        return h + m


class _Float32LMOfBefore(nn.Module):
    vocab: int
    d_model: int
    num_heads: int
    num_layers: int
    max_len: int

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(self.vocab, self.d_model)(tokens)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.d_model))
        h = h + pos[: tokens.shape[-1]]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.num_layers):  # the name flax gave the class `_Block` of before
            h = _Float32BlockOfBefore(self.d_model, self.num_heads, name=f"_Block_{i}")(h, mask)
        return nn.Dense(self.vocab)(nn.LayerNorm()(h))


def test_float32_transformer_is_bit_for_bit_the_one_of_before_and_remat_changes_nothing():
    """The float32 model's programs — initialisation, and loss with its gradient — are the same
    jaxprs as those of the frozen copy of before, hence bit-identical on any backend (checked
    without compiling them); remat runs another program with the same numbers."""
    tokens = np.random.default_rng(0).integers(0, 256, (3, 16)).astype(np.int32)
    old = _Float32LMOfBefore(256, 16, 2, 1, 16)
    example = np.zeros((1, 16), np.int32)
    new = rj.models.get("transformer", (16,), 256, "language", d_model=16, num_heads=2, num_layers=1)
    flat, unravel = 0.05 * jax.random.normal(jax.random.PRNGKey(2), (new.num_params,)), new.unravel
    remat = rj.models.get("transformer", (16,), 256, "language", d_model=16, num_heads=2, num_layers=1, remat=True)

    def init_old(key):
        return jax.flatten_util.ravel_pytree(old.init(key, example))[0]

    def loss_and_grad(apply):
        return lambda p: jax.value_and_grad(lambda q: jnp.sum(jnp.sin(apply(q))))(p)

    key = jax.random.PRNGKey(1)
    assert str(jax.make_jaxpr(new.init)(key)) == str(jax.make_jaxpr(init_old)(key))
    old_fn = loss_and_grad(lambda q: old.apply(unravel(q), tokens))
    new_fn = loss_and_grad(lambda q: new.apply(q, tokens))
    assert str(jax.make_jaxpr(new_fn)(flat)) == str(jax.make_jaxpr(old_fn)(flat))
    (v_new, g_new), (v_remat, g_remat) = jax.jit(
        lambda p: (new_fn(p), loss_and_grad(lambda q: remat.apply(q, tokens))(p))
    )(flat)
    np.testing.assert_array_equal(v_remat, v_new)
    np.testing.assert_allclose(g_remat, g_new, rtol=1e-6, atol=1e-7)


def test_gradient_accumulation_equals_the_full_batch_gradient_with_masked_rows():
    model = rj.models.get("transformer", (16,), 256, "language", d_model=16, num_heads=2, num_layers=1)
    flat = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    xb = rng.integers(0, 256, (8, 16)).astype(np.int32)
    yb = rng.integers(0, 256, (8, 16)).astype(np.int32)
    mask = np.array([1, 1, 1, 0, 1, 0, 0, 1], bool)  # unequal real rows per microbatch: 3, 1, 1, 1 for k = 4
    key = jnp.zeros((2,), jnp.uint32)
    loss1, g1 = jax.jit(oracles.gradient_fn(model))(flat, xb, yb, mask, key)
    for k in (4,):
        loss_k, g_k = jax.jit(oracles.gradient_fn(model, k))(flat, xb, yb, mask, key)
        np.testing.assert_allclose(loss_k, loss1, rtol=1e-6)
        np.testing.assert_allclose(g_k, g1, rtol=1e-5, atol=1e-5 * float(jnp.abs(g1).max()))
    with pytest.raises(rj.config.ConfigError, match="config.optimizer.grad_accum: 3 microbatches must divide"):
        rj.build(lm_config(**{"optimizer.grad_accum": 3}))


def _rounds(exp, num_rounds, mesh=None):
    """``num_rounds`` of the experiment's one jitted step (no evaluation program to compile);
    the per-round train losses and the final rows."""
    from redeem_jax.network import sharding

    state, data = exp.init_state(), exp.node_data
    if mesh is not None:  # what rj.run does with perf.mesh
        state, data = sharding.shard_nodes(state, mesh, 8), sharding.shard_nodes(data, mesh, 8)
    step, hp, losses = jax.jit(exp.step), exp.hp_values(), []
    for _ in range(num_rounds):
        state, m = step(state, data, hp)
        losses.append(float(m["train_loss"]))
    return np.array(losses), exp.models(state)


def test_bfloat16_training_is_within_bfloat16_rounding_of_float32(lm_run):
    """bf16 keeps 8 significant bits: unit roundoff u = 2^-9. The logits carry a relative error of a
    few u, and the cross-entropy moves by at most 2·max|Δlogit| (it is 1-Lipschitz in each of
    log-sum-exp and the picked logit), so over a few rounds the mean losses agree to ~10u of the
    loss; the float32 master rows keep the updates themselves exact to float32."""
    exp = rj.build(lm_config(**{"model.dtype": "bfloat16"}))
    losses, rows = _rounds(exp, 4)
    ref = lm_run.metrics["train_loss"][1:]  # the run logs the mean over each chunk of 2 rounds
    got = losses.reshape(2, 2).mean(1)
    np.testing.assert_allclose(got, ref, rtol=10 * 2.0**-9)
    assert np.all(got != ref)  # bf16 really computed something else
    assert rows.dtype == jnp.float32  # the master copy
    np.testing.assert_allclose(rows, lm_run.params, atol=0.05)


# --------------------------------------------------------------------------- memory
def test_memory_report_counts_parameters_and_the_algorithms_extra_state(lm_run):
    from _configs import small_config

    n = 8
    dsgd = rj.memory_report(small_config(**{"optimizer.name": "sgd"}))
    d = dsgd["num_params"]
    assert dsgd["bytes"]["parameters"] == n * d * 4 and dsgd["per_node"]["parameters"] == d * 4
    assert dsgd["bytes"]["algorithm_state"] == 0 and dsgd["bytes"]["optimizer_state"] < 8 * n  # SGD: a step count
    assert dsgd["bytes"]["messages"] == n * 2 * d * 4  # a ring: two received rows per node
    gt = rj.memory_report(
        small_config(**{"optimizer.name": "sgd", "algorithm.name": "diging", "algorithm.order": "cta"})
    )
    assert gt["bytes"]["algorithm_state"] == 2 * n * d * 4  # the tracker y and the last gradient
    mom = rj.memory_report(small_config(**{"optimizer.name": "momentum"}))
    assert mom["bytes"]["optimizer_state"] - dsgd["bytes"]["optimizer_state"] == n * d * 4  # one velocity row
    # Every run writes it: the LM run's file is the report of its config.
    written = json.loads((lm_run.workdir / "memory.json").read_text())
    assert written == json.loads(json.dumps(rj.memory_report(lm_config())))
    assert written["bytes"]["parameters"] == n * lm_run.params.shape[1] * 4


# --------------------------------------------------------------------------- scale and resume
def test_lm_run_checkpoints_and_resumes_identically(lm_run, tmp_path):
    rj.run(lm_config(num_rounds=2), tmp_path / "resumed")
    resumed = rj.run(lm_config(), tmp_path / "resumed")
    assert [r["test_perplexity"] for r in resumed.rows] == [r["test_perplexity"] for r in lm_run.rows]
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(lm_run.params))


def test_lm_training_on_a_nodes_by_model_mesh_equals_the_unsharded_run(lm_run):
    from redeem_jax.network import sharding

    exp = rj.build(lm_config(**{"perf.mesh": (2, 4)}))
    losses, rows = _rounds(exp, 4, sharding.make_mesh((2, 4), num_nodes=8))
    assert tuple(rows.sharding.spec) == ("nodes", "model")  # the flat rows split over the model axis
    assert len(rows.sharding.device_set) == 8
    np.testing.assert_allclose(rows, lm_run.params, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(losses.reshape(2, 2).mean(1), lm_run.metrics["train_loss"][1:], rtol=2e-5)


@pytest.mark.slow
def test_lm_run_on_a_nodes_by_model_mesh_equals_the_unsharded_run(lm_run):
    got = rj.run(lm_config(**{"perf.mesh": (2, 4), "checkpoint_every": 0}))
    assert tuple(got.params.sharding.spec) == ("nodes", "model")
    np.testing.assert_allclose(got.params, lm_run.params, rtol=2e-5, atol=2e-6)
    for k in ("test_loss", "test_perplexity", "train_loss", "node_test_perplexity_mean"):
        np.testing.assert_allclose(got.metrics[k], lm_run.metrics[k], rtol=2e-5, err_msg=k)
