"""Compressors of Choco-SGD / DeepSqueeze (redeem_jax/network/compress.py).

Statistical checks use tolerances from the binomial or sample standard deviation (5 sigma), so they
do not depend on which numbers the PRNG draws. Compressor instances and their jitted samplers are
shared between tests (``_get``, ``_sampler``): compiling the random ones dominates the run time.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redeem_jax.network import compress as C

D = 100
T = 4000  # Monte Carlo trials
Z = 5.0  # sigmas of tolerance


@functools.cache
def _get(name, **opts):
    return C.get(name, **opts)


@functools.cache
def _jit(c):
    return jax.jit(c.compress)


@functools.cache
def _sampler(c):
    return jax.jit(jax.vmap(c.compress, in_axes=(None, 0)))


def _x(seed=0, shape=(D,)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _samples(c, x, trials=T, seed=1):
    """[trials, ..., d] draws of c.compress(x, key), keys split from PRNGKey(seed)."""
    return np.asarray(_sampler(c)(jnp.asarray(x), jax.random.split(jax.random.PRNGKey(seed), trials)), np.float64)


def _mean_err(qs, x):
    """Monte Carlo E‖Q(x) − x‖² and its standard error."""
    e = np.sum((qs - x) ** 2, axis=-1)
    return e.mean(), e.std(ddof=1) / math.sqrt(len(e))


ALL = [
    ("identity", {}),
    ("top_k", {"ratio": 0.1}),
    ("random_k", {"k": 10}),
    ("random_k", {"k": 10, "scaled": True}),
    ("qsgd", {"levels": 4}),
    ("qsgd", {"levels": 4, "scaled": False}),
    ("sign", {}),
]
IDS = [C.get(n, **o).name for n, o in ALL]
# the unbiased random_k / qsgd at these d have ω ≤ 0: omega raises (tested below)
CONTRACTIVE = [
    (a, i) for a, i in zip(ALL, IDS) if i not in ("random_k(k=10, scaled=True)", "qsgd(levels=4, scaled=False)")
]


def test_identity_exact():
    x = _x()
    c = C.identity()
    np.testing.assert_array_equal(np.asarray(c.compress(x, None)), x)
    assert c.omega(D) == 1.0 and c.bits(D) == 32 * D and c.unbiased


def test_top_k_keeps_largest_and_contracts():
    x = _x(shape=(64, D))
    c = _get("top_k", ratio=0.1)
    k = 10
    q = np.asarray(_jit(c)(x, None))
    keep = np.argsort(-np.abs(x), axis=1)[:, :k]
    want = np.zeros_like(x)
    np.put_along_axis(want, keep, np.take_along_axis(x, keep, 1), 1)
    np.testing.assert_array_equal(q, want)
    assert (np.count_nonzero(q, axis=1) == k).all()
    # deterministic contraction for every row, not just in expectation
    assert c.omega(D) == k / D and not c.unbiased
    err = np.sum((q - x) ** 2, 1)
    assert (err <= (1 - k / D) * np.sum(x**2, 1) * (1 + 1e-6)).all()
    np.testing.assert_array_equal(np.asarray(C.top_k(k=k).compress(x, None)), q)


def test_k_rounding_and_cap():
    assert C.top_k(ratio=0.25).omega(10) == 0.3  # round(2.5) -> 3 (halves up)
    assert C.top_k(ratio=0.001).omega(10) == 0.1  # at least one coordinate
    assert C.top_k(k=120).omega(D) == 1.0  # capped at d
    np.testing.assert_array_equal(np.asarray(C.top_k(k=120).compress(_x(), None)), _x())


def test_random_k_mask_frequency_and_error():
    x = _x()
    k = 10
    c = _get("random_k", k=k)
    qs = _samples(c, x)
    kept = qs != 0
    assert (kept.sum(1) == k).all()
    np.testing.assert_array_equal(qs[kept], np.broadcast_to(x, qs.shape)[kept])  # kept values unchanged
    p = k / D
    assert np.abs(kept.mean(0) - p).max() <= Z * math.sqrt(p * (1 - p) / T)
    m, se = _mean_err(qs, x)
    assert abs(m - (1 - p) * np.sum(x**2)) <= Z * se
    assert c.omega(D) == p and not c.unbiased


def test_random_k_scaled_unbiased():
    x = _x()
    k = 10
    c = _get("random_k", k=k, scaled=True)
    assert c.unbiased
    qs = _samples(c, x)
    # Q_i = (d/k) x_i w.p. k/d else 0: std |x_i| sqrt(d/k − 1)
    tol = Z * np.abs(x) * math.sqrt((D / k - 1) / T) + 1e-6
    assert (np.abs(qs.mean(0) - x) <= tol).all()
    m, se = _mean_err(qs, x)
    assert abs(m - (D / k - 1) * np.sum(x**2)) <= Z * se
    with pytest.raises(ValueError, match="not a contraction"):
        c.omega(D)
    assert C.random_k(k=80, scaled=True).omega(D) == pytest.approx(2 - D / 80)


@pytest.mark.parametrize("s", [1, 4, 16])
def test_qsgd_unbiased_levels_variance(s):
    x = _x()
    c = _get("qsgd", levels=s, scaled=False)
    assert c.unbiased
    qs = _samples(c, x)
    nrm = np.linalg.norm(x.astype(np.float64))
    r = s * np.abs(x) / nrm
    frac = r - np.floor(r)
    # unbiased: coordinate i moves up one level (‖x‖/s) w.p. frac_i; binomial tolerance, +1 count so a
    # tiny frac_i (count 0 or 1, no CLT) cannot fail it
    tol = nrm / s * (Z * np.sqrt(frac * (1 - frac) / T) + 1 / T)
    assert (np.abs(qs.mean(0) - x) <= tol).all()
    # values in ‖x‖ · {−s..s}/s with the sign of x, only the two levels around s|x_i|/‖x‖
    lev = qs / nrm * s
    np.testing.assert_allclose(lev, np.round(lev), atol=1e-3)
    lev = np.round(lev)
    assert ((np.sign(lev) == np.sign(x)) | (lev == 0)).all()
    # (the 1e-4 margin absorbs float32 vs float64 rounding of r near an integer)
    assert ((np.floor(r - 1e-4) <= np.abs(lev)) & (np.abs(lev) <= np.floor(r + 1e-4) + 1)).all()
    assert (np.abs(lev) <= s).all()
    # variance: exactly (‖x‖/s)² Σ p(1 − p), p the fractional parts, and below Alistarh's bound
    m, se = _mean_err(qs, x)
    assert abs(m - (nrm / s) ** 2 * np.sum(frac * (1 - frac))) <= Z * se + 1e-6 * nrm**2
    bound = min(D / s**2, math.sqrt(D) / s)
    assert m <= bound * nrm**2 + Z * se
    if bound < 1:
        assert c.omega(D) == pytest.approx(1 - bound)
    else:
        with pytest.raises(ValueError, match="not a contraction"):
            c.omega(D)


@pytest.mark.parametrize("s", [4, 16])  # both branches of min(d/s², √d/s)
def test_qsgd_scaled_contracts(s):
    x = _x()
    c = _get("qsgd", levels=s)
    tau = 1 + min(D / s**2, math.sqrt(D) / s)
    assert c.omega(D) == pytest.approx(1 / tau) and not c.unbiased
    qs = _samples(c, x)
    np.testing.assert_allclose(qs, _samples(_get("qsgd", levels=s, scaled=False), x) / tau, rtol=1e-5, atol=1e-7)
    m, se = _mean_err(qs, x)
    assert m <= (1 - c.omega(D)) * np.sum(x**2) + Z * se


def test_sign_exact():
    x = _x(shape=(8, D))
    c = _get("sign")
    q = np.asarray(_jit(c)(x, None), np.float64)
    l1 = np.abs(x).sum(1, keepdims=True)
    np.testing.assert_allclose(q, l1 / D * np.sign(x), rtol=1e-6)
    sq = np.sum(x.astype(np.float64) ** 2, 1)
    np.testing.assert_allclose(np.sum((q - x) ** 2, 1), (1 - l1[:, 0] ** 2 / (D * sq)) * sq, rtol=1e-5)
    assert c.omega(D) == 1 / D and c.bits(D) == D + 32
    # the worst case 1/d is approached by a near one-hot x (sign(0) = 0 makes an exact one-hot better)
    e = np.full((8, D), 1e-4, np.float32)
    e[:, 3] = 2.0
    qe = np.asarray(_jit(c)(e, None), np.float64)
    assert 1 - np.sum((qe[0] - e[0]) ** 2) / np.sum(e[0].astype(np.float64) ** 2) == pytest.approx(1 / D, rel=1e-2)


@pytest.mark.parametrize("name,opts", ALL, ids=IDS)
def test_zero_batch_jit_vmap(name, opts):
    c = _get(name, **opts)
    key = jax.random.PRNGKey(7)
    x = _x(shape=(3, D))
    x[1] = 0.0  # a zero row gives zero (no NaN) and leaves the other rows finite
    q = np.asarray(_jit(c)(x, key))
    assert q.shape == x.shape and q.dtype == np.float32 and np.isfinite(q).all() and (q[1] == 0).all()
    # batch contract: row i uses split(key, N)[i], i.e. the single-row path vmapped over the split keys
    rows = np.asarray(jax.jit(jax.vmap(c.compress))(x, jax.random.split(key, 3)))
    np.testing.assert_allclose(q, rows, rtol=1e-6, atol=1e-7)  # vmapped reductions may round differently
    if name in ("random_k", "qsgd"):
        with pytest.raises(ValueError, match="key"):
            c.compress(x, None)


@pytest.mark.parametrize("name,opts", [("random_k", {"k": 10}), ("qsgd", {"levels": 4})], ids=["random_k", "qsgd"])
def test_rows_get_independent_randomness(name, opts):
    f = _jit(_get(name, **opts))
    x = np.tile(_x(), (3, 1))  # identical rows
    q = np.asarray(f(x, jax.random.PRNGKey(7)))
    assert (q[0] != q[1]).any() and (q[1] != q[2]).any()
    assert (np.asarray(f(x, jax.random.PRNGKey(8))) != q).any()  # and another key changes the draw


def test_leading_shape_typed_key_dtype():
    f = _jit(_get("qsgd", levels=4))
    x = _x(shape=(3, D))
    key = jax.random.PRNGKey(7)
    q = np.asarray(f(x, key))
    np.testing.assert_allclose(np.asarray(f(x.reshape(3, 1, D), key)).reshape(3, D), q, rtol=1e-6)
    assert f(x, jax.random.key(0)).shape == x.shape  # typed keys work too
    assert _jit(_get("top_k", ratio=0.1))(x.astype(jnp.bfloat16), None).dtype == jnp.bfloat16


@pytest.mark.parametrize("name,opts", [a for a, _ in CONTRACTIVE], ids=[i for _, i in CONTRACTIVE])
def test_omega_contract(name, opts):
    """E‖Q(x) − x‖² ≤ (1 − ω(d))‖x‖² (Koloskova et al. 2019, Assumption 1), Monte Carlo."""
    c = _get(name, **opts)
    x = _x()
    assert 0 < c.omega(D) <= 1
    m, se = _mean_err(_samples(c, x), x)
    assert m <= (1 - c.omega(D)) * np.sum(x**2) + Z * se + 1e-5


def test_empirical_omega():
    x = _x()
    c = _get("random_k", k=10)
    w = float(C.empirical_omega(c, x, jax.random.PRNGKey(1), T))
    m, _ = _mean_err(_samples(c, x), x)  # the same keys, so the same estimate
    assert w == pytest.approx(1 - m / np.sum(x.astype(np.float64) ** 2), rel=1e-4)
    xb = _x(shape=(3, D))
    xb[1] = 0
    wb = np.asarray(C.empirical_omega(_get("top_k", ratio=0.1), xb, jax.random.PRNGKey(0), 1))
    assert wb.shape == (3,) and wb[1] == 1.0 and np.isfinite(wb).all()


def test_get_errors_name_the_option():
    with pytest.raises(ValueError, match="nope.*allowed"):
        C.get("nope")
    with pytest.raises(ValueError, match="ratio"):
        C.get("top_k", ratio=0.0)
    with pytest.raises(ValueError, match="ratio"):
        C.get("random_k", ratio=1.5)
    with pytest.raises(ValueError, match="ratio.*k"):
        C.get("top_k", ratio=0.1, k=3)
    with pytest.raises(ValueError, match="ratio.*k"):
        C.get("random_k")
    with pytest.raises(ValueError, match="k must"):
        C.get("top_k", k=0)
    with pytest.raises(ValueError, match="levels"):
        C.get("qsgd", levels=0)
    with pytest.raises(ValueError, match="levels"):
        C.get("qsgd", levels=2.5)
    with pytest.raises(ValueError, match="scaled"):
        C.get("qsgd", scaled="yes")
    with pytest.raises(ValueError, match="foo"):
        C.get("top_k", ratio=0.1, foo=1)
    with pytest.raises(ValueError, match="levels"):
        C.get("sign", levels=2)
    c = C.get("sign")
    assert C.get(c) is c
    assert set(C.COMPRESSORS) == {"identity", "top_k", "random_k", "qsgd", "sign"}


def test_bits():
    d = 1000
    full = C.identity().bits(d)
    assert full == 32 * d and C.bits_to_bytes(full) == 4 * d
    assert C.top_k(ratio=0.01).bits(d) == 10 * (32 + 10) < full
    assert C.random_k(ratio=0.01).bits(d) == 10 * 32 + 32 < C.top_k(ratio=0.01).bits(d)
    assert C.qsgd(levels=1).bits(d) == 32 + 2 * d < full
    assert C.qsgd(levels=16).bits(d) == 32 + 6 * d
    assert C.sign().bits(d) == d + 32 < C.qsgd(levels=1).bits(d)
