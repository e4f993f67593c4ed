"""experiments/consensus_rate.py in --quick mode: the measured gossip rate against the spectral rate."""

import numpy as np
import pandas as pd
import pytest

import redeem_jax as rj

from _configs import load_experiment


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("consensus_rate")
    mod = load_experiment("consensus_rate")
    mod.main(["--quick", "--out", str(out)])
    return mod, out, pd.read_csv(out / "rates.csv")


def test_consensus_rate_writes_its_files(quick):
    mod, out, df = quick
    assert (out / "consensus_rate.png").stat().st_size > 10_000
    assert set(df["family"]) >= {"ring", "torus", "hypercube", "exponential", "one_peer_exponential", "random_regular"}
    # Every graph ran from 2 initial vectors; the random family over 2 different graphs.
    assert (df.groupby(["family", "n", "draw"])["seed"].nunique() == 2).all()
    rr = df[df["family"] == "random_regular"]
    assert rr["draw"].nunique() == 2 and rr["rho_theory"].nunique() == 2
    table = mod.TABLES["rates"](out).splitlines()
    assert len(table) == 2 + len(df.groupby(["family", "n"]))


def test_measured_rate_is_the_spectral_rate(quick):
    _, _, df = quick
    for _, r in df[df["rho_theory"] > 0].iterrows():
        assert abs(r["rho_measured"] - r["rho_theory"]) / r["rho_theory"] < 2e-3, dict(r)
    # The random graphs' theory is the second largest |eigenvalue| of the drawn W (dense NumPy).
    for draw, g in df[df["family"] == "random_regular"].groupby("draw"):
        W = np.asarray(rj.topology.random_regular(16, 4, seed=int(draw)).mixing_matrix(), np.float64)
        lam = np.sort(np.abs(np.linalg.eigvalsh(W)))
        assert g["rho_theory"].iloc[0] == pytest.approx(lam[-2], rel=1e-9)
    # One-peer exponential, n a power of 2: exact average after log2 n rounds from every start.
    one = df[df["family"] == "one_peer_exponential"]
    assert (one.loc[one["n"] == 16, "exact_after_rounds"] == 4).all()
    assert one.loc[one["n"] == 12, "exact_after_rounds"].isna().all()
