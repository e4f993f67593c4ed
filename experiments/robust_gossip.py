"""Robust decentralized learning against dissensus, on bottleneck graphs.

Decentralized rules (plain gossip, ClippedGossip, IOS, CS+, BRIDGE = trimmed mean over the
neighbourhood) on two graphs with a bottleneck: two cliques joined by one edge, and a dumbbell
(two cliques joined by a path, networkx's barbell). Byzantine nodes sit in the first clique
and run the dissensus attack (He, Karimireddy & Jaggi 2022, ε = 1.5); as their number grows,
so does the Byzantine weight δ = max over honest i of Σ_{Byzantine k} W_ik. Each point is a
full D-SGD run on digits; we report the honest nodes' mean test accuracy (their own models)
and the honest consensus distance against δ.

    python experiments/robust_gossip.py --out docs/results/robust_gossip   # see summary.json
    python experiments/robust_gossip.py --quick --out /tmp/robust_gossip   # seconds

Every (graph, rule, f) cell is one ``rj.sweep`` over 3 seeds (vmapped: one compile). Writes
DIR/runs.csv (one row per seed), DIR/robust_gossip.csv (mean/min/max over seeds, diverged
count), DIR/robust_gossip.png and DIR/summary.json; ``TABLES`` renders docs/results.md's tables.
Expected: plain gossip collapses as soon as one attacker is present; ClippedGossip and IOS
stay close to the attack-free accuracy while δ is small and degrade as it grows.
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

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402

RULES = ("mean", "clipped_gossip", "ios", "cs_plus", "trimmed_mean")
LABELS = {
    "mean": "plain gossip",
    "clipped_gossip": "ClippedGossip",
    "ios": "IOS",
    "cs_plus": "CS+",
    "trimmed_mean": "BRIDGE (trimmed mean)",
}


def graphs(n: int):
    """The two bottleneck graphs, each with ``n`` nodes."""
    clique = (n - 4) // 2
    return {
        "two_cliques": rj.topology.two_cliques(n),
        "dumbbell": rj.topology.from_networkx(nx.barbell_graph(clique, n - 2 * clique), name="dumbbell"),
    }


def base_config(n: int, rounds: int, seed: int):
    c = rj.config.base_config()
    c.seed = seed
    c.num_nodes = n
    c.data.name = "digits"
    c.data.batch_size = 16
    c.model.hidden = (32,)
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    c.num_rounds = rounds
    c.eval_every = rounds
    c.checkpoint_every = 0
    c.progress = False
    c.plots = False
    return c


def run_point(topo, rule: str, f: int, rounds: int, seeds) -> list[dict]:
    """One (graph, rule, f) cell: an ``rj.sweep`` over the seeds (vmapped, one compile); one
    record per seed at the last round."""
    c = base_config(topo.n, rounds, 0)
    c.aggregation.rule = rule
    if f:
        c.byzantine.num = f
        c.byzantine.placement = "given"
        c.byzantine.ids = tuple(range(1, f + 1))  # inside the first clique, off its bridge node 0
        c.byzantine.attack = "dissensus"
    byz = np.zeros(topo.n, bool)
    byz[list(c.byzantine.ids) if f else []] = True
    delta = rj.byzantine.byzantine_weight(topo, byz)[~byz].max() if f else 0.0
    t = time.perf_counter()
    df = rj.sweep(c, {"seed": list(seeds)}, topology=topo, progress=False)
    last = df[df["round"] == df["round"].max()]
    secs = (time.perf_counter() - t) / len(last)
    return [
        {
            "graph": topo.name,
            "rule": rule,
            "f": f,
            "seed": int(row["seed"]),
            "byzantine_weight": float(delta),
            "node_accuracy": float(row["node_test_accuracy_mean"]),
            "node_accuracy_min": float(row["node_test_accuracy_min"]),
            "averaged_accuracy": float(row["test_accuracy"]),
            "consensus_distance": float(row["consensus_distance"]),
            "seconds": secs,
        }
        for _, row in last.iterrows()
    ]


def summarise(records):
    """Per (graph, rule, f): mean/min/max over seeds (``_results.over_seeds``; a diverged seed,
    some honest model non-finite, keeps the mean NaN, printed 'diverged' beside the honest nodes'
    accuracy as measured, NaN models counting as wrong)."""
    import pandas as pd
    from _results import over_seeds

    df = pd.DataFrame(records)
    df["node_accuracy_raw"] = df["node_accuracy"]  # kept for the tables: some honest nodes may still be finite
    # A run whose honest models left the floats (non-finite consensus distance) has diverged: its
    # accuracy (0 from NaN logits) is not a value.
    bad = ~np.isfinite(df["consensus_distance"]) | ~np.isfinite(df["node_accuracy"])
    for col in ("node_accuracy", "consensus_distance"):
        df[col] = df[col].where(~bad)
    out = over_seeds(
        df, ["graph", "rule", "f", "byzantine_weight"], ["node_accuracy", "consensus_distance", "node_accuracy_raw"]
    )
    out["diverged"] = (
        df.groupby(["graph", "rule", "f"], sort=False)["node_accuracy"].apply(lambda v: int(v.isna().sum())).values
    )
    return out


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(summary.graph.unique())
    seeds = int(summary.seeds.max())
    fig, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 7.5), squeeze=False)
    for j, g in enumerate(names):
        for i, rule in enumerate(RULES):
            pts = summary[(summary.graph == g) & (summary.rule == rule)].sort_values("f")
            if not len(pts):
                continue
            x = pts.byzantine_weight.to_numpy()
            ok = (pts.diverged == 0).to_numpy()
            for r, (col, log) in enumerate((("node_accuracy", False), ("consensus_distance", True))):
                ax = axes[r, j]
                mean, lo, hi = (pts[f"{col}_{s}"].to_numpy() for s in ("mean", "min", "max"))
                ax.plot(x[ok], mean[ok], "o-", color=f"C{i}", label=LABELS[rule])
                ax.fill_between(x[ok], lo[ok], hi[ok], color=f"C{i}", alpha=0.2)
                if (~ok).any():  # a diverged seed: marked at the top, not drawn as a value
                    top = 1.02 if not log else 3e8
                    ax.plot(x[~ok], np.full((~ok).sum(), top), "x", color=f"C{i}", ms=9)
                if log:
                    ax.set_yscale("log")
        axes[0, j].set(
            title=f"{g}: honest nodes' test accuracy (× at top: a seed diverged)",
            xlabel="Byzantine weight δ (max over honest nodes)",
            ylabel="accuracy (fraction)",
            ylim=(0, 1.06),
        )
        axes[1, j].set(
            title=f"{g}: honest consensus distance",
            xlabel="Byzantine weight δ (max over honest nodes)",
            ylabel="(1/n_H) Σ‖xᵢ − x̄_H‖² (parameter units²)",
            ylim=(None, 1e9),
        )
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"D-SGD on digits, dissensus attack (ε = 1.5)\nmean and min–max over {seeds} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(folder, graph):
    import pandas as pd
    from _results import fmt, fmt_band, markdown_table

    s = pd.read_csv(folder / "robust_gossip.csv")
    s = s[s.graph == graph]
    fs = sorted(s.f.unique())
    deltas = {f: s[s.f == f].byzantine_weight.iloc[0] for f in fs}
    rows = []
    for rule in RULES:
        r = s[s.rule == rule].set_index("f")
        if not len(r):
            continue
        cells = []
        for f in fs:
            x = r.loc[f]
            if x.diverged:
                acc = fmt_band(x.node_accuracy_raw_mean, x.node_accuracy_raw_min, x.node_accuracy_raw_max)
                cells.append(f"diverged ({int(x.diverged)}/{int(x.seeds)}; honest accuracy {acc})")
            else:
                cells.append(fmt_band(x.node_accuracy_mean, x.node_accuracy_min, x.node_accuracy_max))
        rows.append([LABELS[rule], *cells, int(r.seeds.max())])
    header = ["rule", *[f"f = {f} (δ = {fmt(deltas[f])})" for f in fs], "seeds"]
    return markdown_table(header, rows)


TABLES = {
    "two_cliques": lambda folder: _table(folder, "two_cliques"),
    "dumbbell": lambda folder: _table(folder, "dumbbell"),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/robust_gossip")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--max_f", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--graphs", default="two_cliques,dumbbell")
    ap.add_argument("--fs", default="", help="comma-separated f values (default 0..max_f)")
    ap.add_argument("--quick", action="store_true", help="one graph, two rules, f in {0, 1}, 20 rounds, 2 seeds")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gs = {k: v for k, v in graphs(args.n).items() if k in args.graphs.split(",")}
    fs = [int(v) for v in args.fs.split(",")] if args.fs else range(args.max_f + 1)
    rules, rounds, seeds = RULES, args.rounds, range(args.seeds)
    if args.quick:
        gs = {"two_cliques": gs["two_cliques"]}
        rules, fs, rounds, seeds = ("mean", "clipped_gossip"), (0, 1), 20, range(2)
    t0 = time.perf_counter()
    records = []
    print(f"{'graph':12} {'rule':16} {'f':>2} {'δ':>6} {'node acc over seeds':>24}")
    for g, topo in gs.items():
        for rule in rules:
            for f in fs:
                rs = run_point(topo, rule, f, rounds, seeds)
                records += rs
                acc = [r["node_accuracy"] for r in rs]
                print(f"{g:12} {rule:16} {f:>2} {rs[0]['byzantine_weight']:6.3f} {acc}", flush=True)
    import pandas as pd

    pd.DataFrame(records).to_csv(out / "runs.csv", index=False)
    summary = summarise(records)
    summary.to_csv(out / "robust_gossip.csv", index=False)
    info = dict(n=args.n, rounds=rounds, seeds=len(seeds), quick=bool(args.quick), seconds=time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(info, indent=1))
    plot(summary, out / "robust_gossip.png")
    print(f"wrote {out}/runs.csv, robust_gossip.csv, robust_gossip.png ({info['seconds']:.0f} s)")
    return records


if __name__ == "__main__":
    main()
