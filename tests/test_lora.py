"""LoRA adapters (rj.lora): the forward against the merged model, exact (FFA-LoRA) against naive
factor averaging against NumPy, the frozen base stored once, adapter-only exchange, rank 0 = off,
a base from a checkpoint file, and checkpoint/resume of a LoRA run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax import channels as rj_channels
from redeem_jax import lora, models
from redeem_jax.experiment.build import build
from redeem_jax.experiment.config import ConfigError

from _configs import small_config

SEQ, N, R = 8, 4, 2
TINY = {"d_model": 16, "num_heads": 2, "num_layers": 1}


def lm_config(**kw):
    """A byte-level LM on 4 nodes with a one-block transformer (d_model 16) and rank-2 adapters."""
    base = {
        "data.name": "text",
        "model.name": "transformer",
        "data.seq_len": SEQ,
        "model.d_model": 16,
        "model.num_heads": 2,
        "model.num_layers": 1,
        "num_nodes": N,
        "data.batch_size": 4,
        "algorithm.name": "fedavg",
        "model.lora.rank": R,
        "model.lora.aggregation": "ffa",
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.5,
        "num_rounds": 2,
        "eval_every": 1,
        "eval.max_test_examples": 16,
    }
    base.update(kw)
    return small_config(**base)


@pytest.fixture(scope="module")
def transformer():
    return models.get("transformer", (SEQ,), 256, "language", **TINY)


@pytest.fixture(scope="module")
def base(transformer):
    return jax.jit(transformer.init)(jax.random.PRNGKey(11))


@pytest.fixture(scope="module")
def lm_exp():
    return build(lm_config())


def _kernels(model, flat, spec):
    """{target path: kernel as a [k, d] float64 matrix} of a full parameter row."""
    tree = model.unravel(flat)["params"]
    out = {}
    for t in spec.targets:
        node = tree
        for p in t.path.split("/"):
            node = node[p]
        out[t.path] = np.asarray(node["kernel"], np.float64).reshape(t.k, t.d)
    return out


def _random_rows(model, key, n, spread=0.3):
    """n adapter rows with non-zero b (and, for naive/product, different a per node)."""
    rows = jax.vmap(model.init)(jax.random.split(key, n))
    return rows + spread * jax.random.normal(jax.random.fold_in(key, 1), rows.shape)


def test_forward_is_the_merged_model_and_starts_at_the_base(transformer, base):
    ex = np.zeros((1, SEQ), np.int32)
    x = jax.random.randint(jax.random.PRNGKey(3), (3, SEQ), 0, 256)
    lm, spec = lora.lora_model(transformer, ex, rank=R, alpha=4.0, targets=("attention", "mlp"), base=base)
    kinds = sorted(t.kind for t in spec.targets)
    assert kinds == ["attention"] * 4 + ["mlp"] * 2  # q, k, v, out and the two MLP Dense; not the head
    # The adapter row: a [k, r] and b [r, d] per target, nothing of the base.
    assert spec.num_params == sum(R * (t.k + t.d) for t in spec.targets) < transformer.num_params // 10
    row0 = lm.init(jax.random.PRNGKey(1))
    lora_fwd, full_fwd = jax.jit(lm.apply), jax.jit(transformer.apply)
    np.testing.assert_array_equal(lora_fwd(row0, x), full_fwd(spec.base, x))  # b = 0: the base
    row = _random_rows(lm, jax.random.PRNGKey(2), 1)[0]
    merged_row = jax.jit(lambda r: lora.merge(spec, r))(row)
    # x·K₀ + (α/r)(x·a)·b through the interceptor = the model with K₀ + (α/r)·a·b written in.
    np.testing.assert_allclose(lora_fwd(row, x), full_fwd(merged_row, x), atol=2e-5)
    merged = _kernels(transformer, merged_row, spec)
    base = _kernels(transformer, spec.base, spec)
    for p, (a, b) in spec.tree(row).items():
        np.testing.assert_allclose(merged[p], base[p] + 2.0 * np.asarray(a, np.float64) @ np.asarray(b), atol=1e-5)


def _local_updates(lm, rows, x, y, steps=3, lr=0.5):
    """``steps`` full-batch SGD steps of every node from its row on its own data."""
    ones = jnp.ones((x.shape[1],), bool)

    def loss(r, xi, yi):
        return models.loss_and_metrics(lm, r, xi, yi, ones)[0]

    grad = jax.jit(jax.vmap(jax.grad(loss)))
    for _ in range(steps):
        rows = rows - lr * grad(rows, x, y)
    return rows


def test_ffa_aggregate_equals_the_mean_of_full_updates_and_naive_does_not(transformer, base):
    ex = np.zeros((1, SEQ), np.int32)
    key = jax.random.PRNGKey(7)
    x = jax.random.randint(key, (N, 4, SEQ), 0, 256)  # every node its own text
    y = jnp.roll(x, -1, axis=-1)
    server = rj_channels.server()
    ctx = rj.core.Ctx(jnp.zeros((), jnp.int32), key, None, jnp.ones((N,), bool), {})
    w0, scale, gaps = np.asarray(base, np.float64), 2.0, {}
    for how in ("ffa", "naive", "product"):
        if how != "product":  # product trains the same [a, b] rows as naive; only the channel differs
            lm, spec = lora.lora_model(transformer, ex, rank=R, alpha=4.0, aggregation=how, key=key, base=base)
            start = _random_rows(lm, jax.random.fold_in(key, 5), N)  # nodes' adapters differ (naive: a too)
            rows = _local_updates(lm, start, x, y)
            merge = jax.jit(jax.vmap(lambda r, spec=spec: lora.merge(spec, r)))
            full = np.asarray(merge(rows), np.float64)
            mean_update = (full - w0).mean(0)  # the mean of the full updates ΔW_i
            f = {
                p: (np.asarray(a, np.float64), np.asarray(b, np.float64))
                for p, (a, b) in lora.factors(spec, rows).items()
            }
        channel = lora.product_channel(server, spec) if how == "product" else server
        agg, state = channel.update(rows, channel.init(rows), ctx)
        np.testing.assert_allclose(np.asarray(agg), np.asarray(agg[:1]).repeat(N, 0), atol=1e-6)  # one model
        got = np.asarray(merge(agg[:1])[0], np.float64) - w0
        gaps[how] = np.linalg.norm(got - mean_update)
        if how == "ffa":
            np.testing.assert_allclose(got, mean_update, atol=1e-6)  # exact: a·mean(b) = mean(a·b)
        elif how == "naive":
            # NumPy: ‖mean(a_i b_i) − mean(a_i)·mean(b_i)‖ over the targets, times α/r.
            want = scale * np.sqrt(
                sum(np.sum((np.einsum("nkr,nrd->kd", a, b) / N - a.mean(0) @ b.mean(0)) ** 2) for a, b in f.values())
            )
            assert want > 1e-3
            np.testing.assert_allclose(gaps[how], want, rtol=1e-4)
        else:
            # Eckart–Young: the rank-r SVD truncation of mean(a b) misses its tail singular values.
            tail = [np.linalg.svd(np.einsum("nkr,nrd->kd", a, b) / N, compute_uv=False)[R:] for a, b in f.values()]
            want = scale * np.sqrt(sum(np.sum(s**2) for s in tail))
            np.testing.assert_allclose(gaps[how], want, rtol=1e-3, atol=1e-6)
            reported = float(state["lora_truncation_error"].value)
            np.testing.assert_allclose(reported, N * want, rtol=1e-3)
    assert gaps["ffa"] < 1e-6 < gaps["product"] <= gaps["naive"]


def _nbytes(tree):
    return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def test_frozen_base_is_stored_once_and_only_adapters_are_sent(lm_exp):
    exp = lm_exp
    spec_base = exp.model.num_params  # the adapter row's width
    state = jax.eval_shape(exp.init_state)
    d_full = models.get("transformer", (SEQ,), 256, "language", **TINY).num_params
    assert spec_base == R * sum(d for d in (16, 16, 16, 16, 64, 16))  # FFA: b [r, d] only
    # Every per-node leaf is an adapter-sized row: the state is N·(copies)·d_adapter, no base.
    assert max(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state)) == N * spec_base
    assert _nbytes(state) < 4 * N * spec_base * 4 + 1024
    # The round's captured constants: the base exactly once (and FFA's frozen a), no N copies.
    consts = [c for c in jax.make_jaxpr(exp.step)(exp.init_state(), exp.node_data, exp.hp_values()).consts]
    sizes = [int(np.size(c)) for c in consts]
    assert sizes.count(d_full) == 1
    frozen_a = R * (16 * 5 + 64)
    assert sum(s for s in sizes if s > N) == d_full + frozen_a
    _, metrics = jax.jit(exp.step)(exp.init_state(), exp.node_data, exp.hp_values())
    # FedAvg over a server: N rows up, N down, each of d_adapter float32s.
    assert float(metrics["bytes_sent"]) == 2 * N * 4 * spec_base


def test_attack_and_robust_rule_touch_only_adapters_with_product_aggregation():
    cfg = lm_config(
        **{
            "algorithm.name": "dsgd",
            "topology.name": "complete",
            "model.lora.aggregation": "product",
            "byzantine.num": 1,
            "byzantine.attack": "sign_flip",
            "aggregation.rule": "trimmed_mean",
        }
    )
    exp = build(cfg)
    step = jax.jit(exp.step)
    s, hp = exp.init_state(), exp.hp_values()
    for _ in range(2):
        s, metrics = step(s, exp.node_data, hp)
    assert np.isfinite(float(metrics["lora_truncation_error"])) and float(metrics["lora_truncation_error"]) >= 0
    assert float(metrics["bytes_sent"]) == N * (N - 1) * 4 * exp.model.num_params  # factors, not products
    spec_model = models.get("transformer", (SEQ,), 256, "language", **TINY)
    names = list(lora.param_names(spec_model))
    adapted = {f"params/{t}/kernel" for t in ("_Block_0/Dense_0", "_Block_0/Dense_1")} | {
        f"params/_Block_0/MultiHeadDotProductAttention_0/{q}/kernel" for q in ("query", "key", "value", "out")
    }
    # Every node's effective model differs from W₀ only in the adapted kernels, bit for bit elsewhere.
    _, spec = lora.lora_model(
        spec_model,
        np.zeros((1, SEQ), np.int32),
        rank=R,
        aggregation="product",
        key=jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0x10A4),
    )
    shapes = lora.param_names(spec_model)
    bounds = np.cumsum([0] + [int(np.prod(shapes[k])) for k in names])
    for row in np.asarray(exp.models(s)):
        eff = np.asarray(lora.merge(spec, jnp.asarray(row)))
        for k, lo, hi in zip(names, bounds[:-1], bounds[1:]):
            if k not in adapted:
                np.testing.assert_array_equal(eff[lo:hi], np.asarray(spec.base)[lo:hi])


def test_rank_zero_is_the_run_without_lora_bit_for_bit():
    lin = {"data.name": "linear", "model.name": "linear", "num_rounds": 2}
    plain = small_config(**lin)
    off = small_config(**lin, **{"model.lora.rank": 0, "model.lora.aggregation": "ffa", "model.lora.alpha": 3.0})
    out = []
    for cfg in (plain, off):
        exp = build(cfg)
        s, hp = exp.init_state(), exp.hp_values()
        step = jax.jit(exp.step)
        for _ in range(2):
            s, m = step(s, exp.node_data, hp)
        out.append((np.asarray(exp.models(s)), float(m["train_loss"]), float(m["bytes_sent"])))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][1:] == out[1][1:]


def test_base_from_npz_and_orbax_files(tmp_path, transformer):
    row = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (transformer.num_params,)), np.float32)
    shapes = lora.param_names(transformer)
    named, start = {}, 0
    for k, shape in shapes.items():
        size = int(np.prod(shape))
        named[k] = row[start : start + size].reshape(shape)
        start += size
    np.savez(tmp_path / "flat.npz", params=row)
    np.savez(tmp_path / "named.npz", **named)
    np.testing.assert_array_equal(lora.load_base(transformer, tmp_path / "flat.npz"), row)
    np.testing.assert_array_equal(lora.load_base(transformer, tmp_path / "named.npz"), row)
    import orbax.checkpoint as ocp

    tree = transformer.unravel(jnp.asarray(row))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save((tmp_path / "orbax").absolute(), tree)
    ckpt.wait_until_finished()
    np.testing.assert_array_equal(lora.load_base(transformer, tmp_path / "orbax"), row)
    bad = dict(named)
    bad["params/_Block_0/Dense_0/kernel"] = np.zeros((3, 3), np.float32)
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match=r"parameter params/_Block_0/Dense_0/kernel has shape \(3, 3\)"):
        lora.load_base(transformer, tmp_path / "bad.npz")
    del bad["params/pos"]
    np.savez(tmp_path / "missing.npz", **bad)
    with pytest.raises(ValueError, match="has no parameter params/pos"):
        lora.load_base(transformer, tmp_path / "missing.npz")
    # Through the config: without adapters every node starts at the file's model ...
    exp = build(lm_config(**{"model.lora.rank": 0, "model.init_from": str(tmp_path / "named.npz")}))
    np.testing.assert_array_equal(np.asarray(exp.models(exp.init_state())), np.tile(row, (N, 1)))
    # ... and a shape mismatch is a one-line config error naming the parameter.
    with pytest.raises(ConfigError, match=r"config.model.init_from: parameter params/_Block_0/Dense_0/kernel"):
        build(lm_config(**{"model.init_from": str(tmp_path / "bad.npz")}))


def test_lora_config_errors():
    with pytest.raises(ConfigError, match="config.model.lora.targets"):
        build(lm_config(**{"model.lora.targets": "attention,conv"}))
    with pytest.raises(ConfigError, match="config.model.lora.aggregation"):
        build(lm_config(**{"model.lora.aggregation": "mean"}))
    with pytest.raises(ConfigError, match="config.model.lora.aggregation: diloco exchanges pseudo-gradients"):
        build(lm_config(**{"model.lora.aggregation": "product", "algorithm.name": "diloco"}))


def test_lora_run_checkpoints_and_resumes_identically(tmp_path):
    kw = {"checkpoint_every": 1, "plots": False}
    full = rj.run(lm_config(num_rounds=2, **kw), tmp_path / "full")
    part = rj.run(lm_config(num_rounds=1, **kw), tmp_path / "resumed")
    assert int(part.state.round) == 1
    resumed = rj.run(lm_config(num_rounds=2, **kw), tmp_path / "resumed")
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert resumed.params.shape == (N, full.params.shape[1]) and full.params.shape[1] < 1000  # adapters only
