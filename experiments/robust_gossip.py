"""Robust decentralized learning against dissensus, on bottleneck graphs.

Decentralized rules (plain gossip, ClippedGossip, IOS, CS+, BRIDGE = trimmed mean over the
neighbourhood) on two graphs with a bottleneck: two cliques joined by one edge, and a dumbbell
(two cliques joined by a path, networkx's barbell). Byzantine nodes sit in the first clique
and run the dissensus attack (He, Karimireddy & Jaggi 2022, ε = 1.5); as their number grows,
so does the Byzantine weight δ = max over honest i of Σ_{Byzantine k} W_ik. Each point is a
full D-SGD run on digits; we report the honest nodes' mean test accuracy (their own models)
and the honest consensus distance against δ.

    python experiments/robust_gossip.py --out runs/robust_gossip          # ~3 min on 2 cores
    python experiments/robust_gossip.py --quick --out /tmp/robust_gossip  # seconds

Writes DIR/robust_gossip.json (one record per run) and DIR/robust_gossip.png.
Expected: plain gossip collapses as soon as one attacker is present; ClippedGossip and IOS
stay close to the attack-free accuracy while δ is small and degrade as it grows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def run_point(topo, rule: str, f: int, rounds: int, seed: int) -> dict:
    c = base_config(topo.n, rounds, seed)
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
    res = rj.run(c, topology=topo)
    row = res.final
    return {
        "graph": topo.name,
        "rule": rule,
        "f": f,
        "byzantine_weight": float(delta),
        "node_accuracy": row["node_test_accuracy_mean"],
        "node_accuracy_min": row["node_test_accuracy_min"],
        "averaged_accuracy": row["test_accuracy"],
        "consensus_distance": row["consensus_distance"],
        "seconds": time.perf_counter() - t,
    }


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["graph"] for r in records})
    fig, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 7), squeeze=False)
    for j, g in enumerate(names):
        for i, rule in enumerate(RULES):
            pts = sorted((r for r in records if r["graph"] == g and r["rule"] == rule), key=lambda r: r["f"])
            if not pts:
                continue
            x = [r["byzantine_weight"] for r in pts]
            axes[0, j].plot(x, [r["node_accuracy"] for r in pts], "o-", color=f"C{i}", label=LABELS[rule])
            cons = np.array([r["consensus_distance"] for r in pts], float)
            cons = np.where(np.isfinite(cons), np.clip(cons, 1e-12, 1e12), 1e12)
            axes[1, j].semilogy(x, cons, "o-", color=f"C{i}", label=LABELS[rule])
        axes[0, j].set(
            title=f"{g}: honest nodes' test accuracy",
            xlabel="Byzantine weight δ (max over honest nodes)",
            ylabel="accuracy",
            ylim=(0, 1),
        )
        axes[1, j].set(title=f"{g}: honest consensus distance (capped at 1e12)", xlabel="Byzantine weight δ")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("D-SGD on digits under the dissensus attack (ε = 1.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/robust_gossip")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--max_f", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="one graph, two rules, f in {0, 1}, 20 rounds")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    gs = graphs(args.n)
    rules, fs, rounds = RULES, range(args.max_f + 1), args.rounds
    if args.quick:
        gs = {"two_cliques": gs["two_cliques"]}
        rules, fs, rounds = ("mean", "clipped_gossip"), (0, 1), 20
    records = []
    print(f"{'graph':12} {'rule':16} {'f':>2} {'δ':>6} {'node acc':>9} {'consensus':>10}")
    for g, topo in gs.items():
        for rule in rules:
            for f in fs:
                r = run_point(topo, rule, f, rounds, args.seed)
                records.append(r)
                print(
                    f"{g:12} {rule:16} {f:>2} {r['byzantine_weight']:6.3f} {r['node_accuracy']:9.3f} "
                    f"{r['consensus_distance']:10.3g}",
                    flush=True,
                )
    with open(os.path.join(args.out, "robust_gossip.json"), "w") as fh:
        json.dump(records, fh, indent=1)
    plot(records, os.path.join(args.out, "robust_gossip.png"))
    print(f"wrote {args.out}/robust_gossip.json and robust_gossip.png")
    return records


if __name__ == "__main__":
    main()
