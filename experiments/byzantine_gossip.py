"""Robust gossip on a 4×4 torus with f = n/5 Byzantine nodes: every decentralized rule × attack.

The setting of the shipped ``configs/byzantine_gossip.py`` (16 nodes on a 4×4 torus with
Metropolis–Hastings weights, 3 Byzantine nodes at random placement drawn with seed 0, D-SGD with
momentum 0.9, lr 0.05, batch 16, digits MLP (64), 200 rounds): the decentralized rules plain
gossip ("mean"), ClippedGossip (He, Karimireddy & Jaggi 2022), IOS (Wu et al. 2023), CS+
(Gaucher et al. 2025) and BRIDGE's trimmed mean (Yang & Bajwa 2019) under the dissensus
(He et al. 2022), sign-flip, IPM (Xie et al. 2020) and ALIE (Baruch et al. 2019, z = 5) attacks,
and each rule's own attack-free run ("none": no Byzantine node, the rule still active and
assuming b, the most Byzantine neighbours an honest node has under attack; plain gossip's is the
plain run), so that the cost of robustness without an attack shows beside the cost of each
attack. Each cell is the mean test accuracy of the honest nodes' own models at the final round.

Each (rule, attack) is one ``rj.sweep`` over seeds (one compile, asserted; the seed redraws the
initial model, the minibatches and the attackers' randomness; the partition and the Byzantine
placement are those of the config's seed 0). A run whose honest test loss is not finite is
diverged: NaN accuracy in ``runs.csv``, 'diverged' in the table and on the figure.

    python experiments/byzantine_gossip.py --out docs/results/byzantine_gossip   # 25 sweeps, ~19 min loaded
    python experiments/byzantine_gossip.py --merge --out DIR    # only the cells DIR/runs.csv lacks
    python experiments/byzantine_gossip.py --quick --out /tmp/byz_gossip          # the test's run

Measured on the shared 2-core machine: the 20 attacked cells and plain gossip's reference took
800 s wall at load 8–14 (20–100 s per sweep of 3 seeds; compiling the 200-round program is most
of it); the four robust rules' attack-free cells were merged in with ``--merge``: 324 s wall,
65 s of CPU at load 10–13. The --quick test (2 sweeps) takes 13.5 s on the machine at load 1,
90–290 s wall at load 8–14.

Writes in DIR: ``runs.csv`` (one row per rule, attack and seed), ``results.csv`` (per rule and
attack: mean, min and max over seeds, seed and diverged counts), ``meta.json`` (sizes, b, wall
time, traces per sweep, merges) and ``byzantine_gossip.png`` (honest accuracy per attack, one
point per rule, mean over seeds with min–max bars; each rule's attack-free run as the first group
and a dotted line of its colour; below, the same zoomed on the rules that train).
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
         "trimmed_mean": "BRIDGE (trimmed mean)"}  # fmt: skip
ATTACK_NAMES = {
    "none": "no attacker",
    "dissensus": "dissensus",
    "sign_flip": "sign flip",
    "ipm": "IPM",
    "alie": "ALIE (z = 5)",
}
ALIE_Z = 5.0
M = "node_test_accuracy_mean"


def config(rule: str, attack: str, rounds: int, tolerance: int = -1):
    """configs/byzantine_gossip.py with ``rule`` and ``attack`` ('none': no Byzantine node; the
    rule then assumes ``tolerance`` Byzantine neighbours, as it does under attack)."""
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
        if rule != "mean":  # plain gossip has no b: its reference is the plain run of before
            c.aggregation.tolerance = tolerance
    else:
        c.byzantine.attack = attack
        if attack == "alie":
            c.byzantine.strength = ALIE_Z
    return c


def tolerance() -> int:
    """b of the attacked runs: the most Byzantine neighbours of an honest node (placement of seed 0)."""
    from redeem_jax.experiment import build as B

    exp = B.build(rj.config.validate(config("trimmed_mean", "sign_flip", 1)))
    return B.max_byzantine_neighbours(exp.topology, ~np.asarray(exp.honest, bool))


def run(cells, rounds, seeds, b):
    """Per-seed final rows (a DataFrame) and the traces of every sweep."""
    import pandas as pd

    frames, traces = [], {}
    for rule, atk in cells:
        t = time.perf_counter()
        full = rj.sweep(config(rule, atk, rounds, b), {"seed": seeds}, progress=False)
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
    """Rule × attack: honest nodes' test accuracy, mean [min, max] over seeds; the rule's own
    attack-free run (rule active, no Byzantine node) first."""
    import pandas as pd

    s = pd.read_csv(Path(folder) / "results.csv")
    cell = {(r["rule"], r["attack"]): r for _, r in s.iterrows()}
    attacks = list(dict.fromkeys(s["attack"]))
    attacks = [a for a in attacks if a == "none"] + [a for a in attacks if a != "none"]
    rows = [
        [NAMES.get(rule, rule), *(_cell(cell.get((rule, a))) for a in attacks)] for rule in dict.fromkeys(s["rule"])
    ]
    k = int(s["seeds"].min())
    return (
        f"Honest nodes' mean test accuracy at the final round, mean [min, max] over {k} seeds\n\n"
        + R.markdown_table(["rule", *(ATTACK_NAMES.get(a, a) for a in attacks)], rows)
    )


TABLES = {"torus": torus_table}


def _draw(ax, s, attacks, rules, colors, labels: bool):
    width = 0.8 / max(len(rules), 1)
    for i, rule in enumerate(rules):
        labelled = not labels
        for j, atk in enumerate(attacks):
            r = s[(s["rule"] == rule) & (s["attack"] == atk)]
            if r.empty:
                continue
            r, x = r.iloc[0], j - 0.4 + width * (i + 0.5)
            lab = None if labelled else NAMES.get(rule, rule)
            labelled = True
            if r["diverged"] > 0:  # a cross at the axis, never a point at a cap
                ax.plot(x, 0.03, "x", color=colors[rule], ms=7, mew=2, label=lab)
                ax.annotate("diverged", (x, 0.06), rotation=90, ha="center", va="bottom", fontsize=6)
                continue
            mu = r[f"{M}_mean"]
            ax.errorbar(x, mu, yerr=[[mu - r[f"{M}_min"]], [r[f"{M}_max"] - mu]], fmt="o", color=colors[rule],
                        capsize=3, ms=5, label=lab)  # fmt: skip
            if atk == "none" and len(attacks) > 1:  # the rule's own reference across the attacks
                ax.hlines(mu, 0.5, len(attacks) - 0.5, color=colors[rule], ls=":", lw=1.0)
    if "none" in attacks:
        ax.axvline(0.5, color="k", lw=0.6)
    ax.set_xticks(range(len(attacks)), [ATTACK_NAMES.get(a, a) for a in attacks])
    ax.set_xlabel("attack")
    ax.set_ylabel("honest nodes' test accuracy\n(fraction correct)")
    ax.grid(alpha=0.3, axis="y")


def plot(s, path, title=""):
    """Per attack a group of points (one per rule): mean over seeds with min–max bars; each rule's
    attack-free run is the first group and a dotted line of its colour across the others. Below,
    the same points zoomed to the top of the scale, where the costs of robustness are visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(s["attack"]))
    attacks = [a for a in attacks if a == "none"] + [a for a in attacks if a != "none"]
    rules = list(dict.fromkeys(s["rule"]))
    colors = dict(zip(rules, plt.cm.tab10.colors))
    fig, (ax, zoom) = plt.subplots(2, 1, figsize=(4.0 + 1.6 * len(attacks), 7.0), height_ratios=(1.1, 1))
    _draw(ax, s, attacks, rules, colors, labels=True)
    ax.set_ylim(0, 1.05)
    if "none" in attacks:
        ax.plot([], [], color="k", ls=":", lw=1.0, label="the rule's own no-attacker mean")
    ax.axhline(0.1, color="grey", ls="--", lw=0.8, label="chance (10 classes)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: points reach chance
    _draw(zoom, s, attacks, rules, colors, labels=False)
    ok = s[s["diverged"] == 0]
    lo = float(ok[f"{M}_min"].min()) if not ok.empty else 0.0
    top = ok[ok[f"{M}_min"] > 0.5]  # the zoom shows the rules that train; the collapsed ones are above
    if not top.empty:
        lo = float(top[f"{M}_min"].min())
    zoom.set_ylim(lo - 0.01, min(1.0, float(ok[f"{M}_max"].max()) + 0.01))
    zoom.set_title("zoom: the rules that train (points outside this range are in the panel above)", fontsize=8)
    zoom.set_xlabel("attack (3 Byzantine of 16 nodes; 'no attacker': none, the rule still assumes b)")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(meta) -> str:
    return (
        f"digits, 4×4 torus, n = 16, f = 3 Byzantine (b = {meta['tolerance_b']}), D-SGD + momentum 0.9, "
        f"{meta['rounds']} rounds; points: mean over {len(meta['seeds'])} seeds, bars: min–max"
    )


QUICK = (("clipped_gossip", "dissensus"), ("clipped_gossip", "none"))


def main(argv=None):
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/byzantine_gossip")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2", help="the seed axis of every sweep")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="run only the cells missing from DIR/runs.csv (same rounds and seeds) and merge them in",
    )
    ap.add_argument(
        "--quick", action="store_true", help="ClippedGossip under dissensus and without attacker; 20 rounds; 2 seeds"
    )
    ap.add_argument("--replot", action="store_true", help="redraw DIR/byzantine_gossip.png from DIR/results.csv")
    args = ap.parse_args(argv)
    out = R.out_dir(args.out)
    if args.replot:
        s, meta = pd.read_csv(out / "results.csv"), json.loads((out / "meta.json").read_text())
        plot(s, out / "byzantine_gossip.png", _title(meta))
        return s
    rounds, seeds = args.rounds, [int(x) for x in args.seeds.split(",")]
    cells = [(r, a) for r in RULES for a in ("none", *ATTACKS)]
    if args.quick:
        cells, rounds, seeds = list(QUICK), 20, [0, 1]
    old, meta0 = None, {}
    if args.merge and (out / "runs.csv").exists():
        old, meta0 = pd.read_csv(out / "runs.csv"), json.loads((out / "meta.json").read_text())
        if meta0["rounds"] != rounds or list(meta0["seeds"]) != seeds:
            raise SystemExit(f"--merge: {out} holds {meta0['rounds']} rounds, seeds {meta0['seeds']}")
        have = set(zip(old["rule"], old["attack"]))
        cells = [c for c in cells if c not in have]
    b = tolerance()
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    runs, traces = run(cells, rounds, seeds, b) if cells else (None, {})
    wall = time.perf_counter() - t0
    this = dict(cells=[list(c) for c in cells], wall_seconds=round(wall, 1), cpu_seconds=round(time.process_time() - c0, 1),
                load=[round(load0, 1), round(os.getloadavg()[0], 1)])  # fmt: skip
    if old is not None:
        runs = pd.concat([old, runs], ignore_index=True)
        order = {c: i for i, c in enumerate((r, a) for r in RULES for a in ("none", *ATTACKS))}
        key = [order.get(c, len(order)) for c in zip(runs["rule"], runs["attack"])]
        runs = runs.iloc[np.lexsort((runs["seed"].to_numpy(), key))].reset_index(drop=True)
        traces = {**meta0.get("traces", {}), **traces}
        merged = [*meta0.get("merged", []), this]
    s = summarize(runs)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.6g")
    s.to_csv(out / "results.csv", index=False, float_format="%.6g")
    meta = dict(n=16, f=3, topology="torus 4x4", rounds=rounds, seeds=seeds, momentum=0.9, lr=0.05, batch=16,
                alie_z=ALIE_Z, tolerance_b=b, **{k: this[k] for k in ("wall_seconds", "cpu_seconds", "load")},
                traces=traces)  # fmt: skip
    if old is not None:  # the first run's measurement at the top, each merge's in "merged"
        for k in ("wall_seconds", "cpu_seconds", "load"):
            meta.pop(k)
            if k in meta0:
                meta[k] = meta0[k]
        meta["merged"] = merged
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    plot(s, out / "byzantine_gossip.png", _title(meta))
    print(torus_table(out))
    print(f"wrote {out}: runs.csv, results.csv, meta.json, byzantine_gossip.png ({wall:.0f} s)")
    return s


if __name__ == "__main__":
    main()
