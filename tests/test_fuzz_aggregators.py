"""Fuzzing every robust aggregator (issue 12): poisoned Byzantine rows (NaN, ±inf, ±1e38, large
finite values, near-honest values), random masks, float32 / float16 / bfloat16 rows.

Properties, per rule:

* below :func:`aggregators.min_inputs` live rows the output is exactly the documented fallback
  (the first live row unchanged, zeros when none is live);
* within it the output is finite (``mean`` excepted: it is documented as not robust) and has the
  input dtype;
* median and trimmed mean stay inside the per-coordinate [min, max] of the honest live rows;
  MeaMed inside that interval widened by its width on each side (it can leave the honest range:
  ``test_meamed_can_leave_the_honest_range`` in tests/test_aggregators.py);
* with exactly f finite Byzantine rows, every rule with a recorded (f, κ)-robustness bound
  (``kappa_bound``: trimmed mean, median, geometric median, Krum, NNM ∘ those) satisfies
  |F(x) − x̄_S|² ≤ (κ/|S|) Σ_{i∈S} |x_i − x̄_S|² for the honest live rows S, |S| = n_live − f.

Static shapes are few (n = 11 rows, d = 3; one (dtype, f) pair per dtype) so that every rule
compiles two programs in the fast profile (float32 and one of float16 / bfloat16, alternating
over the rules) and three in the long one; the mask makes the live count vary from 0 to 11.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redeem_jax import aggregators as A

N, D = 11, 3
# One f per dtype: three compilations per rule, both tolerances exercised across dtypes.
CONFIGS = [("float32", 2), ("float16", 1), ("bfloat16", 2)]
COMPOSED = [
    "nnm+trimmed_mean",
    "nnm+median",
    "nnm+krum",
    "nnm+geometric_median",
    "arc+krum",
    "clip+median",
    "bucketing+trimmed_mean",
    "arc+nnm+meamed",
]
NAMES = list(A.RULES) + COMPOSED
LONG = os.environ.get("REDEEM_JAX_FUZZ", "fast") == "long"


def configs(name):
    """Every (dtype, f) in the long campaign; in the fast profile float32 and one half-precision
    dtype, alternating over the rules (two compilations per rule keep the file fast)."""
    if LONG:
        return CONFIGS
    return [CONFIGS[0], CONFIGS[1 + NAMES.index(name) % 2]]


RANGE_EXACT = {"median", "trimmed_mean"}
POISONS = ["nan", "inf", "-inf", "1e38", "-1e38", "big", "near", "one_nan"]
EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}


@functools.cache
def compiled(name, f, dtype):
    fn = A.get(name)
    return jax.jit(lambda x, m: fn(x, f, m))


def poison(kind, honest_mean, rng):
    row = np.empty(D)
    if kind in ("nan", "inf", "-inf", "1e38", "-1e38"):
        row[:] = float(kind)
    elif kind == "big":
        row[:] = rng.choice([-1.0, 1.0], D) * 10.0 ** rng.uniform(2, 4.5, D)
    elif kind == "near":  # ALIE-like: inside the honest cloud, where rules cannot tell it apart
        row[:] = honest_mean + rng.normal(size=D) * 0.5
    else:  # one NaN entry, the rest plausible
        row[:] = honest_mean
        row[rng.integers(D)] = np.nan
    return row


def draw_case(seed, n_live, n_byz, kinds, loc, scale, dtype):
    rng = np.random.default_rng(seed)
    order = rng.permutation(N)
    live = np.zeros(N, bool)
    live[order[:n_live]] = True
    byz = np.zeros(N, bool)
    byz[order[:n_byz]] = True  # Byzantine rows are among the live ones
    x = loc + scale * rng.normal(size=(N, D))
    mu = x[live & ~byz].mean(0) if np.any(live & ~byz) else np.full(D, loc)
    for i, kind in zip(np.flatnonzero(byz), kinds):
        x[i] = poison(kind, mu, rng)
    with np.errstate(over="ignore"):
        xd = np.asarray(jnp.asarray(x, dtype))  # values as the rule sees them (1e38 -> inf in f16)
    return xd, live, byz


def check(name, cfg, seed, n_live, n_byz, kinds, loc, scale):
    dtype, f = cfg
    n_byz = min(n_byz, f, n_live)
    xd, live, byz = draw_case(seed, n_live, n_byz, kinds, loc, scale, dtype)
    out = compiled(name, f, dtype)(jnp.asarray(xd), jnp.asarray(live))
    assert out.dtype == jnp.dtype(dtype) and out.shape == (D,)
    got = np.asarray(out, np.float64)
    need = A.min_inputs(name, f)
    if n_live < need:
        want = np.asarray(xd[np.argmax(live)], np.float64) if n_live else np.zeros(D)
        np.testing.assert_array_equal(got, want, err_msg=f"{name}: fallback below min_inputs={need}")
        return
    if name == "mean":
        return
    assert np.all(np.isfinite(got)), f"{name} ({dtype}, f={f}, live={n_live}): non-finite output {got}"
    honest = np.asarray(xd[live & ~byz], np.float64)
    lo, hi = honest.min(0), honest.max(0)
    slack = 4 * EPS[dtype] * (np.abs(honest).max() + 1e-30)
    if name in RANGE_EXACT:
        assert np.all(got >= lo - slack) and np.all(got <= hi + slack), (name, got, lo, hi)
    if name == "meamed":
        w = hi - lo
        assert np.all(got >= lo - w - slack) and np.all(got <= hi + w + slack), (name, got, lo, hi)
    kappa = A.kappa_bound(name, n_live, f)
    byz_rows = np.asarray(xd[byz], np.float64)
    if kappa is not None and n_byz == f and np.all(np.isfinite(byz_rows)) and np.isfinite(kappa):
        mu = honest.mean(0)
        var = np.mean(np.sum((honest - mu) ** 2, axis=1))
        err = np.sqrt(np.sum((got - mu) ** 2))
        # Rounding of the output to the dtype (and float32 arithmetic) on top of the bound.
        tol = np.sqrt(D) * (2 * EPS[dtype] * (np.abs(honest).max() + 1.0)) + 1e-4 * np.sqrt(var)
        assert err <= np.sqrt(kappa * var) + tol, (
            f"{name} ({dtype}, n={n_live}, f={f}): |F - mean_S| = {err:.4g} above sqrt(kappa var) = "
            f"{np.sqrt(kappa * var):.4g} (kappa {kappa:.3g})"
        )


@pytest.mark.fuzz
@pytest.mark.parametrize("name", NAMES)
@settings()
@given(
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    n_live=st.integers(0, N),
    n_byz=st.integers(0, 2),
    kinds=st.lists(st.sampled_from(POISONS), min_size=2, max_size=2),
    loc=st.sampled_from([0.0, 5.0, -3.0, 100.0]),
    scale=st.sampled_from([1.0, 0.1, 3.0]),
)
def test_rule_under_poison_masks_and_dtypes(name, data, seed, n_live, n_byz, kinds, loc, scale):
    cfg = data.draw(st.sampled_from(configs(name)), label="dtype, f")
    check(name, cfg, seed, n_live, n_byz, kinds, loc, scale)


@pytest.mark.fuzz
@pytest.mark.parametrize("name", [n for n in NAMES if A.kappa_bound(n, 9, 2) is not None and n != "mean"])
@settings()
@given(
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    extra=st.integers(0, 4),
    kinds=st.lists(st.sampled_from(["1e38", "-1e38", "big", "near"]), min_size=2, max_size=2),
    loc=st.sampled_from([0.0, 5.0, -3.0]),
    scale=st.sampled_from([1.0, 0.1]),
)
def test_kappa_bound_with_exactly_f_finite_byzantine_rows(name, data, seed, extra, kinds, loc, scale):
    cfg = data.draw(st.sampled_from(configs(name)), label="dtype, f")
    # Live counts at and just above the precondition, exactly f Byzantine rows: the (f, κ) check
    # runs on every example (the first test reaches it only some of the time).
    f = cfg[1]
    n_live = min(N, A.min_inputs(name, f) + extra)
    check(name, cfg, seed, n_live, f, kinds, loc, scale)
