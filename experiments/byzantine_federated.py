"""Byzantine-robust federated learning: accuracy for aggregator × attack × heterogeneity.

n nodes, f = n/5 of them Byzantine, train an MLP on digits (or MNIST-1D) with worker momentum
(Karimireddy, He & Jaggi 2021; Farhadkhani et al. 2022): each worker sends its update −η·mᵢ,
the Byzantine ones send the attack's vectors computed from all honest updates, and the server
applies the robust rule (with pre-aggregators such as NNM, Allouah et al. 2023) and
broadcasts. Each cell is the final mean test accuracy of the honest nodes' (= the server's) model.

Default grid: 7 rules (mean, median, trimmed mean, geometric median, Krum, centered clipping,
NNM ∘ trimmed mean) × 7 attacks (none, sign flip, IPM ε = 0.1, ALIE at z_max, NaN, sign flip
with its factor line-searched against the rule, label flip) × α ∈ {1, 0.1}, 3 seeds, 100 rounds.
"none" keeps the rule assuming f while nobody attacks (all n nodes train); label flip trains the
f Byzantine nodes on flipped labels and lets them send honest-looking updates.

Each (α, rule, attack) is one ``rj.sweep`` over seeds (one compile, asserted; seeds redraw the
initial model, the minibatches and the attackers' randomness; the partition and the Byzantine
placement are those of ``--seed``). A rule, an attack or α changes the program or the data
shapes, so they are looped over, and a sweep's cost is its compile (about 15 s of CPU here, of
which the 100 rounds take at most ~3 s: measured 1 against 100 rounds, so fewer rounds would
save little). Where two attacks are one
program they share it: IPM's −ε·mean(honest) is sign flipping's −scale·mean(honest) at
scale = ε, so both columns come from one sweep with ``byzantine.strength`` vmapped beside the
seeds (:func:`programs`): 6 compiles per (α, rule), 84 for the grid. Any registered rule or
attack can be given with ``--rules`` / ``--attacks``. A run whose test loss is not finite (a
NaN attacker averaged in) is diverged: NaN accuracy in ``runs.csv``, 'diverged' in the tables,
a cross on the figure, never the accuracy of a NaN model.

    python experiments/byzantine_federated.py --out docs/results/byzantine_federated   # 3280 s wall, 1402 s CPU
    python experiments/byzantine_federated.py --quick --out /tmp/byz_fed               # the test's run

The full run (84 sweeps, 3 seeds each) was measured on the shared 2-core machine at load 4-11
beside other jobs: 3280 s wall for 1402 s of CPU (23 min; 16.7 s of CPU per sweep); the --quick
test (2 sweeps, 20 rounds) takes 18 s at load 1. Results (docs/results.md, mean over 3 seeds):
at α = 1 every rule stays within 10 points of its own attack-free accuracy (Krum's is only
0.789) except two breaks, the mean under NaN and the line-searched sign flip (diverged) and
centered clipping under the line-searched sign flip (0.049); at α = 0.1 the median and Krum
lose most of their accuracy without attack (0.625, 0.214), and sign flipping, IPM or the
line-searched sign flip breaks every robust rule but centered clipping (0.618 at worst).

Writes in DIR: ``runs.csv`` (one row per α, rule, attack and seed), ``accuracy.csv`` (per α, rule
and attack: mean, min and max over seeds, seed and diverged counts), ``meta.json`` (sizes, wall
and CPU time, load, traces per sweep) and ``byzantine_federated.png`` (one panel per α: bars of
the mean over seeds with min–max whiskers, one bar per rule in each attack's group; chance level
dashed; × : diverged).
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

RULES = ("mean", "median", "trimmed_mean", "geometric_median", "krum", "centered_clipping", "nnm+trimmed_mean")
ATTACKS = ("none", "sign_flip", "ipm", "alie", "nan", "sign_flip_opt", "label_flip")
ATTACK_NAMES = {"none": "none", "sign_flip": "sign flip", "ipm": "IPM (ε = 0.1)", "alie": "ALIE (z_max)", "nan": "NaN",
                "sign_flip_opt": "sign flip, line-searched", "label_flip": "label flip"}  # fmt: skip
IPM_EPSILON = 0.1  # Xie et al. (2020)'s ε, attacks.ipm's default
ALL_RULES = (  # what the registry offers and the loop accepts (--rules)
    "mean", "median", "trimmed_mean", "geometric_median", "krum", "multi_krum", "centered_clipping", "meamed",
    "caf", "nnm+trimmed_mean", "nnm+median", "nnm+krum", "nnm+geometric_median", "arc+nnm+trimmed_mean",
    "bucketing+trimmed_mean",
)  # fmt: skip


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


def programs(attacks) -> list[tuple[str, dict[str, float | None]]]:
    """The sweeps one (α, rule) needs: ``(attack run, {column: byzantine.strength or None})``.

    IPM (Xie et al. 2020) sends ``-ε · mean(honest)`` and sign flipping ``-scale · mean(honest)``
    (``attacks.ipm`` and ``attacks.sign_flip``): one program whose factor is a hyper-parameter, so
    both columns come out of one sweep with ``byzantine.strength`` vmapped beside the seeds.
    """
    out, shared = [], "sign_flip" in attacks and "ipm" in attacks
    for atk in attacks:
        if shared and atk == "ipm":
            continue
        if shared and atk == "sign_flip":
            out.append(("sign_flip", {"sign_flip": 1.0, "ipm": IPM_EPSILON}))
        else:
            out.append((atk, {atk: None}))
    return out


def run(args, rules, attacks, alphas, rounds, seeds, f):
    """Per-seed final rows (a DataFrame) and the traces of every sweep."""
    import pandas as pd

    progs = programs(attacks)
    order = {x: i for i, x in enumerate(attacks)}
    frames, traces, total = [], {}, len(rules) * len(progs) * len(alphas)
    for a in alphas:
        for rule in rules:
            cell = []
            for atk, columns in progs:
                t = time.perf_counter()
                axes = {"seed": seeds}
                if list(columns.values()) != [None]:
                    axes["byzantine.strength"] = list(columns.values())
                full = rj.sweep(config(args.dataset, args.n, f, a, rule, atk, rounds, args.seed), axes, progress=False)
                tr = full.attrs["traces"]
                assert list(tr) == [1], (a, rule, atk, tr)  # seeds (and strengths) share one compile
                df = final(full)
                by = {v: k for k, v in columns.items()}
                df["attack"] = [by[v] for v in df["byzantine.strength"]] if "byzantine.strength" in df else atk
                df["alpha"], df["rule"] = a, rule
                cell.append(df)
                traces[f"alpha={a:g}, {rule}, {'+'.join(columns)}"] = list(tr)
                print(
                    f"[{len(traces)}/{total}] α={a:g} {rule:18s} {'+'.join(columns):14s} acc "
                    + ", ".join(f"{x:.3f}" for x in df["node_test_accuracy_mean"])
                    + f" ({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )  # fmt: skip
            df = pd.concat(cell, ignore_index=True)
            frames.append(df.iloc[np.lexsort((df["seed"].to_numpy(), df["attack"].map(order).to_numpy()))])
    runs = pd.concat(frames, ignore_index=True)
    loss = runs[["test_loss", "node_test_loss_mean"]].to_numpy(float)
    diverged = ~np.isfinite(loss).all(1)
    runs["diverged"] = diverged.astype(int)
    runs.loc[diverged, ["node_test_accuracy_mean", "test_accuracy"]] = np.nan  # no accuracy for a NaN model
    cols = ["alpha", "rule", "attack", "seed", "node_test_accuracy_mean", "test_accuracy", "test_loss", "diverged"]
    return runs[cols], traces


def summarize(runs):
    by = ["alpha", "rule", "attack"]
    s = R.over_seeds(runs, by, ["node_test_accuracy_mean"])
    s["diverged"] = runs.groupby(by, sort=False)["diverged"].sum().to_numpy()
    return s


def read_csv(path):
    """A result CSV with the attack named 'nan' kept as a name (only empty cells are missing values)."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _alpha_label(a: float) -> str:
    return f"Dirichlet α = {a:g}" if a > 0 else "iid"


def _alpha_table(alpha: float):
    def table(folder: Path) -> str:
        s = read_csv(Path(folder) / "accuracy.csv")
        s = s[np.isclose(s["alpha"], alpha)]
        rules, attacks = list(dict.fromkeys(s["rule"])), list(dict.fromkeys(s["attack"]))
        cell = {(r["rule"], r["attack"]): r for _, r in s.iterrows()}
        rows = []
        for rule in rules:
            cells = []
            for atk in attacks:
                r = cell.get((rule, atk))
                if r is None:
                    cells.append("—")
                elif r["diverged"] > 0:
                    cells.append(f"diverged ({int(r['diverged'])}/{int(r['seeds'])})")
                else:
                    m = "node_test_accuracy_mean"
                    cells.append(R.fmt_band(r[f"{m}_mean"], r[f"{m}_min"], r[f"{m}_max"]))
            rows.append([rule, *cells])
        k = int(s["seeds"].min())
        first = " (the attack-free column first: the rule assumes f, nobody attacks)" if attacks[0] == "none" else ""
        return (
            f"**{_alpha_label(alpha)}**: test accuracy of the honest model, mean [min, max] over {k} seeds{first}\n\n"
            + R.markdown_table(["rule", *(ATTACK_NAMES.get(a, a) for a in attacks)], rows)
        )

    return table


TABLES = {"alpha_1": _alpha_table(1.0), "alpha_0.1": _alpha_table(0.1)}


def plot(s, path, title=""):
    """One panel per α: per attack a group of bars (one per rule), mean over seeds, min–max whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = list(dict.fromkeys(s["alpha"]))
    rules, attacks = list(dict.fromkeys(s["rule"])), list(dict.fromkeys(s["attack"]))
    colors = dict(zip(rules, plt.cm.tab10.colors))
    width = 0.8 / len(rules)
    fig, axes = plt.subplots(len(alphas), 1, figsize=(3.6 + 1.3 * len(attacks), 3.2 * len(alphas)), squeeze=False)
    m = "node_test_accuracy_mean"
    for ax, a in zip(axes[:, 0], alphas):
        for i, rule in enumerate(rules):
            for j, atk in enumerate(attacks):
                r = s[(s["alpha"] == a) & (s["rule"] == rule) & (s["attack"] == atk)]
                if r.empty:
                    continue
                r, x = r.iloc[0], j - 0.4 + width * (i + 0.5)
                if r["diverged"] > 0:  # a cross on the axis, never a bar at chance
                    ax.plot(x, 0.03, "x", color=colors[rule], ms=7, mew=2)
                    ax.annotate("diverged", (x, 0.06), rotation=90, ha="center", va="bottom", fontsize=6)
                    continue
                ax.bar(x, r[f"{m}_mean"], width, color=colors[rule],
                       yerr=[[r[f"{m}_mean"] - r[f"{m}_min"]], [r[f"{m}_max"] - r[f"{m}_mean"]]],
                       error_kw=dict(lw=0.8, capsize=2))  # fmt: skip
        for rule in rules:  # a legend entry for every rule, even one whose every cell diverged
            ax.bar(np.nan, np.nan, color=colors[rule], label=rule)
        ax.axhline(0.1, color="grey", ls="--", lw=0.8, label="chance (10 classes)")
        ax.set_xticks(range(len(attacks)), [ATTACK_NAMES.get(a, a).replace(", ", ",\n") for a in attacks])
        ax.set_xlabel("attack (f = n/5 Byzantine workers)")
        ax.set_ylabel("test accuracy (fraction correct)")
        ax.set_ylim(0, 1.05)
        ax.set_title(_alpha_label(a), fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(meta) -> str:
    return (
        f"{meta['dataset']}, n = {meta['n']}, f = {meta['f']} Byzantine, FedAvg + worker momentum 0.9, "
        f"{meta['rounds']} rounds\nbars: mean over {len(meta['seeds'])} seeds, whiskers: min–max; × : diverged"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/byzantine_federated")
    ap.add_argument("--dataset", default="digits", choices=("digits", "mnist1d"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--f", type=int, default=-1, help="Byzantine nodes (default n/5)")
    ap.add_argument("--alphas", default="1.0,0.1", help="Dirichlet α values; 0 means iid")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="the partition and the Byzantine placement")
    ap.add_argument("--seeds", default="0,1,2", help="the seed axis of every sweep")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="the mean under sign flip, IPM (one sweep) and NaN; α = 1; 20 rounds; 2 seeds",
    )
    ap.add_argument("--replot", action="store_true", help="redraw DIR/byzantine_federated.png from DIR/accuracy.csv")
    args = ap.parse_args(argv)
    out = R.out_dir(args.out)
    if args.replot:
        s = read_csv(out / "accuracy.csv")
        meta = json.loads((out / "meta.json").read_text())
        plot(s, out / "byzantine_federated.png", _title(meta))
        return s
    f = args.n // 5 if args.f < 0 else args.f
    rules, attacks = args.rules.split(","), args.attacks.split(",")
    alphas = [float(a) for a in args.alphas.split(",")]
    rounds, seeds = args.rounds, [int(x) for x in args.seeds.split(",")]
    if args.quick:
        rules, attacks, alphas, rounds, seeds = ["mean"], ["sign_flip", "ipm", "nan"], [1.0], 20, [0, 1]
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    runs, traces = run(args, rules, attacks, alphas, rounds, seeds, f)
    s = summarize(runs)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.6g")
    s.to_csv(out / "accuracy.csv", index=False, float_format="%.6g")
    wall = time.perf_counter() - t0
    meta = dict(dataset=args.dataset, n=args.n, f=f, rounds=rounds, seeds=seeds, momentum=0.9, lr=0.05, batch=16, ipm_epsilon=IPM_EPSILON,
                wall_seconds=round(wall, 1), cpu_seconds=round(time.process_time() - c0, 1),
                load=[round(load0, 1), round(os.getloadavg()[0], 1)], traces=traces)  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    plot(
        s,
        out / "byzantine_federated.png",
        _title(meta),
    )
    for a in alphas:
        print(_alpha_table(a)(out), "\n")
    print(f"wrote {out}: runs.csv, accuracy.csv, meta.json, byzantine_federated.png ({wall:.0f} s)")
    return s


if __name__ == "__main__":
    main()
