"""Byzantine-robust federated learning: accuracy for every aggregator × attack × heterogeneity.

n nodes, f = n/5 of them Byzantine, train an MLP on digits (or MNIST-1D) with worker momentum
(Karimireddy, He & Jaggi 2021; Farhadkhani et al. 2022): each worker sends its update −η·mᵢ,
the Byzantine ones send the attack's vectors computed from all honest updates, and the server
applies the robust rule (with pre-aggregators such as NNM, Allouah et al. 2023) and
broadcasts. Each cell is the final test accuracy of the honest model, one full run.

    python experiments/byzantine_federated.py --out runs/byzantine_federated     # ~15 min on 2 cores
    python experiments/byzantine_federated.py --quick --out /tmp/byz_fed         # seconds

Writes DIR/byzantine_federated.json, DIR/byzantine_federated.md (one table per α) and
DIR/byzantine_federated.png (heatmaps). Expected: under sign flipping, IPM and optimized ALIE
the mean collapses, while NNM ∘ (trimmed mean | median | Krum | geometric median) stay within
a few points of the attack-free accuracy at α = 1; strong heterogeneity (α = 0.1) costs every
rule accuracy.

The loop is over rules, attacks and α (each changes the program or the data shapes); seeds
and scalar hyper-parameters vmap in ``rj.sweep`` (issue 5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402

RULES = (
    "mean",
    "median",
    "trimmed_mean",
    "geometric_median",
    "krum",
    "multi_krum",
    "centered_clipping",
    "meamed",
    "caf",
    "nnm+trimmed_mean",
    "nnm+median",
    "nnm+krum",
    "nnm+geometric_median",
    "arc+nnm+trimmed_mean",
    "bucketing+trimmed_mean",
)
ATTACKS = ("none", "sign_flip", "ipm", "alie", "alie_opt", "ipm_opt", "mimic", "gaussian", "label_flip", "nan")


def config(dataset: str, n: int, f: int, alpha: float, rule: str, attack: str, rounds: int, seed: int):
    c = rj.config.base_config()
    c.seed = seed
    c.num_nodes = n
    c.algorithm.name = "fedavg"
    c.data.name = dataset
    c.data.partition = "dirichlet" if alpha > 0 else "iid"
    c.data.alpha = alpha if alpha > 0 else 1.0
    c.data.batch_size = 16
    c.model.hidden = (64,)
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    c.optimizer.momentum = 0.9
    c.num_rounds = rounds
    c.eval_every = rounds
    c.checkpoint_every = 0
    c.progress = False
    c.plots = False
    c.aggregation.rule = rule
    if attack != "none":
        c.byzantine.num = f
        c.byzantine.attack = attack
    else:  # the attack-free baseline still tolerates f: the rule assumes f, nobody attacks
        c.aggregation.tolerance = f
    return c


def markdown(records, alphas, rules, attacks) -> str:
    out = []
    for a in alphas:
        label = f"Dirichlet α = {a}" if a > 0 else "iid"
        out.append(f"\n**{label}** (test accuracy of the honest model; attack-free column first)\n")
        out.append("| rule | " + " | ".join(attacks) + " |")
        out.append("|---|" + "---|" * len(attacks))
        for rule in rules:
            cells = []
            for atk in attacks:
                r = next((r for r in records if r["alpha"] == a and r["rule"] == rule and r["attack"] == atk), None)
                cells.append(
                    "—" if r is None else ("diverged" if not np.isfinite(r["accuracy"]) else f"{r['accuracy']:.3f}")
                )
            out.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(records, alphas, rules, attacks, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from redeem_jax.plotting import annotated_heatmap

    fig, axes = plt.subplots(
        1, len(alphas), figsize=(1.0 + 0.9 * len(attacks) * len(alphas), 0.45 * len(rules) + 2), squeeze=False
    )
    for j, a in enumerate(alphas):
        M = np.full((len(rules), len(attacks)), np.nan)
        for r in records:
            if r["alpha"] == a:
                M[rules.index(r["rule"]), attacks.index(r["attack"])] = r["accuracy"]
        ax = axes[0, j]
        im = annotated_heatmap(ax, M, fontsize=7)
        ax.set_xticks(range(len(attacks)), attacks, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rules)), rules if j == 0 else [], fontsize=8)  # shared rows: label once
        ax.set_title(f"Dirichlet α = {a}" if a > 0 else "iid")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="test accuracy")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/byzantine_federated")
    ap.add_argument("--dataset", default="digits", choices=("digits", "mnist1d"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--f", type=int, default=-1, help="Byzantine nodes (default n/5)")
    ap.add_argument("--alphas", default="1.0,0.1", help="Dirichlet α values; 0 means iid")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="3 rules x 3 attacks, one alpha, 30 rounds")
    ap.add_argument("--replot", action="store_true", help="redraw DIR/byzantine_federated.png from its JSON")
    args = ap.parse_args(argv)
    if args.replot:
        records = json.load(open(os.path.join(args.out, "byzantine_federated.json")))
        order = lambda key: list(dict.fromkeys(r[key] for r in records))  # noqa: E731
        plot(records, order("alpha"), order("rule"), order("attack"), os.path.join(args.out, "byzantine_federated.png"))
        return records
    f = args.n // 5 if args.f < 0 else args.f
    rules, attacks = args.rules.split(","), args.attacks.split(",")
    alphas = [float(a) for a in args.alphas.split(",")]
    rounds = args.rounds
    if args.quick:
        rules, attacks, alphas, rounds = (
            ["mean", "nnm+trimmed_mean", "median"],
            ["none", "sign_flip", "alie"],
            [1.0],
            30,
        )
    os.makedirs(args.out, exist_ok=True)
    records, t0 = [], time.perf_counter()
    total = len(rules) * len(attacks) * len(alphas)
    for a in alphas:
        for rule in rules:
            for atk in attacks:
                t = time.perf_counter()
                res = rj.run(config(args.dataset, args.n, f, a, rule, atk, rounds, args.seed))
                acc = res.final.get("node_test_accuracy_mean", float("nan"))
                records.append(
                    {
                        "alpha": a,
                        "rule": rule,
                        "attack": atk,
                        "n": args.n,
                        "f": f,
                        "accuracy": acc,
                        "seconds": time.perf_counter() - t,
                    }
                )
                print(
                    f"[{len(records)}/{total}] α={a} {rule:24s} {atk:12s} acc={acc:.3f} "
                    f"({time.perf_counter() - t:.1f}s)",
                    flush=True,
                )
    table = markdown(records, alphas, rules, attacks)
    header = (
        f"Command: `python experiments/byzantine_federated.py {' '.join(argv or sys.argv[1:])}`  \n"
        f"{args.dataset}, n = {args.n} nodes of which f = {f} Byzantine, {rounds} rounds, worker momentum 0.9, "
        f"lr 0.05, batch 16, seed {args.seed}; total {time.perf_counter() - t0:.0f} s.\n"
    )
    with open(os.path.join(args.out, "byzantine_federated.md"), "w") as fh:
        fh.write(header + table)
    with open(os.path.join(args.out, "byzantine_federated.json"), "w") as fh:
        json.dump(records, fh, indent=1)
    plot(records, alphas, rules, attacks, os.path.join(args.out, "byzantine_federated.png"))
    print(table)
    print(f"wrote {args.out}/byzantine_federated.{{json,md,png}}")
    return records


if __name__ == "__main__":
    main()
