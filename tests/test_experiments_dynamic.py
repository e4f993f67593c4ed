"""experiments/dynamic_networks.py: the --quick run, and its exact renormalized second moment."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import redeem_jax as rj
from redeem_jax.network import unreliable as ur

from _configs import load_experiment


@pytest.fixture(scope="module")
def dyn():
    return load_experiment("dynamic_networks")


@pytest.mark.parametrize(
    "base",
    [rj.topology.ring(8), rj.topology.erdos_renyi(7, 0.5, seed=1), rj.topology.star(6)],
    ids=["ring8", "er7", "star6"],
)
@pytest.mark.parametrize("p", [0.3, 0.8])
def test_renormalize_second_moment_equals_full_enumeration(dyn, base, p):
    # Local enumeration (pairs of rows that share a link) against the library's enumeration of
    # all 2^m link patterns: the same E[W^T (I-J) W] up to float rounding.
    topo = ur.link_failures(base, p, "renormalize")
    np.testing.assert_allclose(
        dyn.renormalize_second_moment(topo), ur.enumerate_second_moment(topo), rtol=0, atol=1e-12
    )


def test_dynamic_networks_quick(dyn, tmp_path):
    summary = dyn.main(["--quick", "--out", str(tmp_path)])
    for name in ("dynamic_contraction.png", "dynamic_dsgd.png", "dynamic_robust.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    for name in ("contraction.csv", "contraction.json", "dsgd.csv", "robust.csv", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "summary.json").read_text())["quick"] is True
    # Every axis of every figure has a title and both axis labels.
    for fig, axes in summary["axes"].items():
        for title, xlabel, ylabel in axes:
            assert title and xlabel and ylabel, (fig, title, xlabel, ylabel)

    rows = json.loads((tmp_path / "contraction.json").read_text())
    assert {r["model"] for r in rows} == {
        "epidemic_oracle",
        "epidemic_local",
        "link_failures_self",
        "link_failures_renormalize",
        "churn_self",
        "pairwise",
        "random_matching",
    }
    for r in rows:
        what = f"{r['model']} {r['param']}={r['value']}"
        # E r(v) = lambda for the top eigenvector v; E r(x) = tr(S)/(n-1) for isotropic x: both exact.
        assert abs(r["worst_mean"] - r["lambda_theory"]) <= 5 * r["worst_se"], what
        assert abs(r["iso_mean"] - r["trace_theory"]) <= 5 * r["iso_se"], what
        # Along a trajectory every conditional expectation is <= lambda.
        assert r["traj_mean"] <= r["lambda_theory"] + 5 * r["worst_se"], what
        assert r["trace_theory"] <= r["lambda_theory"] + 1e-12, what
    # EL-Oracle's closed form (de Vos et al. 2023): (n-1-s)/((s+1)(n-1)).
    el = [r for r in rows if r["model"] == "epidemic_oracle"]
    for r in el:
        n, s = r["n"], r["value"]
        assert r["lambda_theory"] == pytest.approx((n - 1 - s) / ((s + 1) * (n - 1)), rel=1e-9)

    dsgd = pd.read_csv(tmp_path / "dsgd.csv")
    last = dsgd.sort_values("round").groupby("graph").tail(1).set_index("graph")
    d = summary["dsgd"]
    assert d["traces"] == [1]  # each graph's seed sweep compiled its round once
    assert (last["node_test_accuracy_mean_min"] > 0.15).all()  # learning, above 10-class chance
    # Messages: EL-Oracle s = 2 sends exactly s models per node per round; on a ring whose links
    # are up with p = 0.5 each node sends Bin-distributed counts with mean 2 p per round.
    rounds, n, seeds = d["rounds"], d["n"], summary["seeds"]
    el2 = last.loc["EL-Oracle s = 2"]
    assert el2["models_sent_per_node_min"] == el2["models_sent_per_node_max"] == 2 * rounds
    lf = last.loc["ring, link failures p = 0.5"]
    sd = math.sqrt(4 * rounds * 0.25 / n / seeds)  # per-node count: (2/n) * sum over rounds of Bin(n, p)
    assert abs(lf["models_sent_per_node_mean"] - 2 * 0.5 * rounds) <= 5 * sd
    assert lf["models_sent_per_node_max"] < 2 * rounds  # some links were down

    # docs/results.md's tables render from the files the run wrote (one row per graph, setting).
    tables = {k: f(tmp_path).splitlines() for k, f in dyn.TABLES.items()}
    assert len(tables["dsgd"]) == 2 + len(last) and all(r.endswith("| 2 |") for r in tables["dsgd"][2:])
    assert len(tables["contraction"]) == 2 + len(rows)

    rob = pd.read_csv(tmp_path / "robust.csv")
    fin = rob[rob["round"] == rob["round"].max()]
    assert np.isfinite(fin["consensus_distance_max"]).all()
    assert (fin["node_test_accuracy_mean_min"] > 0.15).all()
