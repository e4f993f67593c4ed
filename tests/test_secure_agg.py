"""Secure aggregation (Bonawitz et al. 2017): exactness, dropouts, uniformity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from redeem_jax.privacy import secure_agg as sa


def _plain_sum(q, present):
    """Reference: integer sum of the present rows, reduced mod 2^32 in numpy."""
    q = np.asarray(q, dtype=np.uint64)
    keep = np.asarray(present, bool)
    return (q[keep].sum(axis=0) % (1 << 32)).astype(np.uint32)


def _inputs(n, d, seed, scale=1.0):
    return scale * jax.random.uniform(jax.random.key(seed), (n, d), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("double_mask", [True, False])
def test_masked_sum_is_exact_without_dropouts(double_mask):
    n, d = 7, 33
    x = _inputs(n, d, 0)
    key = jax.random.key(10)
    masked = sa.mask_inputs(x, key, double_mask=double_mask)
    q = sa.quantize(x)
    # The masks really hide something.
    assert not np.array_equal(np.asarray(masked), np.asarray(q))
    got = sa.unmask_sum(masked, None, key, double_mask=double_mask)
    assert got.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(got), _plain_sum(q, np.ones(n, bool)))
    # Without dropouts and without self masks, a plain sum already unmasks.
    if not double_mask:
        np.testing.assert_array_equal(
            np.asarray(jnp.sum(masked, axis=0, dtype=jnp.uint32)), _plain_sum(q, np.ones(n, bool))
        )


def test_pairwise_masks_cancel_exactly():
    for n in (2, 5, 16):
        m = sa.pairwise_masks(jax.random.key(n), n, 64)
        np.testing.assert_array_equal(np.asarray(jnp.sum(m, axis=0, dtype=jnp.uint32)), np.zeros(64, np.uint32))


@pytest.mark.parametrize("double_mask", [True, False])
def test_masked_sum_is_exact_after_random_dropouts(double_mask):
    n, d = 12, 40
    rng = np.random.default_rng(0)
    unmask = jax.jit(lambda m, p, k: sa.unmask_sum(m, p, k, double_mask))
    for trial in range(8):
        x = _inputs(n, d, trial)
        key = jax.random.key(100 + trial)
        masked = sa.mask_inputs(x, key, double_mask=double_mask)
        q = sa.quantize(x)
        present = rng.random(n) < rng.uniform(0.2, 0.9)
        present[rng.integers(n)] = True  # at least one survivor
        got = unmask(masked, jnp.asarray(present), key)
        np.testing.assert_array_equal(np.asarray(got), _plain_sum(q, present))


def test_dropping_everyone_but_one_and_nobody():
    n, d = 6, 10
    x = _inputs(n, d, 3)
    key = jax.random.key(3)
    masked = sa.mask_inputs(x, key)
    q = sa.quantize(x)
    for present in (np.eye(n, dtype=bool)[2], np.zeros(n, bool)):
        got = sa.unmask_sum(masked, present, key)
        np.testing.assert_array_equal(np.asarray(got), _plain_sum(q, present))


def test_dequantized_sum_within_quantization_bound():
    n, d, k = 9, 200, 12
    x = _inputs(n, d, 7, scale=0.9)
    present = np.ones(n, bool)
    present[[1, 4]] = False
    got = sa.secure_sum(x, jax.random.key(7), present, scale_bits=k)
    ref = np.asarray(x, np.float64)[present].sum(0)
    err = np.max(np.abs(np.asarray(got, np.float64) - ref))
    bound = sa.quantization_error_bound(int(present.sum()), k)
    assert err <= bound + 1e-6
    # The bound is not vacuous: quantization is visible at this scale.
    assert err > 0.1 * sa.quantization_error_bound(1, k)
    mean = sa.secure_mean(x, jax.random.key(7), present, scale_bits=k)
    np.testing.assert_allclose(np.asarray(mean), ref / present.sum(), atol=bound)


def test_negative_values_and_clipping():
    x = jnp.array([[-0.5, 3.0, -jnp.inf], [0.25, -3.0, jnp.nan]], jnp.float32)
    q = sa.quantize(x, scale_bits=8, clip=1.0)
    np.testing.assert_array_equal(np.asarray(sa.dequantize(q, 8)), [[-0.5, 1.0, -1.0], [0.25, -1.0, 0.0]])


def test_jit_matches_eager():
    x = _inputs(5, 8, 1)
    key = jax.random.key(1)
    present = jnp.array([True, False, True, True, False])
    eager = sa.secure_sum(x, key, present)
    jitted = jax.jit(sa.secure_sum)(x, key, present)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


@pytest.mark.parametrize("double_mask", [True, False])
def test_single_masked_input_is_uniform(double_mask):
    """A masked row, seen alone, is uniform on Z_{2^32} whatever the input."""
    n, d = 3, 1 << 14
    # A maximally structured input: constant rows.
    x = jnp.full((n, d), 0.5, jnp.float32)
    for seed in range(4):
        masked = sa.mask_inputs(x, jax.random.key(seed), double_mask=double_mask)
        row = np.asarray(masked[seed % n], dtype=np.uint64)
        ks = stats.kstest(row / 2.0**32, "uniform")
        assert ks.pvalue > 1e-3, (seed, ks)
        top = (row >> 24).astype(np.int64)  # top 8 bits -> 256 equiprobable bins
        counts = np.bincount(top, minlength=256)
        chi = stats.chisquare(counts)
        assert chi.pvalue > 1e-3, (seed, chi)
        low = (row & 0xFF).astype(np.int64)  # low bits too: the input's own bits
        chi_low = stats.chisquare(np.bincount(low, minlength=256))
        assert chi_low.pvalue > 1e-3, (seed, chi_low)
    # Sanity check that the test has power: the unmasked input fails it.
    plain = np.asarray(sa.quantize(x)[0], dtype=np.uint64)
    assert stats.kstest(plain / 2.0**32, "uniform").pvalue < 1e-10


def test_different_keys_give_different_masks():
    n, d = 4, 256
    m1 = np.asarray(sa.pairwise_masks(jax.random.key(1), n, d))
    m2 = np.asarray(sa.pairwise_masks(jax.random.key(2), n, d))
    assert np.mean(m1 == m2) < 0.01
    s1 = np.asarray(sa.self_masks(jax.random.key(1), n, d))
    s2 = np.asarray(sa.self_masks(jax.random.key(2), n, d))
    assert np.mean(s1 == s2) < 0.01
    # Different nodes get different masks under one key.
    assert np.mean(m1[0] == m1[1]) < 0.01
    # Same key, same masks (reproducible runs).
    np.testing.assert_array_equal(m1, np.asarray(sa.pairwise_masks(jax.random.key(1), n, d)))


def test_overflow_check_raises():
    with pytest.raises(ValueError, match="overflow"):
        sa.check_overflow(1000, 1.0, 22)
    with pytest.raises(ValueError, match="overflow"):
        sa.secure_sum(jnp.zeros((64, 3)), jax.random.key(0), scale_bits=26, clip=1.0)
    with pytest.raises(ValueError, match="overflow"):
        sa.mask_inputs(jnp.zeros((3, 3)), jax.random.key(0), scale_bits=20, clip=1000.0)
    # At the edge: n·B = 2^31 - 2^k fits, n·B = 2^31 does not.
    assert sa.check_overflow(1, 2.0**15 - 1, 16) == 2**31 - 2**16
    with pytest.raises(ValueError, match="overflow"):
        sa.check_overflow(2, 2.0**14, 16)
    with pytest.raises(ValueError, match="scale_bits"):
        sa.quantize(jnp.zeros(3), scale_bits=40)
    with pytest.raises(ValueError, match="clip"):
        sa.quantize(jnp.zeros(3), clip=0.0)


def test_large_sum_near_the_bound_decodes():
    # n·B just below 2^31: the extreme sums ±n·B still decode with the right sign.
    n, k = 4, 28
    clip = 1.99
    sa.check_overflow(n, clip, k)
    x = jnp.array([[clip, -clip]] * n, jnp.float32)
    got = sa.secure_sum(x, jax.random.key(0), scale_bits=k, clip=clip)
    np.testing.assert_allclose(np.asarray(got), [n * clip, -n * clip], rtol=1e-6)
