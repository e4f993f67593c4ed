"""Every node's minibatch from one counter-based draw (``rj.data.subset_indices``, issue 11):
Floyd's algorithm gives a uniformly random B-subset of each node's real rows, without
replacement, from JAX's own Threefry bits; checked against exact integer arithmetic, JAX's
``threefry_2x32`` and chi-square tests over all C(m, B) subsets."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redeem_jax as rj
from redeem_jax.data import sampling


def test_mulhi32_is_the_high_word_of_the_64_bit_product():
    rng = np.random.default_rng(0)
    u = rng.integers(0, 2**32, 20000, dtype=np.uint64)
    n = np.concatenate([rng.integers(1, 2**32, 10000, dtype=np.uint64), rng.integers(1, 64, 10000, dtype=np.uint64)])
    u[:4], n[:4] = 2**32 - 1, [2**32 - 1, 1, 2**16, 2**16 + 1]
    got = np.asarray(sampling._mulhi32(jnp.asarray(u, jnp.uint32), jnp.asarray(n, jnp.uint32)))
    np.testing.assert_array_equal(got, ((u * n) >> np.uint64(32)).astype(np.uint32))


def test_words_are_jax_threefry_of_the_node_and_pair_counters():
    from jax.extend.random import threefry_2x32

    key = jax.random.PRNGKey(7)
    n = 37
    words = sampling._words(key, n, 5)
    for p in range(3):
        ref = np.asarray(
            threefry_2x32(
                (key[0], key[1]), jnp.concatenate([jnp.arange(n, dtype=jnp.uint32), jnp.full((n,), p, jnp.uint32)])
            )
        )
        np.testing.assert_array_equal(np.asarray(words[2 * p]), ref[:n])
        if 2 * p + 1 < 5:
            np.testing.assert_array_equal(np.asarray(words[2 * p + 1]), ref[n:])


def _chi2_bound(df: int, sds: float = 5.0) -> float:
    return df + sds * math.sqrt(2 * df)  # chi-square: mean df, variance 2·df


@pytest.mark.parametrize("size, b", [(8, 4), (5, 3), (7, 1), (6, 5)])
def test_every_subset_is_equally_likely_and_rows_are_distinct_real_rows(size, b):
    n = 60 * math.comb(size, b)
    idx, mask = rj.data.subset_indices(jax.random.PRNGKey(size * 10 + b), jnp.full((n,), size), 8, b)
    idx, mask = np.asarray(idx), np.asarray(mask)
    assert idx.shape == (n, b) and mask.all()
    assert ((idx >= 0) & (idx < size)).all()
    assert all(len(set(r)) == b for r in idx)  # without replacement
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(size), b))}
    counts = np.bincount([subsets[tuple(sorted(r))] for r in idx], minlength=len(subsets))
    expected = n / len(subsets)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < _chi2_bound(len(subsets) - 1), (chi2, counts)


def test_mixed_sizes_small_shards_and_full_batch():
    sizes = jnp.asarray([8, 2, 4, 0, 6, 3] * 500, jnp.int32)
    idx, mask = rj.data.subset_indices(jax.random.PRNGKey(1), sizes, 8, 4)
    idx, mask, s = np.asarray(idx), np.asarray(mask), np.asarray(sizes)
    small = s <= 4  # the whole shard: rows 0..size-1, the rest masked, as sample_indices
    np.testing.assert_array_equal(idx[small], np.tile(np.arange(4), (small.sum(), 1)))
    np.testing.assert_array_equal(mask, np.arange(4)[None, :] < s[:, None])
    big = ~small
    assert all(len(set(r)) == 4 and max(r) < k for r, k in zip(idx[big], s[big]))
    # Inclusion probability of each real row is B / size (within 5 standard errors).
    for k in (6, 8):
        rows = idx[s == k]
        freq = np.array([(rows == r).any(1).mean() for r in range(k)])
        p = 4 / k
        assert np.all(np.abs(freq - p) < 5 * math.sqrt(p * (1 - p) / len(rows))), freq
    full_idx, full_mask = rj.data.subset_indices(jax.random.PRNGKey(1), sizes, 8, 8)
    np.testing.assert_array_equal(np.asarray(full_idx), np.tile(np.arange(8), (len(s), 1)))
    np.testing.assert_array_equal(np.asarray(full_mask), np.arange(8)[None, :] < s[:, None])


def test_draws_under_different_keys_are_independent_and_jit_and_vmap_agree():
    sizes = jnp.full((20000,), 8)
    a = np.sort(np.asarray(rj.data.subset_indices(jax.random.PRNGKey(3), sizes, 8, 4)[0]), 1)
    b = np.sort(np.asarray(rj.data.subset_indices(jax.random.PRNGKey(4), sizes, 8, 4)[0]), 1)
    same = (a == b).all(1).mean()
    p = 1 / 70
    assert abs(same - p) < 5 * math.sqrt(p * (1 - p) / len(a)), same
    jitted = jax.jit(rj.data.subset_indices, static_argnums=(2, 3))(jax.random.PRNGKey(3), sizes, 8, 4)[0]
    np.testing.assert_array_equal(np.sort(np.asarray(jitted), 1), a)
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    batched = jax.vmap(lambda k: rj.data.subset_indices(k, sizes[:50], 8, 4)[0])(keys)
    for i in range(3):
        np.testing.assert_array_equal(
            np.asarray(batched[i]), np.asarray(rj.data.subset_indices(keys[i], sizes[:50], 8, 4)[0])
        )


def test_sample_network_batches_gathers_the_chosen_rows():
    rng = np.random.default_rng(2)
    nd = rj.data.NodeData(
        jnp.asarray(rng.normal(size=(30, 6, 3)), jnp.float32),
        jnp.asarray(rng.integers(0, 5, (30, 6)), jnp.int32),
        jnp.asarray(rng.integers(1, 7, 30)),
    )
    xb, yb, mask = rj.data.sample_network_batches(jax.random.PRNGKey(0), nd, 3)
    idx, mask2 = rj.data.subset_indices(jax.random.PRNGKey(0), nd.sizes, 6, 3)
    x, y, i = np.asarray(nd.x), np.asarray(nd.y), np.asarray(idx)
    np.testing.assert_array_equal(np.asarray(xb), x[np.arange(30)[:, None], i])
    np.testing.assert_array_equal(np.asarray(yb), y[np.arange(30)[:, None], i])
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(mask2))
