"""Tests of redeem_jax.data: datasets, loaders, partitions, sampling.

Properties only (coverage, disjointness, exactness of optima, sampling
invariants); nothing depends on PRNG internals.
"""

import gzip
import pickle
import random

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from redeem_jax import data

matplotlib.use("Agg")


# ------------------------------------------------------------------ helpers


def _check_cover(parts, m, n):
    assert len(parts) == n
    for p in parts:
        assert p.dtype == np.int64
    allidx = np.concatenate(parts)
    assert len(allidx) == m, "parts must cover every example exactly once"
    np.testing.assert_array_equal(np.sort(allidx), np.arange(m))


def _labels(m=1000, c=10, seed=0):
    return np.random.default_rng(seed).integers(0, c, m).astype(np.int32)


# ---------------------------------------------------------------- partition


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards", "quantity", "contiguous"])
@pytest.mark.parametrize("n", [1, 7, 20])
def test_partition_disjoint_and_covering(method, n):
    y = _labels()
    parts = data.partition(y, n, method=method, seed=3)
    _check_cover(parts, len(y), n)
    assert min(len(p) for p in parts) >= 1
    s = data.partition_summary(y, parts, 10)
    assert s.sizes.sum() == len(y)
    np.testing.assert_array_equal(s.sizes, [len(p) for p in parts])
    np.testing.assert_array_equal(s.histogram.sum(1), s.sizes)
    np.testing.assert_array_equal(s.histogram.sum(0), np.bincount(y, minlength=10))


def test_partition_same_seed_same_result_different_seed_differs():
    y = _labels()
    a = data.partition(y, 5, "dirichlet", seed=1)
    b = data.partition(y, 5, "dirichlet", seed=1)
    c = data.partition(y, 5, "dirichlet", seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_iid_sizes_equal():
    parts = data.partition(_labels(1003), 10, "iid")
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_small_alpha_more_skewed():
    y = _labels(4000)
    ent = {}
    for alpha in (0.05, 100.0):
        es = [
            data.partition_summary(y, data.partition(y, 10, "dirichlet", seed=s, alpha=alpha), 10).label_entropy.mean()
            for s in range(3)
        ]
        ent[alpha] = np.mean(es)
    assert ent[0.05] < 0.5 * np.log(10)
    assert ent[100.0] > 0.95 * np.log(10)
    assert ent[0.05] < ent[100.0]


def test_dirichlet_min_size_respected():
    y = _labels(500)
    parts = data.partition(y, 20, "dirichlet", alpha=0.3, min_size=5, seed=0)
    assert min(len(p) for p in parts) >= 5


def test_dirichlet_impossible_min_size_raises():
    y = _labels(100)
    with pytest.raises(ValueError, match="min_size"):
        data.partition(y, 10, "dirichlet", alpha=0.01, min_size=10, max_tries=5)


@pytest.mark.parametrize("spn", [1, 2, 3])
def test_shards_labels_per_node(spn):
    y = _labels(2000)
    parts = data.partition(y, 10, "shards", shards_per_node=spn, seed=0)
    _check_cover(parts, len(y), 10)
    s = data.partition_summary(y, parts, 10)
    assert (s.labels_per_node <= 2 * spn).all()
    # A pathological split: far fewer labels per node than iid.
    assert s.labels_per_node.mean() < 10


def test_quantity_sizes_skewed_labels_iid():
    y = _labels(5000)
    parts = data.partition(y, 10, "quantity", quantity_alpha=0.3, min_size=20, seed=0)
    _check_cover(parts, len(y), 10)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 20
    assert sizes.max() > 2 * sizes.mean() or sizes.std() > 0.3 * sizes.mean()


def test_contiguous_blocks():
    parts = data.partition(np.zeros(10, np.float32), 3, "contiguous")
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_partition_errors():
    y = _labels(50)
    with pytest.raises(ValueError, match="num_nodes"):
        data.partition(y, 0)
    with pytest.raises(ValueError, match="more nodes than examples"):
        data.partition(y, 51)
    with pytest.raises(ValueError, match="alpha"):
        data.partition(y, 5, "dirichlet", alpha=0.0)
    with pytest.raises(ValueError, match="quantity_alpha"):
        data.partition(y, 5, "quantity", quantity_alpha=-1.0)
    with pytest.raises(ValueError, match="shards"):
        data.partition(y, 30, "shards", shards_per_node=2)
    with pytest.raises(ValueError, match="unknown partition method 'nope'"):
        data.partition(y, 5, "nope")
    reg = np.linspace(0, 1, 50).astype(np.float32)
    with pytest.raises(ValueError, match=r"'dirichlet'.*iid.*quantity.*contiguous"):
        data.partition(reg, 5, "dirichlet")
    lang = np.zeros((50, 8), np.int32)
    with pytest.raises(ValueError, match="'shards'"):
        data.partition(lang, 5, "shards")
    for method in ("iid", "quantity", "contiguous"):
        _check_cover(data.partition(reg, 5, method), 50, 5)
        _check_cover(data.partition(lang, 5, method), 50, 5)


def test_summary_str_dict_plot():
    y = _labels(3000)
    s = data.partition_summary(y, data.partition(y, 100, "dirichlet", alpha=0.5), 10)
    text = str(s)
    assert "100 nodes" in text and "not shown" in text
    assert len(text.splitlines()) < 30
    d = s.to_dict()
    assert d["num_nodes"] == 100 and sum(d["sizes"]) == 3000 and len(d["histogram"]) == 100
    ax = s.plot()
    assert ax.get_xlabel() == "node"
    import matplotlib.pyplot as plt

    plt.close("all")
    reg = data.partition_summary(np.zeros(10, np.float32), data.partition(np.zeros(10, np.float32), 2), None)
    assert reg.histogram is None and "2 nodes" in str(reg)
    reg.plot()
    plt.close("all")


# ---------------------------------------------------------------- synthetic


def test_whitened_linear_exact():
    n, m, d = 6, 25, 8
    ds = data.load("linear", seed=1, dim=d, whiten=True, num_nodes=n, examples_per_node=m, heterogeneity=0.5, noise=0.3)
    assert ds.x_train.shape == (n * m, d) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.float32 and ds.task == "regression" and ds.num_classes == 1
    a = ds.x_train.astype(np.float64).reshape(n, m, d)
    y = ds.y_train.astype(np.float64).reshape(n, m)
    for i in range(n):
        np.testing.assert_allclose(a[i].T @ a[i] / m, np.eye(d), atol=1e-5)
    b = ds.info["node_targets"]
    np.testing.assert_allclose(b, np.einsum("nmd,nm->nd", a, y) / m, atol=1e-10)
    # Node loss is ½‖x − b_i‖² + const: check at random points.
    xs = np.random.default_rng(0).standard_normal((4, d))
    for i in range(n):
        loss = 0.5 * ((a[i] @ xs.T - y[i][:, None]) ** 2).mean(0)
        quad = 0.5 * ((xs - b[i]) ** 2).sum(1)
        np.testing.assert_allclose(loss - quad, (loss - quad)[0], atol=1e-5)
    lstsq = np.linalg.lstsq(a.reshape(-1, d), y.reshape(-1), rcond=None)[0]
    np.testing.assert_allclose(ds.optimum, lstsq, atol=1e-5)
    np.testing.assert_allclose(ds.optimum, b.mean(0), atol=1e-12)
    # Heterogeneity makes node targets differ.
    assert np.linalg.norm(b - b.mean(0), axis=1).mean() > 0.1
    # "contiguous" gives each node its own block.
    nd = data.distribute(ds, n, "contiguous")
    np.testing.assert_array_equal(np.asarray(nd.x).reshape(n * m, d), ds.x_train)


def test_whitened_needs_enough_rows():
    with pytest.raises(ValueError, match="examples_per_node >= dim"):
        data.load("linear", dim=10, whiten=True, num_nodes=4, examples_per_node=5)


def test_linear_optimum_is_least_squares():
    ds = data.load("linear", seed=2, num_examples=300, dim=5, noise=0.5)
    a, y = ds.x_train.astype(np.float64), ds.y_train.astype(np.float64)
    grad = a.T @ (a @ ds.optimum - y) / len(y)
    assert np.linalg.norm(grad) < 1e-8
    # Same seed, same data.
    ds2 = data.load("linear", seed=2, num_examples=300, dim=5, noise=0.5)
    np.testing.assert_array_equal(ds.x_train, ds2.x_train)


def test_logistic_optimum_gradient_small():
    ds = data.load("logistic", seed=0, num_examples=500, dim=6, l2=1e-3, noise=0.05)
    assert ds.task == "classification" and ds.num_classes == 2
    assert set(np.unique(ds.y_train)) <= {0, 1} and ds.y_train.dtype == np.int32
    a, y, w = ds.x_train.astype(np.float64), ds.y_train.astype(np.float64), ds.optimum
    p = 1.0 / (1.0 + np.exp(-(a @ w)))
    grad = a.T @ (p - y) / len(y) + 1e-3 * w  # ∇ of mean BCE + (l2/2)‖w‖²
    assert np.linalg.norm(grad) < 1e-6


def test_unknown_dataset_and_option():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")
    with pytest.raises(TypeError, match="valid options"):
        data.load("linear", bogus=1)


# ----------------------------------------------------------------- bundled


def test_digits():
    ds = data.load("digits")
    assert ds.x_train.shape[1:] == (8, 8, 1) == ds.input_shape
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_train + ds.num_test == 1797
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.num_classes == 10 and set(np.unique(ds.y_train)) == set(range(10))


def test_mnist1d_offline_and_restores_global_rng():
    from redeem_jax.data import datasets

    datasets._mnist1d_arrays.cache_clear()  # so make_dataset really runs here
    np.random.seed(123)
    random.seed(7)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(7)
    ds = data.load("mnist1d", num_examples=1000)
    assert np.random.rand() == expected_np and random.random() == expected_py
    assert ds.x_train.shape == (800, 40) and ds.x_test.shape == (200, 40)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert set(np.unique(ds.y_train)) == set(range(10)) and ds.num_classes == 10


def test_text_corpus():
    a = data.load("text", seq_len=32)
    b = data.load("text", seq_len=32)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.task == "language" and a.num_classes == 256 and a.input_shape == (32,)
    assert a.x_train.dtype == np.int32 and a.y_train.shape == a.x_train.shape
    for arr in (a.x_train, a.y_train, a.x_test, a.y_test):
        assert arr.min() >= 0 and arr.max() < 256
    # y is x shifted by one byte.
    np.testing.assert_array_equal(a.x_train[:, 1:], a.y_train[:, :-1])
    assert len(a.x_test) > 0 and len(a.x_train) > 1000
    src = a.info["train_source"]
    assert (np.diff(src) >= 0).all() and len(np.unique(src)) == len(a.info["sources"])
    # Contiguous nodes see different sources.
    parts = data.partition(a.y_train, 4, "contiguous")
    assert len(set(src[parts[0]]) & set(src[parts[-1]])) == 0


# ------------------------------------------------------------------ loaders


def _idx_bytes(arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    return header + arr.tobytes()


def _fake_mnist(rng, m_train=12, m_test=5):
    return {
        "x_train": rng.integers(0, 256, (m_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, m_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (m_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, m_test, dtype=np.uint8),
    }


_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _check_mnist(ds, raw):
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train[..., 0], raw["x_train"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.y_test, raw["y_test"])
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_loader(tmp_path, gz, name):
    raw = _fake_mnist(np.random.default_rng(0))
    for k, stem in _STEMS.items():
        payload = _idx_bytes(raw[k])
        if gz:
            (tmp_path / (stem + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (tmp_path / stem).write_bytes(payload)
    _check_mnist(data.load(name, path=str(tmp_path)), raw)


def test_npz_loader_and_aliases(tmp_path):
    raw = _fake_mnist(np.random.default_rng(1))
    np.savez(tmp_path / "mnist.npz", **raw)
    _check_mnist(data.load("mnist", path=tmp_path / "mnist.npz"), raw)
    # A directory holding <name>.npz works too.
    _check_mnist(data.load("mnist", path=tmp_path), raw)
    alias = {
        "train_images": raw["x_train"],
        "train_labels": raw["y_train"],
        "test_images": raw["x_test"],
        "test_labels": raw["y_test"],
    }
    np.savez(tmp_path / "alias.npz", **alias)
    _check_mnist(data.load("fashion_mnist", path=tmp_path / "alias.npz"), raw)


def test_cifar10_npz_and_batches(tmp_path):
    rng = np.random.default_rng(2)
    raw = {
        "x_train": rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, (10, 1), dtype=np.uint8),  # keras shape [m, 1]
        "x_test": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, (4, 1), dtype=np.uint8),
    }
    np.savez(tmp_path / "c.npz", **raw)
    ds = data.load("cifar10", path=tmp_path / "c.npz")
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.input_shape == (32, 32, 3)
    assert ds.y_train.shape == (10,) and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_test, raw["x_test"] / 255.0, atol=1e-7)
    std = data.load("cifar10", path=tmp_path / "c.npz", standardize=True)
    np.testing.assert_allclose(std.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(std.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    # The official python release: channel-major rows, pickled batches.
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    flat = raw["x_train"].transpose(0, 3, 1, 2).reshape(10, -1)
    for i in range(1, 6):
        sl = slice(2 * (i - 1), 2 * i)
        with open(batches / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": flat[sl], b"labels": raw["y_train"][sl, 0].tolist()}, f)
    with open(batches / "test_batch", "wb") as f:
        pickle.dump(
            {b"data": raw["x_test"].transpose(0, 3, 1, 2).reshape(4, -1), b"labels": raw["y_test"][:, 0].tolist()}, f
        )
    ds2 = data.load("cifar10", path=tmp_path / "cifar-10-batches-py")
    np.testing.assert_array_equal(ds2.x_train, ds.x_train)
    np.testing.assert_array_equal(ds2.y_train, ds.y_train)


def test_missing_files_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        data.load("mnist", path=tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "train-images-idx3-ubyte" in msg and ".npz" in msg and "never downloads" in msg
    assert "\n" not in msg  # one line: a CLI user sees all of it after "error: "
    monkeypatch.setenv("REDEEM_JAX_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py"):
        data.load("cifar10")


def test_partition_summary_refuses_labels_outside_the_classes():
    labels = np.array([0, 1, 2, 10], np.int32)
    with pytest.raises(ValueError, match=r"class ids in \[0, 10\); 1 are not \(e.g. 10 at index 3\)"):
        data.partition_summary(labels, [np.arange(4)], num_classes=10)


def test_standardize_leaves_a_constant_channel_finite(tmp_path):
    raw = _fake_mnist(np.random.default_rng(3))
    raw["x_train"][:] = 7  # a constant image set: std 0
    np.savez(tmp_path / "flat.npz", **raw)
    ds = data.load("mnist", path=tmp_path / "flat.npz", standardize=True)
    assert np.isfinite(ds.x_train).all() and np.isfinite(ds.x_test).all()
    np.testing.assert_allclose(ds.x_train, 0.0, atol=1e-7)


# ---------------------------------------------------------------- sampling


def test_distribute_padding_and_content():
    ds = data.load("logistic", num_examples=203, dim=3, test_fraction=0.0)
    nd, summary = data.distribute_with_summary(ds, 4, "quantity", quantity_alpha=0.5, seed=1)
    assert isinstance(nd, data.NodeData) and nd.sizes.dtype == jnp.int32
    sizes = np.asarray(nd.sizes)
    np.testing.assert_array_equal(sizes, summary.sizes)
    assert nd.x.shape == (4, sizes.max(), 3) and nd.y.shape == (4, sizes.max())
    x = np.asarray(nd.x)
    for i in range(4):
        assert (x[i, sizes[i] :] == 0).all()
    # Real rows are exactly the train set, each once.
    rows = np.concatenate([x[i, : sizes[i]] for i in range(4)])
    np.testing.assert_array_equal(rows[np.lexsort(rows.T)], ds.x_train[np.lexsort(ds.x_train.T)])
    padded = data.distribute(ds, 4, "iid", pad_to=80)
    assert padded.x.shape == (4, 80, 3)
    # NodeData is a pytree of arrays that goes through jit.
    assert jax.jit(lambda n: n.sizes.sum())(nd) == 203


def test_sample_indices_without_replacement_and_valid():
    m_max, bsz = 50, 16
    sizes = jnp.array([50, 30, 16, 5, 1], jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(0), 40 * len(sizes)).reshape(40, len(sizes), -1)

    @jax.jit
    def many(keys, sizes):  # traced sizes, vmapped over nodes and draws
        per_node = jax.vmap(lambda k, s: data.sample_indices(k, s, m_max, bsz))
        return jax.vmap(per_node, in_axes=(0, None))(keys, sizes)

    idx, mask = map(np.asarray, many(keys, sizes))
    assert idx.shape == (40, 5, bsz) and mask.shape == (40, 5, bsz)
    for j, s in enumerate(np.asarray(sizes)):
        np.testing.assert_array_equal(mask[:, j], np.broadcast_to(np.arange(bsz) < s, (40, bsz)))
        for t in range(40):
            valid = idx[t, j][mask[t, j]]
            assert (valid < s).all() and (valid >= 0).all()
            assert len(np.unique(valid)) == len(valid) == min(s, bsz)
        if s > bsz:
            # Every real row gets drawn eventually (not stuck on a prefix).
            assert len(np.unique(idx[:, j][mask[:, j]])) > bsz
            assert (np.bincount(idx[:, j].ravel(), minlength=m_max)[s:] == 0).all()


def test_sample_indices_uniform_marginals():
    # Each of the `size` rows is in the batch with probability bsz/size.
    size, m_max, bsz, draws = 10, 12, 4, 4000
    keys = jax.random.split(jax.random.PRNGKey(1), draws)
    idx, _ = jax.vmap(lambda k: data.sample_indices(k, size, m_max, bsz))(keys)
    freq = np.bincount(np.asarray(idx).ravel(), minlength=m_max) / draws
    p = bsz / size
    tol = 5 * np.sqrt(p * (1 - p) / draws)
    np.testing.assert_allclose(freq[:size], p, atol=tol)
    assert (freq[size:] == 0).all()


def test_full_batch_deterministic():
    for bsz in (8, 20):
        a = data.sample_indices(jax.random.PRNGKey(0), jnp.int32(5), 8, bsz)
        b = data.sample_indices(jax.random.PRNGKey(1), jnp.int32(5), 8, bsz)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(a[0], np.arange(8))
        np.testing.assert_array_equal(a[1], np.arange(8) < 5)


def test_sample_batch_vmapped_over_nodes():
    ds = data.load("digits")
    nd = data.distribute(ds, 6, "dirichlet", alpha=0.3, seed=0, min_size=10)
    xb, yb, mask = jax.jit(lambda k, n: data.sample_node_batches(k, n, 8))(jax.random.PRNGKey(3), nd)
    assert xb.shape == (6, 8, 8, 8, 1) and yb.shape == (6, 8) and mask.shape == (6, 8)
    assert bool(mask.all())
    # Sampled rows are rows of that node.
    x, xb = np.asarray(nd.x), np.asarray(xb)
    sizes = np.asarray(nd.sizes)
    for i in range(6):
        node_rows = {r.tobytes() for r in x[i, : sizes[i]]}
        assert all(r.tobytes() in node_rows for r in xb[i])
    # Per-node keys: nodes do not share their draw pattern.
    xs, ys, _ = data.sample_batch(jax.random.PRNGKey(0), nd.x[0], nd.y[0], nd.sizes[0], 4)
    assert xs.shape == (4, 8, 8, 1) and ys.shape == (4,)
