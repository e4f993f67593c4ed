"""experiments/byzantine_gossip.py in --quick mode: it runs, writes its files, and shows the effect."""

from _configs import load_experiment


def test_byzantine_gossip_quick(tmp_path):
    import json

    import numpy as np
    import pandas as pd

    import redeem_jax as rj
    from redeem_jax.experiment.build import build

    mod = load_experiment("byzantine_gossip")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "byzantine_gossip.png").stat().st_size > 10_000
    runs = pd.read_csv(tmp_path / "runs.csv")
    s = pd.read_csv(tmp_path / "results.csv").set_index(["rule", "attack"])
    assert len(runs) == 2 * 2 and set(runs["attack"]) == {"dissensus", "none"} and (s["seeds"] == 2).all()
    assert set(runs["rule"]) == {"clipped_gossip"} and (runs["diverged"] == 0).all()
    m = "node_test_accuracy_mean"
    for atk in ("dissensus", "none"):
        r, acc = s.loc[("clipped_gossip", atk)], runs.loc[runs["attack"] == atk, m]
        assert r[f"{m}_min"] == acc.min() and r[f"{m}_max"] == acc.max()
        assert abs(r[f"{m}_mean"] - acc.mean()) < 1e-5
    # The attack-free run keeps the rule and its b: the most Byzantine neighbours of an honest node
    # under attack, counted here on the dense mixing matrix.
    exp = build(rj.config.validate(mod.config("clipped_gossip", "dissensus", 1)))
    W, byz = exp.topology.mixing_matrix(0), ~np.asarray(exp.honest, bool)
    b = int(((W[~byz][:, byz] != 0).sum(1)).max())
    assert b >= 1 and json.loads((tmp_path / "meta.json").read_text())["tolerance_b"] == b
    c = mod.config("clipped_gossip", "none", 1, b)
    assert c.byzantine.num == 0 and c.aggregation.rule == "clipped_gossip" and c.aggregation.tolerance == b
    # ClippedGossip's radius bounds the dissensus attackers' pull (He et al. 2022): on every seed it
    # stays within 0.1 of its own attack-free accuracy, far above chance.
    by = runs.pivot(index="seed", columns="attack", values=m)
    assert (by["dissensus"] > by["none"] - 0.1).all() and (by["dissensus"] > 0.5).all(), by
    table = mod.TABLES["torus"](tmp_path)
    assert "| rule | no attacker | dissensus |" in table and "| ClippedGossip | 0." in table
    assert "over 2 seeds" in table and table.count("\n") == 4
