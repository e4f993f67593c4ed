"""LoRA aggregation: how far naive factor averaging, the SVD-refactorised mean of products and
FFA-LoRA land from the exact mean of the nodes' full updates.

One FedAvg round seen from the server: N nodes start from the same adapters (common random
``a``, ``b = 0``) over one frozen base, each takes t local Adam steps on its own text (byte-level
corpus split contiguously by source: natural heterogeneity), and the server aggregates the N
adapter rows. Against the exact mean of the full updates ``mean_i (α/r)·a_i b_i`` the relative
Frobenius error (``rj.lora.aggregation_gap``, all adapted kernels together) is

* ``naive``: ``mean(a)·mean(b)`` misses ``mean((a_i − ā)(b_i − b̄))``, the factors' covariance
  (zero after one step, since ``∂L/∂a = 0`` at ``b = 0``, then growing as the nodes' factors drift);
* ``product``: the best rank-r approximation of the exact mean (Eckart–Young), never above naive;
* ``ffa``: FFA-LoRA (Sun et al. 2024) freezes a shared ``a``, so ``a·mean(b_i)`` is the exact
  mean: zero up to float32 rounding (drawn: the float32 machine epsilon).

Seeds (the adapters' draw and the minibatches; one base and one split) are vmapped: one compiled
round per aggregation.

    python experiments/lora_gap.py --out docs/results/lora_gap   # 286 s wall at load 19-23 (2 cores; 65 s CPU)
    python experiments/lora_gap.py --quick --out /tmp/lg          # the test's run

Writes in DIR: ``gap.csv`` (one row per aggregation and number of local steps: gap mean, min,
max over seeds, and ``seeds``), ``lora_gap.png`` and ``lora_gap.json`` (sizes, run time).
``TABLES["gap"]`` renders docs/results.md's table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _results, when loaded as a module

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _results import fmt_band, markdown_table, over_seeds  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax import lora  # noqa: E402

AGGREGATIONS = ("naive", "product", "ffa")
FULL = dict(nodes=8, d_model=32, layers=2, seq_len=32, batch=8, rank=4, alpha=8.0, steps=(1, 3, 10, 30, 100), seeds=5)
QUICK = dict(nodes=4, d_model=16, layers=1, seq_len=8, batch=4, rank=2, alpha=4.0, steps=(1, 5), seeds=2)


def config(how: str, s: dict):
    """Local-only training (no exchange: the N local updates of one FedAvg round) with LoRA."""
    c = rj.config.base_config()
    fields = {
        "num_nodes": s["nodes"],
        "data.name": "text",
        "data.seq_len": s["seq_len"],
        "data.partition": "contiguous",
        "data.batch_size": s["batch"],
        "model.name": "transformer",
        "model.d_model": s["d_model"],
        "model.num_heads": 2,
        "model.num_layers": s["layers"],
        "model.lora.rank": s["rank"],
        "model.lora.alpha": s["alpha"],
        "model.lora.aggregation": how,
        "algorithm.name": "local_only",
        "optimizer.name": "adam",
        "optimizer.learning_rate": 0.01,
        "num_rounds": max(s["steps"]),
        "progress": False,
        "plots": False,
    }
    for k, v in fields.items():
        rj.config.set_field(c, k, v)
    return c


def run(quick: bool = False) -> list[dict]:
    """One row per (aggregation, local steps, seed): the relative gap."""
    s = QUICK if quick else FULL
    rows = []
    # naive and product aggregate the same [a, b] rows; ffa trains b alone over a frozen shared a.
    for build_how, reads in (("naive", ("naive", "product")), ("ffa", ("ffa",))):
        exp = rj.build(config(build_how, s))
        seeds = jnp.arange(s["seeds"])
        state = jax.jit(jax.vmap(exp.init_state))(seeds)
        hp = exp.hp_values()
        one = jax.vmap(exp.step, in_axes=(0, None, None))

        @jax.jit
        def advance(st, k, one=one, data=exp.node_data, hp=hp):
            return jax.lax.fori_loop(0, k, lambda _, x: one(x, data, hp)[0], st)

        gap = jax.jit(jax.vmap(lambda m, spec=exp.lora: lora.aggregation_gap(spec, m)))
        done = 0
        for t in s["steps"]:
            state = advance(state, t - done)
            done = t
            g = gap(exp.models(state))
            for how in reads:
                for i, v in enumerate(np.asarray(g[how])):
                    rows.append(dict(aggregation=how, local_steps=t, seed=i, gap=float(v)))
    return rows


def write_csv(rows: list[dict], out: Path) -> None:
    import pandas as pd

    df = over_seeds(pd.DataFrame(rows), ["aggregation", "local_steps"], ["gap"])
    df.to_csv(out / "gap.csv", index=False)


def table_gap(folder) -> str:
    """Relative gap to the exact mean of the full updates, mean [min, max] over seeds, per local steps."""
    import pandas as pd

    df = pd.read_csv(Path(folder) / "gap.csv")
    steps = sorted(df["local_steps"].unique())
    body = []
    for how in AGGREGATIONS:
        g = df[df["aggregation"] == how].set_index("local_steps")
        body.append([how] + [fmt_band(*g.loc[t, ["gap_mean", "gap_min", "gap_max"]]) for t in steps])
    seeds = int(df["seeds"].min())
    header = ["aggregation"] + [f"t = {t} ({seeds} seeds)" for t in steps]
    return markdown_table(header, body)


TABLES = {"gap": table_gap}


def plot(rows: list[dict], path: Path, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for how, color in zip(AGGREGATIONS, ("C3", "C0", "C2")):
        g = df[df["aggregation"] == how].groupby("local_steps")["gap"]
        t = np.array(sorted(df["local_steps"].unique()))
        # A log axis: a gap of exactly 0 is drawn at 1e-12 (the plot's floor).
        lo, mean, hi = (np.maximum(np.asarray(f.reindex(t)), 1e-12) for f in (g.min(), g.mean(), g.max()))
        ax.plot(t, mean, "o-", color=color, label=how)
        ax.fill_between(t, lo, hi, color=color, alpha=0.2)
    ax.axhline(np.finfo(np.float32).eps, color="k", ls=":", label="float32 epsilon (FFA: exact)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("local Adam steps before aggregating (t)")
    ax.set_ylabel("‖ΔW_agg − mean ΔW_i‖_F / ‖mean ΔW_i‖_F")
    ax.set_title(
        f"LoRA aggregation error, N={s['nodes']}, r={s['rank']} (mean, min–max over {s['seeds']} seeds)", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/lora_gap", help="output directory")
    p.add_argument("--quick", action="store_true", help="tiny model, 2 seeds, 5 steps (tests)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s = QUICK if args.quick else FULL
    rows = run(args.quick)
    write_csv(rows, out)
    plot(rows, out / "lora_gap.png", s)
    seconds = time.perf_counter() - t0
    with open(out / "lora_gap.json", "w") as f:
        json.dump(
            dict(
                quick=args.quick, seconds=seconds, **{k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}
            ),
            f,
        )
    print(table_gap(out))
    print(f"wrote {out}: gap.csv, lora_gap.png, lora_gap.json ({seconds:.1f} s)")
    return rows


if __name__ == "__main__":
    main()
