"""experiments/byzantine_gossip.py in --quick mode: it runs, writes its files, and shows the effect."""

from _configs import load_experiment


def test_byzantine_gossip_quick(tmp_path):
    import pandas as pd

    mod = load_experiment("byzantine_gossip")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "byzantine_gossip.png").stat().st_size > 10_000
    runs = pd.read_csv(tmp_path / "runs.csv")
    s = pd.read_csv(tmp_path / "results.csv").set_index(["rule", "attack"])
    assert len(runs) == 2 * 2 and set(runs["attack"]) == {"dissensus"} and (s["seeds"] == 2).all()
    assert (runs["diverged"] == 0).all()
    m = "node_test_accuracy_mean"
    for rule in ("mean", "clipped_gossip"):
        r, acc = s.loc[(rule, "dissensus")], runs.loc[runs["rule"] == rule, m]
        assert r[f"{m}_min"] == acc.min() and r[f"{m}_max"] == acc.max()
        assert abs(r[f"{m}_mean"] - acc.mean()) < 1e-5
    # Dissensus pushes plain gossip's honest nodes apart; ClippedGossip's radius bounds the
    # attackers' pull (He et al. 2022), so it is ahead on every seed.
    by = runs.pivot(index="seed", columns="rule", values=m)
    assert (by["clipped_gossip"] > by["mean"] + 0.1).all(), by
    table = mod.TABLES["torus"](tmp_path)
    assert "| plain gossip (mean) |" in table and "| ClippedGossip |" in table
    assert "over 2 seeds" in table and table.count("\n") == 5
