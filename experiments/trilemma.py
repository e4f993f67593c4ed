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

Each (rule, f) is one ``rj.sweep`` over target ε × seed (σ calibrated per ε on the host; seeds
redraw the initial model, the minibatches, the DP noise and the attack): one compile for its
4 × 3 points, plus one sweep over seeds without DP. The partition and the Byzantine placement
are those of ``--seed`` for every point (as in ``rj.sweep``). A run whose test loss is not finite
counts as diverged (its accuracy is NaN in ``runs.csv``, 'diverged' in the tables, a cross on
the figure), never as a chance-level accuracy.

    python experiments/trilemma.py --out docs/results/trilemma        # 2995 s wall, 513 s CPU, load 10-26
    python experiments/trilemma.py --quick --out /tmp/trilemma        # the test's run (two sweeps)

The full run was measured on the shared 2-core machine while ~8 other jobs ran (load 10-26):
2995 s wall for 513 s of CPU (20 sweeps: 10 (rule, f) × {DP, no DP}); alone on 2 quiet cores it
is CPU-bound, so about 5-8 min. Results (docs/results.md): without DP both robust rules stay
within 1.7 points of the attack-free 0.953 up to f = 3; without attackers DP costs accuracy
smoothly (0.834 at ε = 8, 0.587 at ε = 1); together they compound (SMEA at ε = 2: 0.599, 0.442,
0.196 for f = 1, 2, 3); SMEA degrades later than NNM ∘ trimmed mean (ε = 4, f = 3: 0.421 against
0.204); the mean is at chance whenever f ≥ 1. All means over 3 seeds.

Writes in DIR: ``runs.csv`` (one row per rule, f, ε and seed: final test accuracy and loss, ε
spent), ``trilemma.csv`` (per rule, f and ε: mean, min and max over seeds, seed count, diverged
count, σ), ``meta.json`` (sizes, d, wall time, traces per sweep) and ``trilemma.png`` (accuracy
against f, one panel per rule, one line per ε with its min–max band). The Allouah et al. bound is
on the optimisation error of a smooth loss, not on test accuracy, so no theory line is drawn.
"""

from __future__ import annotations

import argparse
import json
import math
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

RULE_TITLE = {"smea": "SMEA", "nnm+trimmed_mean": "NNM ∘ trimmed mean", "mean": "mean"}


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


def _sigma(c, eps: float) -> float:
    """The noise multiplier ``rj.sweep`` calibrates for target ``eps`` on config ``c`` (same accountant)."""
    from redeem_jax.privacy.analysis import accounting

    p = rj.build(c).privacy
    steps = c.num_rounds * p["steps_per_round"]
    return float(
        accounting.noise_multiplier_for(
            eps, p["sample_rate"], steps, p["delta"], accountant=p["accountant"], sampling=p["sampling"]
        )
    )


def run(args):
    """Per-seed final rows (a DataFrame) and the traces of every sweep."""
    import pandas as pd

    eps_grid = [float(e) for e in args.eps.split(",")]
    finite = [e for e in eps_grid if math.isfinite(e)]
    fs = [int(f) for f in args.fs.split(",")]
    rules = args.rules.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    frames, traces = [], {}
    for f in fs:
        for rule in rules if f > 0 else ["mean"]:  # f = 0: every rule is the mean (module doc)
            for private in [True] * bool(finite) + [False] * any(math.isinf(e) for e in eps_grid):
                t = time.perf_counter()
                c = config(args, rule, f, finite[0] if private else math.inf)
                axes = {"privacy.target_epsilon": finite, "seed": seeds} if private else {"seed": seeds}
                full = rj.sweep(c, axes, progress=False)
                df = final(full)
                if not private:
                    df["privacy.target_epsilon"] = math.inf
                    df["epsilon"] = math.inf
                df = df.rename(columns={"privacy.target_epsilon": "target_epsilon", "epsilon": "epsilon_spent"})
                df["rule"], df["f"] = rule, f
                frames.append(df)
                key = f"{rule}, f={f}, {'DP' if private else 'no DP'}"
                traces[key] = full.attrs["traces"]  # [1]: the whole ε × seed grid compiled once
                print(
                    f"{key:32s} acc " + ", ".join(f"{a:.3f}" for a in df["test_accuracy"]) + f" "
                    f"({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
    runs = pd.concat(frames, ignore_index=True)
    diverged = ~np.isfinite(runs["test_loss"].to_numpy(float))
    runs["diverged"] = diverged.astype(int)
    runs.loc[diverged, "test_accuracy"] = np.nan  # a NaN model's argmax is no accuracy
    shared = runs[runs["f"] == 0]
    runs = pd.concat(
        [runs[runs["f"] > 0]] + [shared.assign(rule=r) for r in rules], ignore_index=True
    )  # the shared f = 0 run stands in every rule's table
    cols = ["rule", "f", "target_epsilon", "seed", "test_accuracy", "test_loss", "epsilon_spent", "diverged"]
    return runs[cols].sort_values(["rule", "f", "target_epsilon", "seed"], kind="stable"), traces


def summarize(runs, sigmas: dict):
    s = R.over_seeds(runs, ["rule", "f", "target_epsilon"], ["test_accuracy", "test_loss"])
    s["diverged"] = runs.groupby(["rule", "f", "target_epsilon"], sort=False)["diverged"].sum().to_numpy()
    s["noise_multiplier"] = [sigmas.get(e, 0.0) for e in s["target_epsilon"]]
    return s


def _eps_str(e):
    return "∞ (no DP)" if math.isinf(e) else f"{e:g}"


def _read(folder: Path):
    import pandas as pd

    return pd.read_csv(Path(folder) / "trilemma.csv")


def _rule_table(rule: str):
    def table(folder: Path) -> str:
        s = _read(folder)
        s = s[s["rule"] == rule]
        if s.empty:
            return f"(no {rule} runs in {folder})"
        fs = sorted(s["f"].unique())
        eps = sorted(s["target_epsilon"].unique())
        rows = []
        for e in eps:
            cells = []
            for f in fs:
                r = s[(s["f"] == f) & (s["target_epsilon"] == e)]
                cells.append(
                    "—"
                    if r.empty
                    else R.fmt_band(
                        r["test_accuracy_mean"].iloc[0], r["test_accuracy_min"].iloc[0], r["test_accuracy_max"].iloc[0]
                    )
                )
            rows.append([f"ε = {_eps_str(e)}", *cells])
        k = int(s["seeds"].min())
        caption = (
            f"**{RULE_TITLE.get(rule, rule)}**: test accuracy, mean [min, max] over {k} seeds; rows ε, columns f\n\n"
        )
        return caption + R.markdown_table([f"{RULE_TITLE.get(rule, rule)}", *(f"f = {f}" for f in fs)], rows)

    return table


def _compare(folder: Path) -> str:
    """SMEA against NNM ∘ trimmed mean on every cell with DP noise and f ≥ 1."""
    s = _read(folder)
    a, b = (s[s["rule"] == r].set_index(["f", "target_epsilon"]) for r in ("smea", "nnm+trimmed_mean"))
    rows = []
    for f, e in a.index:
        if f == 0 or not math.isfinite(e) or (f, e) not in b.index:
            continue
        cell = [
            R.fmt_band(*x.loc[(f, e), ["test_accuracy_mean", "test_accuracy_min", "test_accuracy_max"]]) for x in (a, b)
        ]
        diff = a.loc[(f, e), "test_accuracy_mean"] - b.loc[(f, e), "test_accuracy_mean"]
        rows.append([f"ε = {e:g}, f = {f}", *cell, R.fmt(diff, 2)])
    k = int(s["seeds"].min())
    return (
        f"SMEA against NNM ∘ trimmed mean under DP and attack (test accuracy, mean [min, max] over {k} seeds)\n\n"
        + R.markdown_table(["setting", "SMEA", "NNM ∘ trimmed mean", "difference of means"], rows)
    )


TABLES = {
    "smea": _rule_table("smea"),
    "nnm_trimmed_mean": _rule_table("nnm+trimmed_mean"),
    "mean": _rule_table("mean"),
    "compare": _compare,
}


def plot(s, path, title=""):
    """Accuracy against f, one panel per rule, one line per ε (mean, min–max band over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(dict.fromkeys(s["rule"]))
    eps = sorted(s["target_epsilon"].unique())
    colors = dict(zip(eps, plt.cm.viridis(np.linspace(0, 0.9, len(eps)))))
    fig, axes = plt.subplots(1, len(rules), figsize=(4.2 * len(rules), 3.8), sharey=True, squeeze=False)
    for ax, rule in zip(axes[0], rules):
        for e in eps:
            r = s[(s["rule"] == rule) & (s["target_epsilon"] == e)].sort_values("f")
            ok = r["diverged"] == 0
            col = "k" if math.isinf(e) else colors[e]
            x = r["f"].to_numpy()
            ax.plot(x[ok], r["test_accuracy_mean"][ok], "o-", color=col, label=f"ε = {_eps_str(e)}", ms=4)
            ax.fill_between(x[ok], r["test_accuracy_min"][ok], r["test_accuracy_max"][ok], color=col, alpha=0.15)
            if (~ok).any():  # diverged seeds: a cross at the bottom, never a value
                ax.plot(x[~ok], np.full((~ok).sum(), 0.02), "x", color=col, ms=8, mew=2)
                for xi, dv in zip(x[~ok], r["diverged"][~ok]):
                    ax.annotate(f"diverged ({dv})", (xi, 0.02), textcoords="offset points", xytext=(4, 4), fontsize=6)
        ax.set_title(RULE_TITLE.get(rule, rule), fontsize=10)
        ax.set_xlabel("f (Byzantine nodes of n)")
        ax.set_xticks(sorted(s["f"].unique()))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test accuracy (fraction correct)")
    axes[0, 0].set_ylim(0, 1)
    axes[0, -1].legend(fontsize=7, loc="lower left", title="DP-SGD target ε", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
    ap.add_argument("--seed", type=int, default=0, help="the partition and Byzantine placement")
    ap.add_argument("--seeds", default="0,1,2", help="the seed axis of every sweep")
    ap.add_argument(
        "--quick", action="store_true", help="ε ∈ {2, 8}, f ∈ {0, 2}, SMEA, 30 rounds, 2 seeds (two compiles)"
    )
    ap.add_argument("--replot", action="store_true", help="redraw DIR/trilemma.png from DIR/trilemma.csv")
    args = ap.parse_args(argv)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    out = R.out_dir(args.out)
    if args.replot:
        s = _read(out)
        plot(s, out / "trilemma.png")
        return s
    if args.quick:
        args.eps, args.fs, args.rules, args.rounds, args.seeds = "2,8", "0,2", "smea", 30, "0,1"
    t0 = time.perf_counter()
    runs, traces = run(args)
    eps = sorted({e for e in runs["target_epsilon"] if math.isfinite(e)})
    sigmas = {e: _sigma(config(args, "mean", 0, e), e) for e in eps}
    s = summarize(runs, sigmas)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.6g")
    s.to_csv(out / "trilemma.csv", index=False, float_format="%.6g")
    d = int(rj.build(config(args, "mean", 0, math.inf)).model.num_params)
    wall = time.perf_counter() - t0
    seeds = runs["seed"].nunique()
    meta = dict(
        n=args.n, rounds=args.rounds, d=d, batch=args.batch, lr=args.lr, delta=args.delta, attack=args.attack,
        seeds=sorted(int(x) for x in runs["seed"].unique()), wall_seconds=round(wall, 1), traces=traces,
        noise_multiplier={str(e): round(v, 4) for e, v in sigmas.items()},
    )  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    plot(
        s,
        out / "trilemma.png",
        title=f"digits, n = {args.n}, FedAvg + worker momentum, {args.rounds} rounds, attack {args.attack}, "
        f"DP-SGD at every honest node (δ = {args.delta:g}); mean and min–max over {seeds} seeds",
    )
    for fn in TABLES.values():
        print(fn(out), "\n")
    print(f"d = {d}; σ by ε: " + ", ".join(f"{e:g}: {v:.3f}" for e, v in sigmas.items()))
    print(f"wrote {out}/{{runs,trilemma}}.csv, meta.json, trilemma.png ({wall:.0f} s)")
    return s


if __name__ == "__main__":
    main()
