"""DP-SGD with per-example clipping on the transformer LM: perplexity against rounds, non-private
vs private at target ε ∈ {2, 8} (issue 15, item 5, private half).

Workload: ``data.name = "text"`` (byte-level docstrings), ``data.partition = "by_source"`` over
N = 8 nodes of a ring, D-SGD (one AdamW step per round), a tiny decoder-only transformer. Private
runs: DP-SGD at every node (Abadi et al. 2016, Alg. 1): per-example gradients by ``vmap``
(ghost clipping does not apply to attention), clipped to C = 1, summed, Gaussian noise σC,
divided by the batch size; ``perf.microbatch`` bounds the per-example gradients held at once.
σ is calibrated per target ε by the RDP accountant (fixed-size batches, δ = 1e-5, worst node's
sampling rate, all rounds); the run reports the ε it spent. The target ε and the seed are
vmapped (``rj.sweep``: one compile for the private runs, one for the non-private ones).

Perplexity is exp(mean test cross-entropy per byte) of each node's own model, averaged over
nodes in log space (exp of ``node_test_loss_mean``); reference lines: the unigram byte model
(train byte frequencies) and the uniform byte model (256).

    python experiments/lm_private.py --out docs/results/lm_private   # full run
    python experiments/lm_private.py --quick --out /tmp/lm_private   # the test's run

Measured on the 2-core development machine shared with other jobs (load 11-13): the full run
took 382 s wall (``summary.json``), most of it the two XLA compiles and the per-example
gradients of the 6 vmapped private points; the quick run 25 s wall at load 8.

Writes in DIR: ``curves.csv`` (one row per setting and evaluated round: perplexity mean/min/max
over seeds, ε spent, σ, ``seeds``), ``final.csv`` (last round per setting), ``summary.json``
(sizes, σ per target, references, run time) and ``lm_private.png``. ``TABLES``: ``final``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _results import fmt, fmt_band, markdown_table, out_dir, over_seeds  # noqa: E402

DIVERGED = 2560.0  # 10x the uniform byte model's perplexity: a run above it has diverged
NON_PRIVATE = "non-private"


def sizes(quick: bool) -> dict:
    """Every size of the run: tiny for the test, a few minutes on 2 shared cores otherwise."""
    if quick:
        return dict(n=4, seq_len=16, d_model=16, layers=1, batch=4, micro=3, rounds=4, test=32, seeds=2, eps=(2.0, 8.0))
    return dict(n=8, seq_len=32, d_model=32, layers=1, batch=8, micro=4, rounds=150, test=256, seeds=3, eps=(2.0, 8.0))


def config(s: dict, private: bool):
    """The LM config: text split by source over a ring, D-SGD with AdamW, DP-SGD if ``private``."""
    import redeem_jax as rj

    c = rj.config.base_config()
    fields = {
        "num_nodes": s["n"],
        "topology.name": "ring",
        "algorithm.name": "dsgd",
        "data.name": "text",
        "data.seq_len": s["seq_len"],
        "data.partition": "by_source",
        "data.batch_size": s["batch"],
        "model.name": "transformer",
        "model.d_model": s["d_model"],
        "model.num_heads": 2,
        "model.num_layers": s["layers"],
        "optimizer.name": "adamw",
        "optimizer.learning_rate": 5e-3,
        "num_rounds": s["rounds"],
        "eval_every": max(1, s["rounds"] // 10),
        "eval.max_test_examples": s["test"],
        "checkpoint_every": 0,
        "progress": False,
        "plots": False,
    }
    if private:
        fields.update(
            {
                "privacy.mode": "dp_sgd",
                "privacy.clip_norm": 1.0,
                "privacy.target_epsilon": s["eps"][0],
                "privacy.delta": 1e-5,
                "privacy.clipping": "vmap",
                "perf.microbatch": s["micro"],
            }
        )
    for k, v in fields.items():
        rj.config.set_field(c, k, v)
    return c


def run(s: dict) -> tuple[pd.DataFrame, dict]:
    """(seed, round) rows of every setting: one ``rj.sweep`` non-private, one over target ε × seed."""
    import redeem_jax as rj
    from redeem_jax.privacy.analysis import accounting

    seeds = list(range(s["seeds"]))
    plain = rj.sweep(config(s, False), {"seed": seeds})
    plain["setting"], plain["target_epsilon"], plain["epsilon"] = NON_PRIVATE, np.inf, np.inf
    c = config(s, True)
    dp = rj.sweep(c, {"seed": seeds, "privacy.target_epsilon": list(s["eps"])})
    p = rj.build(c).privacy  # the sampling rate and steps the sweep calibrated σ with
    sigma = {
        e: accounting.noise_multiplier_for(e, p["sample_rate"], s["rounds"], 1e-5, accountant="rdp", sampling="fixed")
        for e in s["eps"]
    }
    dp["target_epsilon"] = dp["privacy.target_epsilon"]
    dp["setting"] = [f"DP-SGD, ε = {e:g}" for e in dp["target_epsilon"]]
    df = pd.concat([plain, dp], ignore_index=True)
    df["sigma"] = [sigma.get(e, 0.0) for e in df["target_epsilon"]]
    df["perplexity"] = np.exp(df["node_test_loss_mean"])
    keep = ["setting", "target_epsilon", "sigma", "seed", "round", "perplexity", "epsilon"]
    return df[keep], {"sample_rate": p["sample_rate"], "sigma": {str(e): v for e, v in sigma.items()}}


def band(df: pd.DataFrame) -> pd.DataFrame:
    """Mean/min/max over seeds per (setting, round); a seed above :data:`DIVERGED` or non-finite
    makes the mean and max NaN (tables print 'diverged', plots cut the curve)."""
    b = over_seeds(df, ["setting", "target_epsilon", "sigma", "round"], ["perplexity", "epsilon"])
    bad = ~np.isfinite(b["perplexity_max"]) | (b["perplexity_max"] > DIVERGED)
    b.loc[bad, ["perplexity_mean", "perplexity_max"]] = np.nan
    return b


def references(s: dict) -> dict:
    """Perplexity of the train set's byte frequencies (add-one smoothed) on the test bytes, and uniform."""
    from redeem_jax.data import datasets

    d = datasets.text(seq_len=s["seq_len"])
    counts = np.bincount(np.asarray(d.y_train).ravel(), minlength=256) + 1.0
    p = counts / counts.sum()
    return {"unigram": float(np.exp(-np.mean(np.log(p[np.asarray(d.y_test).ravel()])))), "uniform": 256.0}


def _order(b: pd.DataFrame) -> list[str]:
    """Non-private first, then decreasing target ε."""
    settings = b.drop_duplicates("setting").sort_values("target_epsilon", ascending=False)
    return list(settings["setting"])


def plot(b: pd.DataFrame, refs: dict, path: Path) -> list:
    """Perplexity against rounds, mean and min–max band over seeds, one line per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for setting in _order(b):
        part = b[b["setting"] == setting].sort_values("round")
        (line,) = ax.plot(part["round"], part["perplexity_mean"], marker="o", ms=3, label=setting)
        ax.fill_between(
            part["round"], part["perplexity_min"], part["perplexity_max"], color=line.get_color(), alpha=0.2
        )
        cut = part[part["perplexity_mean"].isna()]
        if len(cut):
            ax.plot([], [], " ", label=f"{setting}: diverged from round {int(cut['round'].min())}")
    ax.axhline(refs["unigram"], color="gray", ls="--", lw=1, label=f"unigram byte model ({refs['unigram']:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("round (one D-SGD step)")
    ax.set_ylabel("test perplexity (per byte, nodes' own models)")
    ax.set_title(f"Transformer LM, {int(b['seeds'].max())} seeds: DP-SGD (δ = 1e-5, C = 1) vs non-private", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel())]


def _final_table(folder: Path) -> str:
    f = pd.read_csv(Path(folder) / "final.csv")
    rows = []
    for _, r in f.iterrows():
        private = np.isfinite(r["target_epsilon"])
        rows.append(
            (
                r["setting"],
                fmt(r["sigma"]) if private else "0",
                fmt(r["epsilon_mean"]) if private else "∞",
                int(r["round"]),
                fmt_band(r["perplexity_mean"], r["perplexity_min"], r["perplexity_max"]),
                int(r["seeds"]),
            )
        )
    header = ("setting", "σ", "ε spent (δ = 1e-5)", "round", "test perplexity mean [min, max]", "seeds")
    return markdown_table(header, rows)


TABLES = {"final": _final_table}


def main(argv=None) -> dict:
    """Run, write the files into ``--out``, return the summary (with the figure's axis titles)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/lm_private")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = out_dir(args.out)
    s = sizes(args.quick)
    t0 = time.time()
    df, info = run(s)
    seconds = time.time() - t0
    b = band(df)
    order = _order(b)
    b["_o"] = [order.index(x) for x in b["setting"]]
    b = b.sort_values(["_o", "round"]).drop(columns="_o")
    b.to_csv(out / "curves.csv", index=False)
    b.groupby("setting", sort=False).tail(1).to_csv(out / "final.csv", index=False)
    refs = references(s)
    axes = plot(b, refs, out / "lm_private.png")
    summary = {"quick": args.quick, "sizes": s, "seconds": round(seconds, 1), "references": refs, **info}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "axes": {"lm_private.png": axes}}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=str))
