"""experiments/linear_speedup.py in --quick mode: it runs, writes its files, and they say something true."""

import json

import numpy as np
import pandas as pd

from _configs import load_experiment


def test_linear_speedup_quick(tmp_path):
    mod = load_experiment("linear_speedup")
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("speedup.csv", "speedup.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    df = pd.read_csv(tmp_path / "speedup.csv")
    assert sorted(zip(df.topology, df.n)) == [("ring", 4), ("ring", 9), ("torus", 9)]
    assert (df.seeds == 2).all() and json.loads((tmp_path / "summary.json").read_text())["quick"]
    # measured against closed form, generous on 2 seeds x 800 rounds (the strict check is test_linear_speedup)
    for q in ("avg", "cons"):
        z = (df[f"{q}_mean"] - df[f"theory_{q}"]) / df[f"{q}_se"]
        assert np.all(np.abs(z) < 5), z
        assert np.all(df[f"{q}_min"] <= df[f"{q}_mean"]) and np.all(df[f"{q}_mean"] <= df[f"{q}_max"])
    # linear speedup: E|x_bar - b|^2 = eta sigma^2 d / (n (2 - eta)), 9/4 times smaller at n = 9 than at 4
    # (2 seeds x 800 rounds: ~8% standard error each, so only the direction and rough size are checked)
    avg = dict(zip(zip(df.topology, df.n), df.avg_mean))
    assert 1.5 < avg["ring", 4] / avg["ring", 9] < 3.4
    assert abs(avg["ring", 9] / avg["torus", 9] - 1) < 1e-5  # same seeds: x_bar's path does not depend on W
    table = mod.TABLES["speedup"](tmp_path)
    assert table.count("\n") == 3 and "consensus, torus" in table
