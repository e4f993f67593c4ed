"""``rj.theory.kappa_bounds``: every recorded upper bound on κ by source, checked against the
paper's own closed form at a hand-computed point (n = 15, f = 5, so f/(n − 2f) = 1)."""

import math

import pytest

from redeem_jax import theory as th


def test_allouah2023_constants_match_the_papers_closed_forms():
    # Allouah et al. 2023, Table 1, written as in the paper with r = f/(n − 2f) = 5/5 = 1:
    # CWTM 6r(1 + r) = 12, CWMed and GM 4(1 + r)² = 16, Krum 6(1 + r) = 12;
    # NNM ∘ F: 8f/(n − f)·(κ_F + 1) = 8·5/10·13 = 52 (F = CWTM or Krum), 8·5/10·17 = 68 (F = GM).
    n, f = 15, 5
    expect = {
        "trimmed_mean": 12.0,
        "median": 16.0,
        "geometric_median": 16.0,
        "krum": 12.0,
        "nnm+trimmed_mean": 52.0,
        "nnm+krum": 52.0,
        "nnm+geometric_median": 68.0,
    }
    for rule, v in expect.items():
        assert th.kappa_bounds(rule, n, f) == {"allouah2023": pytest.approx(v)}, rule
    # A second point, off the symmetric r = 1: n = 10, f = 2, r = 1/3.
    assert th.kappa_bounds("trimmed_mean", 10, 2)["allouah2023"] == pytest.approx(6 / 3 * 4 / 3)
    assert th.kappa_bounds("median", 10, 2)["allouah2023"] == pytest.approx(4 * (4 / 3) ** 2)
    assert th.kappa_bounds("krum", 10, 2)["allouah2023"] == pytest.approx(6 * 4 / 3)


def test_sources_are_described_and_the_default_is_unchanged():
    for key, src in th.KAPPA_SOURCES.items():
        assert {"label", "cite", "status", "hypotheses", "rules"} <= set(src), key
        assert src["status"] in ("proven", "stated", "not recorded"), key
    for rule in ("trimmed_mean", "median", "geometric_median", "krum", "nnm+krum", "meamed", "centered_clipping"):
        for n, f in ((15, 1), (15, 6), (9, 2)):
            got = th.kappa_bounds(rule, n, f)
            # only sources with a checked constant appear, and the proven default is kappa_bound's
            assert all(th.KAPPA_SOURCES[k]["status"] != "not recorded" for k in got)
            assert got.get("allouah2023") == th.kappa_bound(rule, n, f)
            for v in got.values():
                assert v >= th.kappa_lower_bound(n, f) and math.isfinite(v)
    # no constant is drawn for a source that could not be checked, and none exists for MeaMed
    assert th.KAPPA_SOURCES["bareilles2026"]["status"] == "not recorded"
    assert th.kappa_bounds("meamed", 15, 5) == {}
