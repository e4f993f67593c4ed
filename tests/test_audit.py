"""Empirical privacy audits (redeem_jax.privacy.audit): Clopper–Pearson (Jagielski et al. 2020) and
one-run (Steinke, Nasr & Jagielski 2023) lower bounds on epsilon.

Acceptance (DESIGN: "empirical audits must stay below the claimed eps"): on one full-batch step
of the library's DP-SGD gradient, over 5 seeds, both audited bounds stay below
``accounting.epsilon(sigma, 1.0, 1, delta)``; the many-trials audit is not vacuous (> 0.3x the
claim at sigma = 1), and it catches a mechanism that adds less noise than it claims.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy import stats

from redeem_jax.privacy import accounting, audit

DELTA = 1e-5


def test_clopper_pearson_matches_beta_quantiles():
    k = np.array([0, 1, 7, 50, 99, 100])
    n = 100
    lo = audit.clopper_pearson(k, n, 0.05, "lower")
    hi = audit.clopper_pearson(k, n, 0.05, "upper")
    for ki, l, h in zip(k, lo, hi):
        want_lo = 0.0 if ki == 0 else stats.beta.ppf(0.05, ki, n - ki + 1)
        want_hi = 1.0 if ki == n else stats.beta.ppf(0.95, ki + 1, n - ki)
        assert l == pytest.approx(want_lo, abs=1e-12)
        assert h == pytest.approx(want_hi, abs=1e-12)
    # closed forms at the edges: k = 0 -> upper = 1 - alpha^(1/n); k = n -> lower = alpha^(1/n)
    assert hi[0] == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    assert lo[-1] == pytest.approx(0.05 ** (1 / n), rel=1e-9)
    # coverage: the one-sided bound fails at most alpha of the time
    rng = np.random.default_rng(0)
    draws = rng.binomial(200, 0.3, size=4000)
    assert np.mean(audit.clopper_pearson(draws, 200, 0.05, "lower") > 0.3) <= 0.05


def test_clopper_pearson_epsilon_cases():
    # perfect separation with few trials: bounded by what n trials can show, finite
    e = audit.clopper_pearson_epsilon(100, 100, 0, 100, alpha=0.05)
    assert 0 < e < math.log(100 / 0.5)
    # TPR = FPR: nothing to certify
    assert audit.clopper_pearson_epsilon(50, 100, 50, 100) == 0.0
    # delta larger than the lower TPR bound: the first ratio vanishes, never negative
    assert audit.clopper_pearson_epsilon(0, 100, 0, 100, delta=0.5) == 0.0
    # by hand: TPR_lo and FPR_hi at alpha/2 each
    tl = stats.beta.ppf(0.025, 900, 101)
    fh = stats.beta.ppf(0.975, 101, 900)
    want = max(math.log((tl - 1e-5) / fh), math.log((1 - fh - 1e-5) / (1 - tl)))
    assert audit.clopper_pearson_epsilon(900, 1000, 100, 1000, delta=1e-5) == pytest.approx(want, rel=1e-10)
    # more evidence never lowers the bound at the same rates
    assert audit.clopper_pearson_epsilon(9000, 10000, 1000, 10000) > audit.clopper_pearson_epsilon(90, 100, 10, 100)


@pytest.mark.parametrize("seed", range(3))
def test_no_signal_gives_zero(seed):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((2, 5000))
    assert audit.scores_epsilon(s[0], s[1], delta=DELTA).epsilon < 0.05
    inc = rng.random(1000) < 0.5
    assert audit.one_run_epsilon(rng.standard_normal(1000), inc, 100, 100, delta=DELTA) < 0.05


def test_one_run_p_value_and_bisection():
    # pure DP: the p-value is the Binomial tail at q = e^eps / (1 + e^eps)
    m, r, v = 1000, 200, 150
    for eps in (0.0, 0.5, 1.5):
        q = math.exp(eps) / (1 + math.exp(eps))
        assert audit.one_run_p_value(m, r, v, eps) == pytest.approx(stats.binom.sf(v - 1, r, q), rel=1e-12)
    # delta only adds to the p-value, so the bound can only go down
    e0 = audit.one_run_epsilon_from_counts(m, r, v, 0.0, 0.05)
    e1 = audit.one_run_epsilon_from_counts(m, r, v, 1e-5, 0.05)
    assert 0 < e1 <= e0
    assert audit.one_run_p_value(m, r, v, e0) == pytest.approx(0.05, abs=1e-6)
    # all guesses right: large bound; half right: none
    assert audit.one_run_epsilon_from_counts(m, r, r) > 3.0
    assert audit.one_run_epsilon_from_counts(m, r, r // 2) == 0.0
    # guesses come from the ranking: reversing the scores makes every guess wrong
    inc = np.arange(100) % 2 == 0
    assert audit.one_run_epsilon(inc.astype(float), inc, 50, 50) > 2.0
    assert audit.one_run_epsilon(-inc.astype(float), inc, 50, 50) == 0.0


def test_dp_sgd_audit_below_accountant_over_seeds():
    # sigma = 1.5: the accountant claims eps ~ 2.98 for one full-batch step at delta = 1e-5
    sigma = 1.5
    claim = accounting.epsilon(sigma, 1.0, 1, DELTA)
    assert 1.0 < claim < 4.0
    for seed in range(5):
        r = audit.audit_dp_sgd(jax.random.PRNGKey(seed), sigma, trials=20_000, canaries=2000, delta=DELTA)
        assert r.accountant == pytest.approx(claim)
        assert 0.0 <= r.clopper_pearson <= claim, (seed, r)
        assert 0.0 <= r.one_run <= claim, (seed, r)
        assert r.one_run > 0.3  # the one-run audit sees the signal too


def test_dp_sgd_audit_is_not_vacuous():
    # a strong canary at small sigma: the bound is a good fraction of the claim, still below it
    sigma = 1.0
    claim = accounting.epsilon(sigma, 1.0, 1, DELTA)
    for seed in range(2):
        r = audit.audit_dp_sgd(jax.random.PRNGKey(10 + seed), sigma, trials=50_000, canaries=1000, delta=DELTA)
        assert 0.3 * claim < r.clopper_pearson <= claim, (seed, r)


def test_audit_catches_underclaimed_noise():
    # a mechanism adding sigma = 0.4 noise (eps ~ 14) while claiming sigma = 2 (eps ~ 2.2): caught
    claim = accounting.epsilon(2.0, 1.0, 1, DELTA)
    r = audit.audit_dp_sgd(jax.random.PRNGKey(0), 0.4, trials=10_000, canaries=1000, delta=DELTA)
    assert r.clopper_pearson > claim
    assert r.one_run > claim


def test_bad_input():
    with pytest.raises(ValueError):
        audit.clopper_pearson(5, 3)
    with pytest.raises(ValueError):
        audit.clopper_pearson(1, 3, alpha=1.5)
    with pytest.raises(ValueError):
        audit.one_run_p_value(10, 5, 6, 1.0)
    with pytest.raises(ValueError):
        audit.one_run_epsilon(np.zeros(10), np.zeros(10, bool), 6, 6)
    with pytest.raises(ValueError):
        audit.one_run_epsilon(np.zeros(10), np.zeros(9, bool), 1, 1)
    with pytest.raises(ValueError):
        audit.scores_epsilon([1.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        audit.clopper_pearson_epsilon(1, 2, 1, 2, delta=1.0)
