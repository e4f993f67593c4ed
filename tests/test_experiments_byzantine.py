"""The Byzantine experiments in --quick mode: they run, write their files, and show the effect."""

from _configs import load_experiment


def test_robust_gossip_quick(tmp_path):
    import numpy as np
    import pandas as pd

    mod = load_experiment("robust_gossip")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "robust_gossip.png").stat().st_size > 10_000
    s = pd.read_csv(tmp_path / "robust_gossip.csv").set_index(["rule", "f"])
    runs = pd.read_csv(tmp_path / "runs.csv").set_index(["rule", "f", "seed"]).sort_index()
    assert (s.seeds == 2).all() and len(runs) == 2 * 2 * 2
    assert s.loc[("mean", 1), "byzantine_weight"] > 0
    # One dissensus attacker hurts plain gossip more than ClippedGossip, on every seed.
    assert (runs.loc[("clipped_gossip", 1)].node_accuracy > runs.loc[("mean", 1)].node_accuracy).all()
    # Without an attacker ClippedGossip's radius clips nothing on two cliques: the same run as gossip.
    np.testing.assert_allclose(
        runs.loc[("clipped_gossip", 0)].node_accuracy, runs.loc[("mean", 0)].node_accuracy, atol=1e-3
    )
    assert s.loc[("mean", 1), "node_accuracy_min"] <= s.loc[("mean", 1), "node_accuracy_mean"]
    table = mod.TABLES["two_cliques"](tmp_path)
    assert "ClippedGossip" in table and "plain gossip" in table and table.count("\n") == 3


def test_kappa_quick(tmp_path):
    import numpy as np
    import pandas as pd

    mod = load_experiment("kappa")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "kappa.png").stat().st_size > 10_000
    seeds = pd.read_csv(tmp_path / "kappa_seeds.csv")
    g = pd.read_csv(tmp_path / "kappa.csv")
    assert len(g) == 4 and (g.seeds == 2).all()
    # the construction attains the universal lower bound f/(n-2f) for every rule
    assert (g.construction >= g.lower_bound * (1 - 1e-5)).all()
    # the adversarial estimate is at least the construction's, and a proven bound is never passed
    assert (seeds.adversarial >= seeds.construction).all()
    assert (seeds.adversarial <= seeds.upper_bound).all() and np.isfinite(seeds.upper_bound).all()
    # the search alone (Gaussian and perturbed starts, all rows free) reaches f/(n-2f) on every seed
    assert (seeds.search_all_rows >= seeds.lower_bound * (1 - 1e-4)).all()
    table = mod.TABLES["kappa"](tmp_path)
    assert table.count("\n") == 5 and "nnm+krum" in table


def test_byzantine_federated_quick(tmp_path):
    import numpy as np

    mod = load_experiment("byzantine_federated")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "byzantine_federated.png").stat().st_size > 10_000
    runs = mod.read_csv(tmp_path / "runs.csv")
    s = mod.read_csv(tmp_path / "accuracy.csv").set_index("rule")
    assert set(runs["attack"]) == {"nan"}
    assert len(runs) == 2 * 2 and (s["seeds"] == 2).all()
    # A NaN attacker averaged in by the mean makes the model NaN: diverged on every seed, no accuracy.
    mean = runs[runs["rule"] == "mean"]
    assert (mean["diverged"] == 1).all() and mean["node_test_accuracy_mean"].isna().all()
    # NNM ∘ trimmed mean never averages the NaN row in: finite and well above chance on every seed.
    nnm = runs[runs["rule"] == "nnm+trimmed_mean"]
    assert (nnm["diverged"] == 0).all() and (nnm["node_test_accuracy_mean"] > 0.5).all()
    assert np.isclose(s.loc["nnm+trimmed_mean", "node_test_accuracy_mean_min"], nnm["node_test_accuracy_mean"].min())
    table = mod.TABLES["alpha_1"](tmp_path)
    assert "| mean | diverged (2/2) |" in table and "over 2 seeds" in table
