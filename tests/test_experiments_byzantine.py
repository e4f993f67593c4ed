"""The Byzantine experiments in --quick mode: they run, write their files, and show the effect."""

from _configs import load_experiment


def _metropolis_bound(graph, byzantine):
    """μ_min/2 of the honest part of ``graph`` under Metropolis–Hastings weights, dense NumPy: the
    independent reference for the spectral breakdown bound the experiment draws."""
    import networkx as nx
    import numpy as np

    A = nx.to_numpy_array(graph)
    deg = A.sum(1)
    W = A / (1 + np.maximum(deg[:, None], deg[None, :]))
    h = ~np.asarray(byzantine)
    Wh = W[np.ix_(h, h)]
    return np.linalg.eigvalsh(np.diag(Wh.sum(1)) - Wh)[1] / 2


def test_robust_gossip_quick(tmp_path):
    import json

    import networkx as nx
    import numpy as np
    import pandas as pd

    mod = load_experiment("robust_gossip")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "robust_gossip.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == 2
    s = pd.read_csv(tmp_path / "robust_gossip.csv").set_index(["graph", "rule", "f"])
    runs = pd.read_csv(tmp_path / "runs.csv").set_index(["graph", "rule", "f", "seed"]).sort_index()
    # Both graphs, gossip and ClippedGossip at f = 1, two seeds each; the seeds column counts them.
    assert set(s.index.get_level_values("graph")) == {"two_cliques", "dumbbell"} and len(runs) == 2 * 2 * 2
    assert (s.seeds == 2).all()
    # δ in closed form: an attacker inside a k-clique, away from the bridge, has Metropolis weight
    # 1/(1 + (k - 1)) = 1/k at its clique mates (k = 10 in two_cliques(20), 8 in barbell(8, 4)).
    assert np.isclose(s.loc[("two_cliques", "mean", 1), "byzantine_weight"], 1 / 10)
    assert np.isclose(s.loc[("dumbbell", "mean", 1), "byzantine_weight"], 1 / 8)
    # The drawn bound μ_min/2 equals a dense computation from the networkx graph, and δ is past it.
    byz = np.arange(20) == 1
    two = nx.disjoint_union(nx.complete_graph(10), nx.complete_graph(10))
    two.add_edge(9, 10)
    for g, ref in (("two_cliques", two), ("dumbbell", nx.barbell_graph(8, 4))):
        bound = s.loc[(g, "mean", 1), "breakdown_bound"]
        np.testing.assert_allclose(bound, _metropolis_bound(ref, byz), rtol=1e-9)
        assert 0 < bound < s.loc[(g, "mean", 1), "byzantine_weight"]
        # One dissensus attacker: plain gossip leaves the floats on every seed (marked diverged,
        # no mean), ClippedGossip stays finite and accurate on every seed.
        assert s.loc[(g, "mean", 1), "diverged"] == 2 and np.isnan(s.loc[(g, "mean", 1), "node_accuracy_mean"])
        assert s.loc[(g, "clipped_gossip", 1), "diverged"] == 0
        clipped = runs.loc[(g, "clipped_gossip", 1)]
        assert np.isfinite(clipped.consensus_distance).all() and (clipped.node_accuracy > 0.8).all()
        assert (clipped.node_accuracy > runs.loc[(g, "mean", 1)].node_accuracy).all()
        table = mod.TABLES[g](tmp_path)
        assert "diverged (2/2" in table and "ClippedGossip" in table and table.count("\n") == 3
    assert mod.TABLES["consensus"](tmp_path).count("diverged (2/2)") == 2


def test_kappa_quick(tmp_path):
    import numpy as np
    import pandas as pd

    from redeem_jax import theory as th

    mod = load_experiment("kappa")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "kappa.png").stat().st_size > 10_000
    seeds = pd.read_csv(tmp_path / "kappa_seeds.csv")
    g = pd.read_csv(tmp_path / "kappa.csv")
    assert len(g) == 4 and (g.seeds == 2).all() and set(g.rule) == {"trimmed_mean", "krum"}
    # one column per source with a checked constant, equal to theory's value; upper_bound = tightest proven
    proven = [c for c in g.columns if c.startswith("bound_") and th.KAPPA_SOURCES[c[6:]]["status"] == "proven"]
    assert "bound_allouah2023" in proven
    for r in g.itertuples():
        for k, v in th.kappa_bounds(r.rule, r.n, r.f).items():
            assert getattr(r, f"bound_{k}") == v
    assert np.allclose(g.upper_bound, g[proven].min(axis=1))
    # the construction attains the universal lower bound f/(n-2f) for every rule
    assert (g.construction >= g.lower_bound * (1 - 1e-5)).all()
    # adversarial >= construction on every seed, and no proven bound is ever passed
    assert (seeds.adversarial >= seeds.construction).all()
    for c in proven:
        assert np.isfinite(seeds[c]).all() and (seeds.adversarial <= seeds[c]).all()
    # the search alone (Gaussian and perturbed starts, all rows free) reaches f/(n-2f) on every seed,
    # and for Krum it beats the construction (Krum's κ is not attained by the symmetric input)
    assert (seeds.search_all_rows >= seeds.lower_bound * (1 - 1e-4)).all()
    krum = seeds[seeds.rule == "krum"]
    assert (krum.adversarial > 1.5 * krum.construction).all()
    table = mod.TABLES["kappa"](tmp_path)
    assert table.count("\n") == 5 and "| krum | 2 |" in table and "Allouah et al. 2023 (proven)" in table


def test_byzantine_federated_quick(tmp_path):
    import json

    import numpy as np

    from redeem_jax.byzantine import attacks

    mod = load_experiment("byzantine_federated")
    mod.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "byzantine_federated.png").stat().st_size > 10_000
    runs = mod.read_csv(tmp_path / "runs.csv")
    s = mod.read_csv(tmp_path / "accuracy.csv").set_index("attack")
    assert list(dict.fromkeys(runs["attack"])) == ["sign_flip", "ipm", "nan"] and set(runs["rule"]) == {"mean"}
    assert len(runs) == 3 * 2 and (s["seeds"] == 2).all()
    # IPM's -ε·mean is sign flipping's -scale·mean at scale ε: both columns come from one compile.
    h = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_array_equal(attacks.sign_flip(h, 2, scale=mod.IPM_EPSILON), attacks.ipm(h, 2))
    traces = json.loads((tmp_path / "meta.json").read_text())["traces"]
    assert traces == {"alpha=1, mean, sign_flip+ipm": [1], "alpha=1, mean, nan": [1]}
    # A NaN attacker averaged in by the mean makes the model NaN: diverged on every seed, no accuracy.
    nan = runs[runs["attack"] == "nan"]
    assert (nan["diverged"] == 1).all() and nan["node_test_accuracy_mean"].isna().all()
    # Under -s·mean the mean applies (n - f - f·s)/n of the honest step: 0.6 at s = 1, 0.78 at IPM's
    # ε = 0.1. Both train (finite, above chance) and the longer step is ahead on every seed.
    by = {a: runs[runs["attack"] == a].set_index("seed") for a in ("sign_flip", "ipm")}
    for a, r in by.items():
        assert (r["diverged"] == 0).all() and (r["node_test_accuracy_mean"] > 0.5).all()
        assert np.isclose(s.loc[a, "node_test_accuracy_mean_min"], r["node_test_accuracy_mean"].min())
    assert (by["ipm"]["test_loss"] < by["sign_flip"]["test_loss"]).all()
    table = mod.TABLES["alpha_1"](tmp_path)
    assert "| rule | sign flip | IPM (ε = 0.1) | NaN |" in table and "over 2 seeds" in table
    assert table.splitlines()[-1].startswith("| mean | 0.") and table.splitlines()[-1].endswith("| diverged (2/2) |")
