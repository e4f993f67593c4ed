"""experiments/lora_gap.py in --quick mode: FFA-LoRA exact, naive factor averaging off, SVD of the products in between."""

import pandas as pd
import pytest

from _configs import load_experiment


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_gap")
    mod = load_experiment("lora_gap")
    mod.main(["--quick", "--out", str(out)])
    return mod, out, pd.read_csv(out / "gap.csv")


def test_lora_gap_writes_its_files_and_orders_the_aggregations(quick):
    mod, out, df = quick
    assert (out / "lora_gap.png").stat().st_size > 10_000 and (out / "lora_gap.json").exists()
    assert set(df["aggregation"]) == {"naive", "product", "ffa"} and (df["seeds"] == 2).all()
    table = mod.TABLES["gap"](out).splitlines()
    assert len(table) == 2 + 3 and "ffa" in table[-1]
    g = df.set_index(["aggregation", "local_steps"])
    last = df["local_steps"].max()
    # FFA-LoRA aggregates exactly (float32 rounding); naive misses the factors' covariance once a
    # and b have both moved; the rank-r SVD of the mean product is never further than naive.
    assert (df[df["aggregation"] == "ffa"]["gap_max"] < 1e-5).all()
    assert g.loc[("naive", last), "gap_min"] > 1e-3
    for t in df["local_steps"].unique():
        assert g.loc[("product", t), "gap_max"] <= g.loc[("naive", t), "gap_max"] + 1e-7
    # After one step a has not moved (∂L/∂a = 0 at b = 0): every aggregation is exact then.
    assert g.loc[("naive", 1), "gap_max"] < 1e-5
