"""experiments/breakdown.py (robust-gossip breakdown on two_worlds, issue 16): the graph's
structure and spectrum, the weighted rules against the library's, and the --quick run."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import redeem_jax as rj
from redeem_jax.byzantine import rules as R

from _configs import load_experiment


@pytest.fixture(scope="module")
def mod():
    return load_experiment("breakdown")


@pytest.mark.parametrize("n", [4, 8, 10])
def test_two_worlds_structure_and_spectrum(n):
    h = n // 2
    A = np.asarray(rj.topology.two_worlds(n).adjacency, float)
    assert np.array_equal(A, A.T) and np.all(A.sum(1) == h)
    i = np.arange(h)
    assert np.all(A[i, i + h] == 1) and A[:h, h:].sum() == h  # the cross edges are a perfect matching
    eig = np.linalg.eigvalsh(np.diag(A.sum(1)) - A)
    want = np.sort(np.r_[0.0, 2.0, np.full(h - 1, h), np.full(h - 1, h + 2.0)])
    np.testing.assert_allclose(eig, want, atol=1e-9)
    with pytest.raises(ValueError, match="even"):
        rj.topology.two_worlds(n + 1)


def test_weighted_mu_min_and_fiedler(mod):
    m, a, c = 5, 0.1, 0.03
    lam, vec = np.linalg.eigh(mod.honest_laplacian(m, a, c))
    assert abs(lam[1] - 2 * c) < 1e-12  # μ_min = 2c (2c < m·a)
    u = np.r_[np.ones(m), -np.ones(m)] / np.sqrt(2 * m)
    assert abs(abs(vec[:, 1] @ u) - 1) < 1e-9


def test_weighted_rules_equal_library_at_count_budget(mod):
    """With δᵢ = the largest weight (the library's budget for one Byzantine neighbour) the
    weight-budget rules of the experiment are rules.clipped_gossip / rules.cs_plus."""
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(k[0], (3,))
    msgs = jax.random.normal(k[1], (6, 3)) * 2
    w = jax.random.uniform(k[2], (6,)) / 8
    mask = jnp.array([True, True, True, False, True, True])
    delta = R.byzantine_weight_budget(w, mask, 1)
    np.testing.assert_allclose(
        mod.clipped_gossip_w(x, msgs, w, mask, delta), R.clipped_gossip(x, msgs, w, 0.0, mask, 1), rtol=1e-6
    )
    np.testing.assert_allclose(
        mod.cs_plus_w(x, msgs, w, mask, delta, 0.7), R.cs_plus(x, msgs, w, 0.0, mask, 1, 0.7), rtol=1e-6
    )


def test_breakdown_quick(mod, tmp_path):
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("error.csv", "breakdown.csv", "breakdown.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    bd = pd.read_csv(tmp_path / "breakdown.csv").set_index("rule")
    err = pd.read_csv(tmp_path / "error.csv")
    assert (bd.seeds == 2).all()
    # issue 16's acceptance: CS+ breaks down no earlier than ClippedGossip, on every seed
    assert bd.loc["cs_plus", "breakdown_over_bstar_min"] >= bd.loc["clipped_gossip", "breakdown_over_bstar_max"]
    # no rule beats the impossibility bound b* = μ_min/2 (the mirror attack makes the worlds
    # indistinguishable there), and plain gossip breaks at the first b > 0
    assert (bd.breakdown_over_bstar_max <= 1 + 1e-9).all()
    assert bd.loc["gossip", "breakdown_over_bstar_max"] == err[err.b > 0].b_over_bstar.min()
    # below the bound CS+ reaches the honest average (E_T ≪ threshold) under every attack
    below = err[(err.rule == "cs_plus") & (err.b_over_bstar < 1 - 1e-9)]
    assert len(below) and (below.error_max < 0.05).all()
    table = mod.TABLES["breakdown"](tmp_path)
    assert "CS+" in table and "ClippedGossip" in table and table.count("\n") == 4
