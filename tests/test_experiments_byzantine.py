"""The Byzantine experiments in --quick mode: they run, write their files, and show the effect."""

import json

from _configs import load_experiment


def test_robust_gossip_quick(tmp_path):
    records = load_experiment("robust_gossip").main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "robust_gossip.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "robust_gossip.json").read_text()) == json.loads(json.dumps(records))
    by = {(r["rule"], r["f"]): r for r in records}
    assert by[("mean", 1)]["byzantine_weight"] > 0
    # One dissensus attacker already hurts plain gossip more than ClippedGossip.
    assert by[("clipped_gossip", 1)]["node_accuracy"] > by[("mean", 1)]["node_accuracy"]


def test_kappa_quick(tmp_path):
    records = load_experiment("kappa").main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "kappa.png").exists()
    for r in records:
        assert r["measured"] >= r["lower_bound"] * (1 - 1e-5)
        assert r["upper_bound"] is None or r["measured"] <= r["upper_bound"]


def test_byzantine_federated_quick(tmp_path):
    records = load_experiment("byzantine_federated").main(["--quick", "--out", str(tmp_path)])
    for suffix in ("json", "md", "png"):
        assert (tmp_path / f"byzantine_federated.{suffix}").exists()
    assert len(records) == 9
    assert "| nnm+trimmed_mean |" in (tmp_path / "byzantine_federated.md").read_text()
