"""experiments/recommendation.py and experiments/detection.py: the --quick runs, their files and
one real property each."""

import json

import numpy as np
import pandas as pd
import pytest

from _configs import load_experiment


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec")
    return out, load_experiment("recommendation").main(["--quick", "--out", str(out)])


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    return out, load_experiment("detection").main(["--quick", "--out", str(out)])


def _figure_checks(out, summary, name):
    assert (out / name).stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["quick"] is True
    for title, xlabel, ylabel in summary["axes"][name]:
        assert title and xlabel and ylabel, (title, xlabel, ylabel)


def test_recommendation_quick_files_and_tracking_beats_dsgd_on_the_ring(rec):
    """On the ring, D-SGD with a constant step keeps V_i − V̄ = O(ηζ/(1 − λ₂)) and a non-zero
    mean item gradient at V̄; DIGing's fixed point is consensual and stationary. So the network's
    objective (train RMSE at V̄) ends lower with tracking at every seed: --quick (16 nodes, 600
    rounds, 2 seeds) measured 0.442 for DIGing against 0.578–0.595 for D-SGD; asserted with the
    worst DIGing seed at most 0.85x the best D-SGD seed."""
    out, summary = rec
    _figure_checks(out, summary, "recommendation.png")
    curves = pd.read_csv(out / "curves.csv")
    fin = pd.read_csv(out / "final.csv").set_index("setting")
    assert {"D-SGD, ring", "DIGing, ring"} <= set(fin.index)
    assert (fin["seeds"] == 2).all() and (curves["seeds"] == 2).all()
    d, t = fin.loc["D-SGD, ring"], fin.loc["DIGing, ring"]
    assert t["train_rmse_consensus_max"] < 0.85 * d["train_rmse_consensus_min"], (t, d)
    # DIGing sends twice the bytes (model and tracker) per round.
    assert t["bytes_per_node"] == pytest.approx(2 * d["bytes_per_node"])
    # Learning happened: RMSE fell from the initial factors' and ranking beats chance (3/7).
    r0 = curves[(curves["setting"] == "DIGing, ring") & (curves["round"] == 0)].iloc[0]
    assert t["test_rmse_mean"] < 0.9 * r0["test_rmse_mean"]
    assert t["hr@3_mean"] > 3 / 7
    mod = load_experiment("recommendation")
    assert "DIGing, ring" in mod.TABLES["convergence"](out)


def test_detection_quick_files_and_collaboration_wins_at_every_node(det):
    """Gossip-averaged Gaussian statistics (ring, complete graph) give every node a higher AUROC
    than its local-only detector, at every node and seed; the complete graph (one uniform step
    = the exact average) equals the centralized NumPy detector."""
    out, summary = det
    _figure_checks(out, summary, "detection.png")
    per = pd.read_csv(out / "per_node.csv").pivot_table(index=["seed", "node"], columns="method", values="auroc")
    assert len(per) == 2 * 8
    local = per["Gaussian, local"].to_numpy()
    for m in ("Gaussian, gossip on a ring", "Gaussian, complete graph"):
        assert (per[m].to_numpy() > local).all(), m
    central = np.repeat(summary["centralized_auroc"], 8)
    np.testing.assert_allclose(per["Gaussian, complete graph"].to_numpy(), central, atol=2e-3)
    assert per["autoencoder, D-SGD on a ring"].mean() > per["autoencoder, local"].mean()
    assert set(pd.read_csv(out / "sorted.csv")["seeds"]) == {2}
    mod = load_experiment("detection")
    assert "Gaussian, complete graph" in mod.TABLES["auroc"](out)
