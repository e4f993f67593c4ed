"""Smoke + correctness of experiments/consensus_rate.py in --quick mode."""

import json

from _configs import load_experiment


def test_consensus_rate_quick(tmp_path):
    load_experiment("consensus_rate").main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "consensus_rate.png").stat().st_size > 10_000
    res = json.loads((tmp_path / "consensus_rate.json").read_text())["results"]
    assert {r["family"] for r in res} >= {"ring", "torus", "hypercube", "exponential", "one_peer_exponential"}
    for r in res:
        if r["rho_theory"] > 0:
            assert abs(r["rho_measured"] - r["rho_theory"]) / r["rho_theory"] < 0.02, r["label"]
        else:  # one-peer exponential, n a power of 2: exact average after log2 n rounds
            assert r["exact_after_rounds"] == (r["n"].bit_length() - 1), r["label"]
    n12 = [r for r in res if r["family"] == "one_peer_exponential" and r["n"] == 12]
    assert n12 and n12[0]["exact_after_rounds"] is None
