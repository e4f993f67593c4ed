"""Robust gossip on a 4×4 torus with f = n/5 Byzantine nodes: every decentralized rule × attack.

The setting of the shipped ``configs/byzantine_gossip.py`` (16 nodes on a 4×4 torus with
Metropolis–Hastings weights, 3 Byzantine nodes at random placement drawn with seed 0, D-SGD with
momentum 0.9, lr 0.05, batch 16, digits MLP (64), 200 rounds): the decentralized rules plain
gossip ("mean"), ClippedGossip (He, Karimireddy & Jaggi 2022), IOS (Wu et al. 2023), CS+
(Gaucher et al. 2025) and BRIDGE's trimmed mean (Yang & Bajwa 2019) under the dissensus
(He et al. 2022), sign-flip, IPM (Xie et al. 2020) and ALIE (Baruch et al. 2019, z = 5) attacks,
plus the attack-free reference (plain gossip, no Byzantine node). Each cell is the mean test
accuracy of the honest nodes' own models at the final round.

Each (rule, attack) is one ``rj.sweep`` over seeds (one compile, asserted; the seed redraws the
initial model, the minibatches and the attackers' randomness; the partition and the Byzantine
placement are those of the config's seed 0). A run whose honest test loss is not finite is
diverged: NaN accuracy in ``runs.csv``, 'diverged' in the table and on the figure.

    python experiments/byzantine_gossip.py --out docs/results/byzantine_gossip   # 800 s
    python experiments/byzantine_gossip.py --quick --out /tmp/byz_gossip          # the test's run

Measured on the shared 2-core machine at load 8–14: 800 s wall for the full run (21 sweeps of
3 seeds, 20–100 s each); the --quick run takes 90–190 s there (two compiles dominate).

Writes in DIR: ``runs.csv`` (one row per rule, attack and seed), ``results.csv`` (per rule and
attack: mean, min and max over seeds, seed and diverged counts), ``meta.json`` (sizes, wall time,
traces per sweep) and ``byzantine_gossip.png`` (honest accuracy per attack, one point per rule,
mean over seeds with min–max bars; the attack-free reference as a line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _results as R  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax.experiment.sweep import final  # noqa: E402

RULES = ("mean", "clipped_gossip", "ios", "cs_plus", "trimmed_mean")
ATTACKS = ("dissensus", "sign_flip", "ipm", "alie")
NAMES = {"mean": "plain gossip (mean)", "clipped_gossip": "ClippedGossip", "ios": "IOS", "cs_plus": "CS+",
         "trimmed_mean": "BRIDGE (trimmed mean)", "none": "no attacker (reference)"}  # fmt: skip
ATTACK_NAMES = {"dissensus": "dissensus", "sign_flip": "sign flip", "ipm": "IPM", "alie": "ALIE (z = 5)"}
ALIE_Z = 5.0
M = "node_test_accuracy_mean"


def config(rule: str, attack: str, rounds: int):
    """configs/byzantine_gossip.py with ``rule`` and ``attack`` ('none': no Byzantine node)."""
    from redeem_jax.configs.byzantine_gossip import get_config

    c = get_config()
    c.compare.key, c.compare.choices, c.compare.reference = "", (), ""
    c.num_rounds = rounds
    c.eval_every = rounds
    c.progress = False
    c.plots = False
    c.aggregation.rule = rule
    if attack == "none":
        c.byzantine.num = 0
    else:
        c.byzantine.attack = attack
        if attack == "alie":
            c.byzantine.strength = ALIE_Z
    return c


def run(cells, rounds, seeds):
    """Per-seed final rows (a DataFrame) and the traces of every sweep."""
    import pandas as pd

    frames, traces = [], {}
    for rule, atk in cells:
        t = time.perf_counter()
        full = rj.sweep(config(rule, atk, rounds), {"seed": seeds}, progress=False)
        tr = full.attrs["traces"]
        assert list(tr) == [1], (rule, atk, tr)  # the seeds share one compile
        df = final(full)
        df["rule"], df["attack"] = rule, atk
        frames.append(df)
        traces[f"{rule}, {atk}"] = list(tr)
        print(f"[{len(frames)}/{len(cells)}] {rule:15s} {atk:10s} acc " + ", ".join(f"{x:.3f}" for x in df[M])
              + f" ({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    runs = pd.concat(frames, ignore_index=True)
    diverged = ~np.isfinite(runs["node_test_loss_mean"].to_numpy(float))
    runs["diverged"] = diverged.astype(int)
    runs.loc[diverged, M] = np.nan  # no accuracy for a NaN model
    return runs[["rule", "attack", "seed", M, "node_test_loss_mean", "diverged"]], traces


def summarize(runs):
    by = ["rule", "attack"]
    s = R.over_seeds(runs, by, [M])
    s["diverged"] = runs.groupby(by, sort=False)["diverged"].sum().to_numpy()
    return s


def _cell(r) -> str:
    if r is None:
        return "—"
    if r["diverged"] > 0:
        return f"diverged ({int(r['diverged'])}/{int(r['seeds'])})"
    return R.fmt_band(r[f"{M}_mean"], r[f"{M}_min"], r[f"{M}_max"])


def torus_table(folder: Path) -> str:
    """Rule × attack: honest nodes' test accuracy, mean [min, max] over seeds."""
    import pandas as pd

    s = pd.read_csv(Path(folder) / "results.csv")
    cell = {(r["rule"], r["attack"]): r for _, r in s.iterrows()}
    attacks = [a for a in dict.fromkeys(s["attack"]) if a != "none"]
    rules = [r for r in dict.fromkeys(s["rule"]) if any((r, a) in cell for a in attacks)]
    rows = [[NAMES.get(rule, rule), *(_cell(cell.get((rule, a))) for a in attacks)] for rule in rules]
    ref = [cell[k] for k in cell if k[1] == "none"]
    if ref:
        rows.append([NAMES["none"], *([_cell(ref[0])] * len(attacks))])
    k = int(s["seeds"].min())
    return (
        f"Honest nodes' mean test accuracy at the final round, mean [min, max] over {k} seeds\n\n"
        + R.markdown_table(["rule", *(ATTACK_NAMES.get(a, a) for a in attacks)], rows)
    )


TABLES = {"torus": torus_table}


def plot(s, path, title=""):
    """Per attack a group of points (one per rule): mean over seeds with min–max bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = [a for a in dict.fromkeys(s["attack"]) if a != "none"]
    rules = list(dict.fromkeys(s.loc[s["attack"] != "none", "rule"]))
    colors = dict(zip(rules, plt.cm.tab10.colors))
    width = 0.8 / max(len(rules), 1)
    fig, ax = plt.subplots(figsize=(4.0 + 1.6 * len(attacks), 4.0))
    for i, rule in enumerate(rules):
        for j, atk in enumerate(attacks):
            r = s[(s["rule"] == rule) & (s["attack"] == atk)]
            if r.empty:
                continue
            r, x = r.iloc[0], j - 0.4 + width * (i + 0.5)
            lab = NAMES.get(rule, rule) if j == 0 else None
            if r["diverged"] > 0:  # a cross at the axis, never a point at a cap
                ax.plot(x, 0.03, "x", color=colors[rule], ms=7, mew=2, label=lab)
                ax.annotate("diverged", (x, 0.06), rotation=90, ha="center", va="bottom", fontsize=6)
                continue
            mu = r[f"{M}_mean"]
            ax.errorbar(x, mu, yerr=[[mu - r[f"{M}_min"]], [r[f"{M}_max"] - mu]], fmt="o", color=colors[rule],
                        capsize=3, ms=5, label=lab)  # fmt: skip
    ref = s[s["attack"] == "none"]
    if not ref.empty:
        r = ref.iloc[0]
        ax.axhline(r[f"{M}_mean"], color="k", lw=0.9, label="no attacker (mean over seeds)")
        ax.axhspan(r[f"{M}_min"], r[f"{M}_max"], color="k", alpha=0.1)
    ax.axhline(0.1, color="grey", ls="--", lw=0.8, label="chance (10 classes)")
    ax.set_xticks(range(len(attacks)), [ATTACK_NAMES.get(a, a) for a in attacks])
    ax.set_xlabel("attack (3 Byzantine of 16 nodes)")
    ax.set_ylabel("honest nodes' test accuracy (fraction correct)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: points reach chance
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/byzantine_gossip")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2", help="the seed axis of every sweep")
    ap.add_argument("--quick", action="store_true", help="mean and ClippedGossip under dissensus; 20 rounds; 2 seeds")
    args = ap.parse_args(argv)
    out = R.out_dir(args.out)
    rounds, seeds = args.rounds, [int(x) for x in args.seeds.split(",")]
    rules, attacks, reference = RULES, ATTACKS, True
    if args.quick:
        rules, attacks, rounds, seeds, reference = ("mean", "clipped_gossip"), ("dissensus",), 20, [0, 1], False
    cells = [(r, a) for r in rules for a in attacks] + ([("mean", "none")] if reference else [])
    t0 = time.perf_counter()
    runs, traces = run(cells, rounds, seeds)
    s = summarize(runs)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.6g")
    s.to_csv(out / "results.csv", index=False, float_format="%.6g")
    wall = time.perf_counter() - t0
    meta = dict(n=16, f=3, topology="torus 4x4", rounds=rounds, seeds=seeds, momentum=0.9, lr=0.05, batch=16,
                alie_z=ALIE_Z, wall_seconds=round(wall, 1), traces=traces)  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    plot(s, out / "byzantine_gossip.png",
         title=f"digits, 4×4 torus, n = 16, f = 3 Byzantine, D-SGD + momentum 0.9, {rounds} rounds; "
         f"points: mean over {len(seeds)} seeds, bars: min–max")  # fmt: skip
    print(torus_table(out))
    print(f"wrote {out}: runs.csv, results.csv, meta.json, byzantine_gossip.png ({wall:.0f} s)")
    return s


if __name__ == "__main__":
    main()
