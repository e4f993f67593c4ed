"""The privacy / robustness / utility trilemma: accuracy over ε × f for robust rules under local DP.

Allouah, Guerraoui, Gupta, Pinot & Stephan (ICML 2023), "On the privacy-robustness-utility
trilemma in distributed learning": n nodes and a server (``algorithm.name="fedavg"``); every
honest node runs DP-SGD (``privacy.mode="dp_sgd"``, example-level (ε, δ)-DP of its data against
the server and everyone else), f nodes are Byzantine and send a line-searched ALIE attack
(``alie_opt``: the ALIE factor maximising the distance of the robust aggregate from the honest
mean, Baruch et al. 2019); the server aggregates the updates with SMEA (smallest maximum
eigenvalue averaging, the rule that paper proposes; exact subset search, so n is small), with
NNM ∘ trimmed mean (Allouah et al. 2023, "Fixing by mixing") and with the plain mean. Worker
momentum 0.9 (a post-processing of the private gradients).

DP noise inflates the spread of the honest updates, and every robust rule's error grows with that
spread (a (f, κ)-robust rule pays κ × the honest variance; SMEA pays (f/n) × the largest
eigenvalue of the honest covariance instead of its trace, FIELD_NOTES): Byzantine nodes hide in
the noise, so small ε and large f together cost more than either alone.

At f = 0 no node attacks and every rule, told f = 0, is the plain mean (SMEA over the one subset of
size n, NNM over one neighbour, trimming nothing), so the f = 0 column is one run shared by the rules.

    python experiments/trilemma.py --out runs/trilemma          # ~19 min on 2 shared cores
    python experiments/trilemma.py --quick --out /tmp/trilemma  # ~35 s of CPU

Writes DIR/trilemma.{csv,json,png} (one heatmap per rule, ε on the rows, f on the columns).
Expected (docs/results.md): without DP both robust rules stay within ~2 points of the attack-free
0.967 up to f = 3; without attackers DP costs accuracy smoothly (0.82 at ε = 8, 0.60 at ε = 1);
together they compound (SMEA at ε = 2: 0.60, 0.40, chance for f = 1, 2, 3), SMEA degrades later
than NNM ∘ trimmed mean (ε = 4, f = 3: 0.39 against chance), and the mean is at chance whenever
f ≥ 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402

COLUMNS = (
    "rule",
    "attack",
    "epsilon",
    "f",
    "n",
    "noise_multiplier",
    "sample_rate",
    "epsilon_spent",
    "rounds",
    "test_accuracy",
    "seconds",
)


def config(args, rule: str, f: int, eps: float):
    c = rj.config.base_config()
    c.seed = args.seed
    c.num_nodes = args.n
    c.algorithm.name = "fedavg"
    c.data.name = "digits"
    c.data.batch_size = args.batch
    c.model.hidden = (args.hidden,)
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = args.lr
    c.num_rounds = args.rounds
    c.eval_every = args.rounds
    c.checkpoint_every = 0
    c.progress = False
    c.plots = False
    c.aggregation.rule = rule if f > 0 else "mean"
    if f > 0:
        c.byzantine.num = f
        c.byzantine.attack = args.attack
    if math.isfinite(eps):
        c.privacy.mode = "dp_sgd"
        c.privacy.clip_norm = 1.0
        c.privacy.sampling = "poisson"
        c.privacy.target_epsilon = float(eps)
        c.privacy.delta = args.delta
    return c


def run(args) -> list[dict]:
    eps_grid = [float(e) for e in args.eps.split(",")]
    fs = [int(f) for f in args.fs.split(",")]
    rules = args.rules.split(",")
    rows, shared, done = [], {}, 0
    total = len(eps_grid) * (sum(f > 0 for f in fs) * len(rules) + (0 in fs))
    for eps in eps_grid:
        for f in fs:
            for rule in rules:
                if f == 0 and eps in shared:  # the attack-free cell is the same run for every rule
                    rows.append(dict(shared[eps], rule=rule))
                    continue
                t = time.perf_counter()
                res = rj.run(config(args, rule, f, eps))
                priv = res.experiment.privacy or {}
                row = dict(
                    rule=rule,
                    attack=args.attack if f else "none",
                    epsilon=eps,
                    f=f,
                    n=args.n,
                    noise_multiplier=priv.get("noise_multiplier", 0.0),
                    sample_rate=priv.get("sample_rate"),
                    epsilon_spent=res.final.get("epsilon", math.inf),
                    rounds=args.rounds,
                    test_accuracy=res.final["test_accuracy"],
                    seconds=time.perf_counter() - t,
                )
                rows.append(row)
                if f == 0:
                    shared[eps] = row
                done += 1
                print(
                    f"[{done}/{total}] ε={eps:<4g} f={f} {rule:18s} "
                    f"σ={row['noise_multiplier']:.3f} acc={row['test_accuracy']:.3f} ({row['seconds']:.1f}s)",
                    flush=True,
                )
    return rows


def _eps_str(e):
    return "∞" if math.isinf(e) else f"{e:g}"


def tables(rows) -> str:
    eps = list(dict.fromkeys(r["epsilon"] for r in rows))
    fs = list(dict.fromkeys(r["f"] for r in rows))
    out = []
    for rule in dict.fromkeys(r["rule"] for r in rows):
        out.append(f"\n**{rule}** (test accuracy; rows ε, columns f)\n")
        out.append("| ε \\ f | " + " | ".join(str(f) for f in fs) + " |")
        out.append("|---|" + "---|" * len(fs))
        for e in eps:
            cells = [
                next(
                    (
                        f"{r['test_accuracy']:.3f}"
                        for r in rows
                        if r["rule"] == rule and r["epsilon"] == e and r["f"] == f
                    ),
                    "—",
                )
                for f in fs
            ]
            out.append(f"| {_eps_str(e)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(rows, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from redeem_jax.plotting import annotated_heatmap

    rules = list(dict.fromkeys(r["rule"] for r in rows))
    eps = list(dict.fromkeys(r["epsilon"] for r in rows))
    fs = list(dict.fromkeys(r["f"] for r in rows))
    fig, axes = plt.subplots(
        1, len(rules), figsize=(1.2 + 0.75 * len(fs) * len(rules), 0.5 * len(eps) + 1.8), squeeze=False
    )
    for j, rule in enumerate(rules):
        M = np.full((len(eps), len(fs)), np.nan)
        for r in rows:
            if r["rule"] == rule:
                M[eps.index(r["epsilon"]), fs.index(r["f"])] = r["test_accuracy"]
        ax = axes[0, j]
        im = annotated_heatmap(ax, M, fontsize=8)
        ax.set_xticks(range(len(fs)), [str(f) for f in fs])
        ax.set_xlabel("f (Byzantine nodes)")
        ax.set_yticks(range(len(eps)), [_eps_str(e) for e in eps] if j == 0 else [])
        if j == 0:
            ax.set_ylabel("ε (example-level, local DP)")
        ax.set_title(rule, fontsize=10)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="test accuracy")
    if title:
        fig.suptitle(title, fontsize=9, y=1.02)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/trilemma")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--eps", default="1,2,4,8,inf", help="target ε grid; inf = no DP")
    ap.add_argument("--fs", default="0,1,2,3")
    ap.add_argument("--rules", default="smea,nnm+trimmed_mean,mean")
    ap.add_argument("--attack", default="alie_opt")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="ε ∈ {2, ∞}, f ∈ {0, 2}, SMEA and mean, 30 rounds")
    ap.add_argument("--replot", action="store_true", help="redraw DIR/trilemma.png from its JSON")
    args = ap.parse_args(argv)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    if args.replot:
        rows = json.load(open(os.path.join(args.out, "trilemma.json")))
        for r in rows:
            r["epsilon"] = float(r["epsilon"])
        plot(rows, os.path.join(args.out, "trilemma.png"))
        return rows
    if args.quick:
        args.eps, args.fs, args.rules, args.rounds = "2,inf", "0,2", "smea,mean", 30
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    rows = run(args)
    with open(os.path.join(args.out, "trilemma.json"), "w") as fh:
        json.dump(
            [
                dict(
                    r,
                    epsilon=str(r["epsilon"]) if math.isinf(r["epsilon"]) else r["epsilon"],
                    epsilon_spent=None if math.isinf(r["epsilon_spent"]) else r["epsilon_spent"],
                )
                for r in rows
            ],
            fh,
            indent=1,
        )
    with open(os.path.join(args.out, "trilemma.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: r[k] for k in COLUMNS} for r in rows)
    plot(
        rows,
        os.path.join(args.out, "trilemma.png"),
        title=f"digits, n = {args.n}, FedAvg + worker momentum, {args.rounds} rounds, attack {args.attack}, "
        f"DP-SGD at every honest node (δ = {args.delta:g})",
    )
    d = int(rows and rj.build(config(args, "mean", 0, math.inf)).model.num_params)
    print(tables(rows))
    print(
        f"model dimension d = {d}; DP-SGD noise std on an honest node's averaged gradient = σ·C/B per "
        f"coordinate (C = 1, B = {args.batch}), σ by ε: "
        + ", ".join(
            f"{_eps_str(e)}: {s:.3f}"
            for e, s in dict.fromkeys((r["epsilon"], r["noise_multiplier"]) for r in rows if r["f"] == 0)
        )
    )
    print(f"wrote {args.out}/trilemma.{{csv,json,png}} ({time.perf_counter() - t0:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
