"""Measured (f, κ)-robustness of aggregation rules against the proven bounds, as f/n grows.

For each rule and each f at fixed n, ``rj.aggregators.empirical_kappa`` searches adversarial
inputs (ALIE-like, far points, sign flip, IPM, mimic, the lower-bound construction, then
gradient / random hill climbing over the Byzantine rows) for the worst ratio
‖F(x) − x̄_S‖² / ((1/|S|)Σ_{i∈S}‖xᵢ − x̄_S‖²). It is a lower estimate of κ; theory gives the upper
bound (``rj.theory.kappa_bound``, Allouah et al. 2023) and the universal lower bound f/(n − 2f).

    python experiments/kappa.py --out runs/kappa            # ~2 min on 2 cores
    python experiments/kappa.py --quick --out /tmp/kappa    # seconds

Writes DIR/kappa.json and DIR/kappa.png (log scale, one panel per rule: measured points
between the two theory curves). Expected: every measured point lies between f/(n − 2f) and
the rule's bound; NNM brings Krum and the median close to the lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402

RULES = (
    "trimmed_mean",
    "median",
    "geometric_median",
    "krum",
    "nnm+trimmed_mean",
    "nnm+krum",
    "meamed",
    "centered_clipping",
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/kappa")
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--d", type=int, default=5)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rules = args.rules.split(",")
    n = args.n
    fs = list(range(1, (n - 1) // 2 + 1))
    trials, steps = 4, 60
    if args.quick:
        rules, n, fs, trials, steps = ["trimmed_mean", "nnm+krum"], 9, [1, 2], 2, 10
    os.makedirs(args.out, exist_ok=True)
    records = []
    for rule in rules:
        for f in fs:
            try:
                rj.aggregators.check_preconditions(rule, n, f)
            except ValueError:
                continue  # e.g. Krum needs n >= 2f + 3
            t = time.perf_counter()
            k = rj.aggregators.empirical_kappa(
                rule, n, f, d=args.d, trials=trials, steps=steps, key=jax.random.PRNGKey(f)
            )
            bound = rj.theory.kappa_bound(rule, n, f)
            rec = {
                "rule": rule,
                "n": n,
                "f": f,
                "measured": float(k),
                "upper_bound": None if bound is None else float(bound),
                "lower_bound": rj.theory.kappa_lower_bound(n, f),
                "seconds": time.perf_counter() - t,
            }
            records.append(rec)
            ub = "—" if bound is None else f"{bound:.3g}"
            print(f"{rule:20s} f={f:2d}  lower {rec['lower_bound']:.3g}  measured {k:.3g}  bound {ub}", flush=True)
    with open(os.path.join(args.out, "kappa.json"), "w") as fh:
        json.dump(records, fh, indent=1)
    _plot(records, rules, n, os.path.join(args.out, "kappa.png"))
    print(f"wrote {args.out}/kappa.json and kappa.png")
    return records


def _plot(records, rules, n, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(rules))
    rows = -(-len(rules) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    for ax, rule in zip(axes.ravel(), rules):
        pts = [r for r in records if r["rule"] == rule]
        if not pts:
            ax.set_visible(False)
            continue
        x = np.array([r["f"] / n for r in pts])
        ax.semilogy(x, [r["measured"] for r in pts], "o", color="C0", label="measured (search)")
        ax.semilogy(x, [r["lower_bound"] for r in pts], "--", color="k", label="f/(n−2f)")
        ub = [r["upper_bound"] for r in pts]
        if all(u is not None for u in ub):
            ax.semilogy(x, ub, "-", color="C3", label="proven bound")
        ax.set(title=rule, xlabel="f / n")
        ax.grid(alpha=0.3, which="both")
    for ax in axes.ravel()[len(rules) :]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"(f, κ)-robustness, n = {n}: measured worst ratio vs. theory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
