"""experiments/personalization.py: the --quick run (local_only and Ditto on digits shards, Ditto's
closed-form error against the Ditto algorithm run on Gaussian mean estimation)."""

import json
import math

import pandas as pd
import pytest

import redeem_jax as rj

from _configs import load_experiment


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    mod = load_experiment("personalization")
    out = tmp_path_factory.mktemp("personalization")
    return mod, out, mod.main(["--quick", "--out", str(out)])


def test_quick_run_writes_its_files_and_labels_every_axis(quick):
    mod, out, summary = quick
    for name in ("personalization.png", "ditto_theory.png"):
        assert (out / name).stat().st_size > 10_000, name
    for name in ("runs.csv", "results.csv", "ditto_theory.csv", "summary.json"):
        assert (out / name).exists(), name
    assert not (out / "_cells").exists()  # the per-sweep files are merged and removed
    assert json.loads((out / "summary.json").read_text())["quick"] is True
    assert summary["learning"]["traces"] == [1]  # each sweep compiled its round once
    for fig, axes in summary["axes"].items():
        for title, xlabel, ylabel in axes:
            assert title and xlabel and ylabel, (fig, title, xlabel, ylabel)


def test_local_only_fits_its_own_distribution_not_the_global_one(quick):
    mod, out, _ = quick
    res = pd.read_csv(out / "results.csv")
    assert (res["seeds"] == 2).all()
    assert set(res["variant"]) == {"local only", "Ditto (λ = 0.1)", "Ditto (λ = 1)"}
    lo = res[res["method"] == "local_only"].iloc[0]
    # Two classes per node: alone, a node is right on its own test rows but on the global test
    # set only for its two of the ten digits (at most ~20% plus chance on the rest), in every seed.
    assert lo["local_mean_min"] > lo["global_max"] + 0.4, lo.to_dict()
    assert lo["local_worst_min"] > lo["global_max"], lo.to_dict()
    assert (res["local_worst_max"] <= res["local_mean_max"] + 1e-12).all()
    # The rendered tables: one row per variant, one column per setting, "mean [min, max]" cells.
    for name in ("personalization", "worst_node", "global"):
        table = mod.TABLES[name](out)
        lines = table.splitlines()
        assert len(lines) == 2 + 3, table
        assert "digits · 2 classes / node · ring" in lines[0]
        for v in res["variant"].unique():
            assert any(line.startswith(f"| {v} |") and "[" in line for line in lines), (name, v)


def test_ditto_measured_error_matches_its_closed_form(quick):
    mod, out, _ = quick
    df = pd.read_csv(out / "ditto_theory.csv")
    assert set(df["tau2"]) == set(mod.DITTO["tau2"])
    n, m, d, s2 = mod.DITTO["n"], mod.DITTO["m"], mod.DITTO["d"], mod.DITTO["sigma2"]
    for _, r in df.iterrows():
        # The Ditto algorithm's personal models after its rounds, over independent draws of the
        # problem, against E‖vᵢ − μᵢ‖² of rj.theory.ditto_mse: within 3 standard errors (2000
        # draws; 3 SE is the Monte Carlo tolerance; the test would fail 0.3% of fixed seeds).
        assert r["theory"] == pytest.approx(rj.theory.ditto_mse(r["lam"], m, s2, r["tau2"], n, d))
        assert abs(r["measured"] - r["theory"]) <= 3 * r["se"], r.to_dict()
    opt = df[df["optimal"]]
    assert len(opt) == 3
    for _, r in opt.iterrows():
        assert r["lam"] == pytest.approx(s2 / (m * r["tau2"]))
        # The measured optimum lies within its 95% CI of the closed form.
        assert abs(r["measured"] - r["theory"]) <= r["ci95"], r.to_dict()
    for _, e in df[~df["optimal"]].iterrows():
        # Every other λ errs more than λ* (same draws: the paired excess), by more than 3 of its
        # standard errors where the closed form's excess is that large, and as the closed form says.
        assert abs(e["excess"] - e["excess_theory"]) <= 3 * e["excess_se"] + 1e-7, e.to_dict()
        if e["excess_theory"] > 6 * e["excess_se"]:
            assert e["excess"] > 3 * e["excess_se"], e.to_dict()
    assert (df["excess_theory"] >= 0).all()
    table = mod.TABLES["ditto_theory"](out)
    assert len(table.splitlines()) == 2 + 3 and all(math.isfinite(v) for v in opt["measured"])
