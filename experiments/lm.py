"""Language models across nodes: D-SGD, local SGD, DiLoCo (server and ring gossip) and
LoRA-only exchange on the byte-level text corpus, and DiLoCo's pseudo-gradients under attack.

Workload: ``data.name = "text"`` (docstrings of 39 standard-library modules, bytes), split
``contiguous``ly over N = 8 nodes (train windows are ordered by module, so every node holds a
few sources: natural heterogeneity), a tiny decoder-only transformer (``model.name =
"transformer"``), AdamW inner steps for every method, evaluation on the held-out tail of every
source. Perplexity is exp(mean test cross-entropy per byte) of each node's own model, averaged
over nodes in log space (exp of ``node_test_loss_mean``).

Methods, all with the same number T = R·H of inner AdamW steps per node:

* **D-SGD** (ring, one step per round): T rounds, T exchanges; evaluated every R rounds, so its
  round R is at the H-step methods' byte budget.
* **local SGD** = FedAvg with H local steps: DiLoCo on the server with outer lr 1 and no
  momentum (equal to ``fedavg`` to float tolerance: tests/test_diloco.py); R rounds.
* **local D-SGD** (ring, H local steps): DiLoCo by ring gossip with outer lr 1, no momentum.
* **DiLoCo** (Douillard et al. 2023) on the server and by ring gossip: outer Nesterov step
  η = 0.7, μ = 0.9 (the paper's); R rounds. The server and ring groups are one ``rj.sweep``
  each over seed × outer lr × outer momentum (one compile per group), which also gives the
  two one-ingredient ablations (η = 0.7 without momentum; η = 1 with μ = 0.9).
* **DiLoCo, LoRA-only exchange**: the same on the server with ``model.lora.rank = 8`` adapters
  on attention, MLP and the output head, FFA-LoRA aggregation (Sun et al. 2024: A frozen and shared, only B is a row), so each message
  is the adapters' B factors; the frozen base is a random draw (no pretrained model here), so
  this row shows the bytes saved, not fine-tuning quality.

Robust DiLoCo: 2 of 8 nodes send, instead of their outer update, ALIE (Baruch et al. 2019;
z = 1 near its stealthy default, z = 5) or IPM (Xie et al. 2020; −ε·honest mean, ε = 0.5 and 4:
at ε = 4 the plain mean of 6 honest and 2 forged updates points uphill); the server aggregates
with the plain mean or NNM ∘ trimmed mean (Allouah et al. 2023); the attack-free DiLoCo
(server) run is the reference. The attack's strength is vmapped (one compile per rule).

Reference line: the test cross-entropy of the train set's byte frequencies (a unigram model:
what a model that ignores context reaches); the uniform byte model is 256.

    python experiments/lm.py --out docs/results/lm            # full run
    python experiments/lm.py --quick --out /tmp/lm            # the test's run (server group, IPM)
    python experiments/lm.py --out DIR --parts dsgd,robust_ipm   # rerun some groups, keep the rest
    python experiments/lm.py --out DIR --parts plots             # figures and finals from the files

Measured on the 2-core development machine shared with other jobs (load 15-28): the full run
took 1503 s wall (methods 1223 s, ALIE 280 s; ``summary.json``), of which the XLA compiles
(one per group and robust rule) are most; the D-SGD and IPM groups were rerun with
``--parts dsgd,robust_ipm`` (D-SGD evaluated every R rounds). The quick run takes 20 s of CPU
(100 s wall at load 20).

Writes in DIR: ``curves.csv`` (one row per method and evaluated round: perplexity of the nodes'
own models and of the averaged model, MB sent per node, inner steps; mean/min/max over seeds,
``seeds``), ``final.csv`` (the last round of each method), ``robust.csv`` and
``robust_final.csv``, ``summary.json`` (sizes, references, run time) and ``lm_perplexity.png``
(against rounds and against bytes sent), ``lm_robust.png``. ``TABLES``: ``final``,
``equal_bytes`` (every method at DiLoCo's byte budget), ``robust``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _results import fmt, fmt_band, markdown_table, over_seeds  # noqa: E402

ETA, MU = 0.7, 0.9  # DiLoCo's outer learning rate and Nesterov momentum (Douillard et al. 2023)


def sizes(quick: bool) -> dict:
    """Every size of the run: tiny for the test, a few minutes on 2 shared cores otherwise."""
    if quick:
        return dict(n=8, seq_len=16, d_model=16, heads=2, layers=1, batch=4, rounds=4, h=2, test=32, seeds=2, lr=1e-2)
    return dict(n=8, seq_len=32, d_model=32, heads=2, layers=1, batch=8, rounds=30, h=8, test=256, seeds=3, lr=5e-3)


def base_config(s: dict, **over):
    """The shared LM config (text corpus split by source, tiny transformer, AdamW inner steps)."""
    import redeem_jax as rj

    c = rj.config.base_config()
    fields = {
        "num_nodes": s["n"],
        "topology.name": "ring",
        "data.name": "text",
        "data.seq_len": s["seq_len"],
        "data.partition": "contiguous",
        "data.batch_size": s["batch"],
        "model.name": "transformer",
        "model.d_model": s["d_model"],
        "model.num_heads": s["heads"],
        "model.num_layers": s["layers"],
        "optimizer.name": "adamw",
        "optimizer.learning_rate": s["lr"],
        "eval.max_test_examples": s["test"],
        "checkpoint_every": 0,
        "progress": False,
        "plots": False,
        **over,
    }
    for k, v in fields.items():
        rj.config.set_field(c, k, v)
    return c


def _diloco(s: dict, over: str, rounds: int, **extra):
    return base_config(
        s,
        **{
            "algorithm.name": "diloco",
            "algorithm.over": over,
            "algorithm.local_steps": s["h"],
            "num_rounds": rounds,
            "eval_every": max(1, rounds // 6),
            **extra,
        },
    )


def _tidy(df, method: str, h: int, n: int):
    """The sweep's rows with the columns the files keep."""
    out = df[["seed", "round", "node_test_loss_mean", "test_loss", "bytes_sent"]].copy()
    out["method"] = method
    out["perplexity"] = np.exp(out["node_test_loss_mean"])
    out["averaged_model_perplexity"] = np.exp(out["test_loss"])
    out["inner_steps"] = out["round"] * h
    out["mb_per_node"] = out["bytes_sent"] / n / 1e6
    return out


GROUPS = ("server", "ring", "dsgd", "lora", "robust_alie", "robust_ipm")
QUICK_GROUPS = ("server", "robust_ipm")  # each group is one or two XLA compiles: compiles dominate
ATTACKS = {
    # ALIE (Baruch et al. 2019): z = 1 is near its stealthy default (≈0.3 for 2 of 8), 5 is loud.
    "robust_alie": ("alie", "z", (1.0, 5.0)),
    # IPM (Xie et al. 2020): −ε·(honest mean); ε = 4 makes the plain mean point uphill.
    "robust_ipm": ("ipm", "ε", (0.5, 4.0)),
}


def methods(s: dict, seeds, groups) -> pd.DataFrame:
    """Every method's (seed, round) rows for the ``groups`` asked for: one ``rj.sweep`` each."""
    import pandas as pd

    import redeem_jax as rj

    r, h, n = s["rounds"], s["h"], s["n"]
    outer = {"seed": list(seeds), "algorithm.outer_lr": [1.0, ETA], "algorithm.outer_momentum": [0.0, MU]}
    names = {
        "server": {(1.0, 0.0): "local SGD (FedAvg, H steps)", (ETA, MU): "DiLoCo (server)"},
        "ring": {(1.0, 0.0): "local D-SGD (ring, H steps)", (ETA, MU): "DiLoCo (ring gossip)"},
    }
    parts = []
    for group in [g for g in ("server", "ring") if g in groups]:
        df = rj.sweep(_diloco(s, "server" if group == "server" else "graph", r), outer)
        for (lr, mu), g in df.groupby(["algorithm.outer_lr", "algorithm.outer_momentum"]):
            key = (round(float(lr), 6), round(float(mu), 6))
            parts.append(_tidy(g, names[group].get(key, f"DiLoCo ({group}), η={lr:g}, μ={mu:g}"), h, n))
    if "dsgd" in groups:
        # Evaluated every r rounds: round r is D-SGD at the H-step methods' byte budget.
        c = base_config(s, **{"algorithm.name": "dsgd", "num_rounds": r * h, "eval_every": r})
        parts.append(_tidy(rj.sweep(c, {"seed": list(seeds)}), "D-SGD (ring, 1 step)", 1, n))
    if "lora" in groups:
        # Adapters on every dense layer incl. the head (the random base's head would be frozen).
        lora = {"model.lora.rank": 8, "model.lora.aggregation": "ffa", "model.lora.targets": "attention,mlp,head"}
        df = rj.sweep(_diloco(s, "server", r, **lora), {"seed": list(seeds)})
        parts.append(_tidy(df, "DiLoCo (server), LoRA r=8 (FFA)", h, n))
    return pd.concat(parts, ignore_index=True) if parts else None


def robust(s: dict, seeds, groups, quick: bool = False) -> pd.DataFrame:
    """DiLoCo on the server with 2 of 8 nodes attacking, plain mean vs NNM ∘ trimmed mean
    (``quick``: the robust rule only), the attack's strength vmapped."""
    import pandas as pd

    import redeem_jax as rj

    parts = []
    for group in [g for g in ATTACKS if g in groups]:
        attack, sym, strengths = ATTACKS[group]
        c = _diloco(s, "server", s["rounds"], **{"byzantine.num": 2, "byzantine.attack": attack})
        rules = ["nnm+trimmed_mean"] if quick else ["mean", "nnm+trimmed_mean"]
        df = rj.sweep(c, {"seed": list(seeds), "aggregation.rule": rules, "byzantine.strength": list(strengths)})
        for (rule, z), g in df.groupby(["aggregation.rule", "byzantine.strength"], sort=False):
            label = f"{attack.upper()} {sym}={z:g}, {'plain mean' if rule == 'mean' else 'NNM ∘ trimmed mean'}"
            parts.append(_tidy(g, label, s["h"], s["n"]))
    return pd.concat(parts, ignore_index=True) if parts else None


def _merge(new, path: Path):
    """``new`` band rows, plus the rows of methods it does not have from ``path`` (a partial rerun)."""
    import pandas as pd

    if not path.exists():
        return new
    old = pd.read_csv(path)
    if new is None:
        return old
    return pd.concat([old[~old["method"].isin(set(new["method"]))], new], ignore_index=True)


def references(s: dict) -> dict:
    """Test cross-entropy (nats per byte) of the train set's byte frequencies (add-one smoothed)
    and of the uniform distribution, as perplexities."""
    from redeem_jax.data import datasets

    d = datasets.text(seq_len=s["seq_len"])
    counts = np.bincount(np.asarray(d.y_train).ravel(), minlength=256) + 1.0
    p = counts / counts.sum()
    test = np.asarray(d.y_test).ravel()
    return {"unigram": float(np.exp(-np.mean(np.log(p[test])))), "uniform": 256.0}


VALUES = ["perplexity", "averaged_model_perplexity", "mb_per_node", "inner_steps"]


DIVERGED = 2560.0  # 10x the uniform byte model's perplexity: a run above it has diverged


def band(df):
    """Mean/min/max over seeds per (method, round)."""
    return mark_diverged(over_seeds(df, ["method", "round"], VALUES))


def mark_diverged(b):
    """Rows where a seed's perplexity is non-finite or above :data:`DIVERGED`: mean and max set
    to NaN, so tables print 'diverged' and plots cut the curve there (never drawn at a cap)."""
    b = b.copy()
    for v in ("perplexity", "averaged_model_perplexity"):
        bad = ~np.isfinite(b[f"{v}_max"]) | (b[f"{v}_max"] > DIVERGED)
        b.loc[bad, [f"{v}_mean", f"{v}_max"]] = np.nan
    return b


ORDER = (
    "D-SGD (ring, 1 step)",
    "local SGD (FedAvg, H steps)",
    "local D-SGD (ring, H steps)",
    "DiLoCo (server)",
    "DiLoCo (ring gossip)",
    "DiLoCo (server), LoRA r=8 (FFA)",
)


def _order(method: str):
    """Table order: the methods above, then the ablations and attack settings by name."""
    return (ORDER.index(method), "") if method in ORDER else (len(ORDER), method)


def final(b):
    """The last evaluated round of each method, in table order."""
    f = b.sort_values("round").groupby("method", sort=False).tail(1)
    return f.iloc[sorted(range(len(f)), key=lambda i: _order(f["method"].iloc[i]))].reset_index(drop=True)


# --------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(ax, x, mean, lo, hi, color, label, ls="-"):
    """Mean with a min–max band; a diverged run is cut at its last finite point and marked ×."""
    x, mean, lo, hi = (np.asarray(a, float) for a in (x, mean, lo, hi))
    bad = ~np.isfinite(mean) | ~np.isfinite(hi)
    stop = int(np.argmax(bad)) if bad.any() else len(x)
    if stop < len(x):
        label = f"{label} (diverged at {x[stop]:g})"
    ax.plot(x[:stop], mean[:stop], color=color, label=label, marker="o", ms=3, ls=ls)
    ax.fill_between(x[:stop], lo[:stop], hi[:stop], color=color, alpha=0.2)
    if 0 < stop < len(x):
        ax.plot(x[stop - 1], mean[stop - 1], "x", color=color, ms=10, mew=2)


def _refs(ax, refs):
    ax.axhline(refs["unigram"], color="k", ls="--", lw=1, label=f"unigram byte model ({refs['unigram']:.1f})")


def plot_methods(b, refs, s, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (m, part) in enumerate(b.groupby("method", sort=False)):
        part = part.sort_values("round")
        args = (part["perplexity_mean"], part["perplexity_min"], part["perplexity_max"], f"C{i}", m)
        ls = "--" if "η=" in m else "-"  # the one-ingredient ablations, dashed
        _curve(axes[0], part["round"], *args, ls=ls)
        _curve(axes[1], part["mb_per_node_mean"], *args, ls=ls)
    for ax in axes:
        _refs(ax, refs)
        ax.set_yscale("log")
        ax.set_ylabel("test perplexity per byte (nodes' own models)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set(xlabel="communication rounds", title="against rounds (one exchange per round)")
    axes[0].set_xscale("symlog", linthresh=max(1, s["rounds"] // 4))
    axes[1].set(xlabel="MB sent per node (cumulative)", title="against bytes sent")
    axes[1].set_xscale("symlog", linthresh=0.01)
    for ax in axes:
        ax.set_xlim(left=0)
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"Byte-level LM on {s['n']} nodes (contiguous split: a few sources each), transformer d_model={s['d_model']}, "
        f"{s['rounds'] * s['h']} AdamW steps per node; mean and min–max over {s['seeds']} seeds",
        fontsize=10,
    )
    return _save(fig, path)


def plot_robust(b, refs, s, path):
    plt = _plt()
    attacks = sorted({m.split(" ")[0] for m in b["method"] if not m.startswith("no attack")})
    fig, axes = plt.subplots(1, len(attacks), figsize=(6.5 * len(attacks), 4.6), squeeze=False)
    ref = b[b["method"].str.startswith("no attack")].sort_values("round")
    for ax, attack in zip(axes[0], attacks):
        part = b[b["method"].str.startswith(attack + " ")]
        for i, (m, p) in enumerate(part.groupby("method", sort=False)):
            p = p.sort_values("round")
            ls = "-" if "plain mean" in m else "--"
            _curve(ax, p["round"], p["perplexity_mean"], p["perplexity_min"], p["perplexity_max"], f"C{i}", m, ls=ls)
        _curve(ax, ref["round"], ref["perplexity_mean"], ref["perplexity_min"], ref["perplexity_max"], "k", "no attack")
        _refs(ax, refs)
        ax.set(
            xlabel="communication rounds",
            ylabel="test perplexity per byte (honest nodes)",
            title=f"{attack}: plain mean (solid) vs NNM ∘ trimmed mean (dashed)",
        )
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"DiLoCo on the server, 2 of {s['n']} nodes Byzantine; mean and min–max over {s['seeds']} seeds",
        fontsize=10,
    )
    return _save(fig, path)


def _save(fig, path):
    plt = _plt()
    labels = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return labels


# --------------------------------------------------------------------------- tables
def table_final(folder: Path) -> str:
    """Final perplexity per method, with the bytes and inner steps it took."""
    import pandas as pd

    df = pd.read_csv(Path(folder) / "final.csv")
    rows = [
        (
            r.method,
            int(r["round"]),
            int(r.inner_steps_mean),
            fmt(r.mb_per_node_mean),
            fmt_band(r.perplexity_mean, r.perplexity_min, r.perplexity_max),
            fmt_band(
                r.averaged_model_perplexity_mean, r.averaged_model_perplexity_min, r.averaged_model_perplexity_max
            ),
            int(r.seeds),
        )
        for _, r in df.iterrows()
    ]
    header = ["method", "rounds", "AdamW steps / node", "MB sent / node", "perplexity", "averaged model", "seeds"]
    return markdown_table(header, rows)


def table_equal_bytes(folder: Path) -> str:
    """Perplexity of every method at the byte budget of the H-step methods' full run."""
    import pandas as pd

    b = pd.read_csv(Path(folder) / "curves.csv")
    f = pd.read_csv(Path(folder) / "final.csv")
    budget = float(f.loc[f["method"] == "DiLoCo (server)", "mb_per_node_mean"].iloc[0])
    rows = []
    for m in sorted(set(b["method"]), key=_order):
        part = b[(b["method"] == m) & (b["mb_per_node_mean"] <= budget * (1 + 1e-6))].sort_values("round")
        if part.empty:
            continue
        r = part.iloc[-1]
        rows.append(
            (
                m,
                int(r["round"]),
                fmt(r.mb_per_node_mean),
                fmt_band(r.perplexity_mean, r.perplexity_min, r.perplexity_max),
            )
        )
    return markdown_table(["method", "round", "MB sent / node", "perplexity at ≤ budget"], rows)


def table_robust(folder: Path) -> str:
    """Final honest-node perplexity under ALIE, plain mean vs NNM ∘ trimmed mean."""
    import pandas as pd

    df = pd.read_csv(Path(folder) / "robust_final.csv")
    rows = [
        (r.method, int(r["round"]), fmt_band(r.perplexity_mean, r.perplexity_min, r.perplexity_max), int(r.seeds))
        for _, r in df.iterrows()
    ]
    return markdown_table(["setting", "rounds", "perplexity (honest nodes)", "seeds"], rows)


TABLES = {"final": table_final, "equal_bytes": table_equal_bytes, "robust": table_robust}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lm", help="output directory")
    ap.add_argument("--quick", action="store_true", help="tiny model, few rounds, 2 seeds (the test)")
    ap.add_argument(
        "--parts",
        default="",
        help=f"comma-separated groups to (re)run, from {','.join(GROUPS)}, or 'plots' (none); other rows kept from --out",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = sizes(args.quick)
    # --parts plots: no run, the figures, finals and tables again from the files in --out.
    groups = [] if args.parts == "plots" else args.parts.split(",") if args.parts else None
    groups = list(QUICK_GROUPS if args.quick else GROUPS) if groups is None else groups
    if set(groups) - set(GROUPS):
        raise SystemExit(f"--parts: {sorted(set(groups) - set(GROUPS))} not in {GROUPS}")
    seeds = range(s["seeds"])
    refs = references(s)
    t0 = time.perf_counter()
    df = methods(s, seeds, groups)
    t1 = time.perf_counter()
    dr = robust(s, seeds, groups, args.quick)
    t2 = time.perf_counter()

    b = mark_diverged(_merge(None if df is None else band(df), out / "curves.csv"))
    b.to_csv(out / "curves.csv", index=False)
    final(b).to_csv(out / "final.csv", index=False)
    br = mark_diverged(_merge(None if dr is None else band(dr), out / "robust.csv"))
    ref = b[b["method"] == "DiLoCo (server)"].assign(method="no attack, plain mean")
    br = pd.concat([br[br["method"] != "no attack, plain mean"], ref], ignore_index=True)
    br.to_csv(out / "robust.csv", index=False)
    final(br).to_csv(out / "robust_final.csv", index=False)
    axes = {
        "perplexity": plot_methods(b, refs, s, out / "lm_perplexity.png"),
        "robust": plot_robust(br, refs, s, out / "lm_robust.png"),
    }
    old = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    seconds = {**old.get("seconds", {}), **({"+".join(groups): t2 - t0} if groups else {})}
    summary = dict(
        quick=args.quick,
        sizes=s,
        references=refs,
        seconds=seconds,
        load_average=os.getloadavg()[0],
        axes=axes,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for name, fn in TABLES.items():
        print(f"\n{name}\n{fn(out)}")
    print(f"\n{t2 - t0:.0f} s (methods {t1 - t0:.0f} s, robust {t2 - t1:.0f} s); load {os.getloadavg()[0]:.1f}")
    if not all(math.isfinite(v) for v in refs.values()):
        raise SystemExit("reference perplexities are not finite")
    return summary


if __name__ == "__main__":
    main()
