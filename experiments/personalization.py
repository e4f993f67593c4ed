"""Personalization: every personalized method on local test sets, and Ditto's error against its closed form.

Two parts (issue 14, point 5; the rules of issue 16):

1. **Local-test accuracy of every method** (``personalization.png``, ``results.csv``). Consensus
   D-SGD (``dsgd`` on the ring, its server form ``fedavg``), ``local_only``, ``fedper``,
   ``fedrep`` (``head_steps = 2``), ``ditto`` (λ ∈ {0.1, 1}), ``apfl``, ``ifca`` (k = 4
   models) and ``collab`` (μ ∈ {0.1, 1}) on digits and MNIST-1D, with pathological shards
   (2 classes per node, McMahan et al. 2017) and Dirichlet label skew α ∈ {0.1, 1}, on a ring
   and on the server (``algorithm.over = "server"``; ``collab`` there takes W = 11ᵀ/N). Every
   node holds out 20% of its examples as its local test set (``data.local_test_fraction``,
   the node's own label mix). One ``rj.sweep`` per (method, dataset, partition, topology):
   seeds and the method's hyper-parameter (λ, μ) vmapped, one compile each. ``local_only``
   sends nothing, so its ring and server rows are the same run.

   Per run, at the last round: the honest mean of local-test accuracy (each node's own model
   on its own test rows), the worst node's local-test accuracy, and the mean over nodes of each
   node's own model on the global test set (``node_test_accuracy_mean``: the personal model's
   accuracy on every class; the averaged row ``test_accuracy`` is also kept in ``runs.csv`` but
   its averaged heads mean little for the personalized methods). ``results.csv`` holds mean,
   min and max over seeds. A seed redraws the initial model and the minibatches; the partition
   and local split are pinned to ``config.seed = 0`` for the whole sweep (``rj.sweep``'s rule).

2. **Ditto's mean squared error against λ** (``ditto_theory.png``, ``ditto_theory.csv``): on
   Gaussian mean estimation (node i has m samples yᵢⱼ ~ N(μᵢ, σ²I_d), μᵢ = μ + δᵢ, δᵢ ~ N(0,
   τ²I_d)) the closed form ``rj.theory.ditto_mse`` as a line over λ, its minimiser
   ``rj.theory.ditto_optimal_lambda`` = σ²/(mτ²) marked, and the measured MSE of the actual
   ``rj.algorithms.ditto`` algorithm (through ``rj.channels.server``, on fᵢ(v) =
   (1/2m)Σⱼ‖v − yᵢⱼ‖²) as points with 95% confidence intervals (1.96 standard errors over
   independent draws of the whole problem), for three heterogeneity levels τ². The draws are
   data, not a run's seed, so this part vmaps ``make_step``'s round over (λ, draw) itself: one
   compiled program for every λ, draw and level, no ``rj.sweep`` (whose seed axis pins the
   data). Ditto's step size is η = 1/(1 + λ) per point (an ``optimizer.learning_rate`` Hyper),
   so each personal step lands on (ȳᵢ + λxᵢ)/(1 + λ) and the shared model reaches the mean
   x̄ geometrically at rate λ/(1 + λ) (below 1e-9 after the rounds run here).

    python experiments/personalization.py --out docs/results/personalization --jobs 2  # committed (both datasets)
    python experiments/personalization.py --out runs/personalization --jobs 2      # digits + MNIST-1D, 2 processes
    python experiments/personalization.py --out DIR --parts replot                 # figure + results.csv from runs.csv
    python experiments/personalization.py --quick --out /tmp/pers                  # the test's run

Measured on the 2-core development machine, shared with other jobs (load 19-27): the digits grid
(45 sweeps) took 44 min wall in 6 processes and about 630 s of CPU, about 14 s of CPU per
sweep, mostly XLA compiles. On 2 quiet cores with ``--jobs 2`` that is about 5-6 min. The
Ditto part took 823 s wall at load about 25, and ``--quick`` about 13 s of CPU. The MNIST-1D
half (another 45 sweeps) took about 12 min wall with ``--jobs 2`` at load 2-6 and was merged
into the committed ``runs.csv`` (``--parts replot`` redraws from it). A stopped learning
part resumes from ``DIR/_cells`` (one CSV per finished sweep).

Writes in DIR: ``runs.csv`` (one row per run: method, variant, dataset, partition, topology,
seed, final metrics), ``results.csv`` (one row per variant × dataset × partition × topology:
``local_mean_*``, ``local_worst_*``, ``global_*`` as mean/min/max over seeds, ``seeds``),
``ditto_theory.csv`` (one row per level and λ: theory, measured mean, standard error, 95% CI
half-width, draws), ``summary.json`` and the two PNGs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _results as R  # noqa: E402
import numpy as np  # noqa: E402

METHODS = ("dsgd", "local_only", "fedper", "fedrep", "ditto", "apfl", "ifca", "collab")
LABELS = {
    "dsgd": "D-SGD / FedAvg (consensus)",
    "local_only": "local only",
    "fedper": "FedPer",
    "fedrep": "FedRep",
    "ditto": "Ditto",
    "apfl": "APFL",
    "ifca": "IFCA (k = 4)",
    "collab": "collab. graph",
}
# The method's own hyper-parameter, vmapped in its sweep (a float option of the algorithm).
HP = {"ditto": ("algorithm.lam", "λ", (0.1, 1.0)), "collab": ("algorithm.mu", "μ", (0.1, 1.0))}
OPTIONS = {"fedrep": {"algorithm.head_steps": 2}, "ifca": {"algorithm.clusters": 4}}
DATASETS = {
    # MNIST-1D learns slowly at digits' step (test accuracy 0.33 vs 0.48 after 200 rounds of
    # D-SGD at lr 0.02 vs 0.1, Dirichlet α = 1): its own lr and a larger batch.
    "digits": {"data.name": "digits", "optimizer.learning_rate": 0.05, "data.batch_size": 8},
    "mnist1d": {"data.name": "mnist1d", "optimizer.learning_rate": 0.1, "data.batch_size": 16},
}
PARTITIONS = {
    "shards": {"data.partition": "shards", "data.shards_per_node": 2},
    "dirichlet_0.1": {"data.partition": "dirichlet", "data.alpha": 0.1},
    "dirichlet_1": {"data.partition": "dirichlet", "data.alpha": 1.0},
}
PART_LABELS = {"shards": "2 classes / node", "dirichlet_0.1": "Dir. α = 0.1", "dirichlet_1": "Dir. α = 1"}
TOPOLOGIES = ("ring", "server")
METRICS = {
    "local_mean": "local_test_accuracy_mean",
    "local_worst": "local_test_accuracy_min",
    "global": "node_test_accuracy_mean",
}


def sizes(quick: bool) -> dict:
    """Network and training sizes of the two modes."""
    if quick:
        return dict(n=8, hidden=(16,), rounds=30, seeds=2)
    return dict(n=16, hidden=(32,), rounds=200, seeds=3)


def cells(quick: bool, datasets=tuple(DATASETS)) -> list[tuple[str, str, str, str]]:
    """(method, dataset, partition, topology) of every sweep; ``local_only`` once per data
    setting (it sends nothing: its topology is ``"any"``)."""
    if quick:  # two sweeps (~10 s of CPU each, mostly XLA compiles): the test's budget
        return [("local_only", "digits", "shards", "any"), ("ditto", "digits", "shards", "ring")]
    out = []
    for ds in datasets:
        for part in PARTITIONS:
            out.append(("local_only", ds, part, "any"))
            for m in METHODS:
                if m != "local_only":
                    out += [(m, ds, part, t) for t in TOPOLOGIES]
    return out


def config(method: str, dataset: str, partition: str, topology: str, quick: bool):
    """The run config of one sweep (seed and the method's hyper-parameter are its axes)."""
    import redeem_jax as rj

    s = sizes(quick)
    c = rj.config.base_config()
    fields = {
        "num_nodes": s["n"],
        "model.hidden": s["hidden"],
        "optimizer.name": "momentum",
        "num_rounds": s["rounds"],
        "eval_every": s["rounds"],
        "checkpoint_every": 0,
        "progress": False,
        "plots": False,
        "data.local_test_fraction": 0.2,
        **DATASETS[dataset],
        **PARTITIONS[partition],
        **OPTIONS.get(method, {}),
    }
    name = method
    if method == "dsgd" and topology == "server":
        name = "fedavg"  # D-SGD's server form: local step, then the server's average
    elif method not in ("dsgd", "local_only"):
        fields["algorithm.over"] = "graph" if topology == "ring" else "server"
    fields["algorithm.name"] = name
    for k, v in fields.items():
        rj.config.set_field(c, k, v)
    return c


def run_cell(cell, quick: bool, seeds) -> list[dict]:
    """One ``rj.sweep`` (seeds × the method's hyper-parameter values): the final metrics of every
    run, one dict per (seed, hyper-parameter value)."""
    import redeem_jax as rj

    method, dataset, partition, topology = cell
    c = config(*cell, quick)
    axes = {"seed": list(seeds)}
    if method in HP:
        key, sym, vals = HP[method]
        axes[key] = list(vals)
    t = time.perf_counter()
    df = rj.sweep(c, axes)
    dt = time.perf_counter() - t
    last = df[df["round"] == df["round"].max()]
    rows = []
    topos = TOPOLOGIES if topology == "any" and not quick else (("ring",) if topology == "any" else (topology,))
    for _, r in last.iterrows():
        variant = LABELS[method]
        if method in HP:
            key, sym, _ = HP[method]
            variant = f"{LABELS[method]} ({sym} = {r[key]:g})"
        for t_ in topos:  # local_only: the same run in both topology columns
            rows.append(
                dict(
                    method=method,
                    variant=variant,
                    dataset=dataset,
                    partition=partition,
                    topology=t_,
                    algorithm=c.algorithm.name,
                    seed=int(r["seed"]),
                    round=int(r["round"]),
                    **{k: float(r[v]) for k, v in METRICS.items()},
                    averaged_row_test_accuracy=float(r["test_accuracy"]),
                    local_std=float(r["local_test_accuracy_std"]),
                    bytes_per_round=float(r.get("bytes_per_round", float("nan"))),
                    sweep_seconds=dt,
                    traces=int(df.attrs["traces"][0]),
                )
            )
    print(f"  {method:10} {dataset:8} {partition:14} {topology:6}: {dt:6.1f} s", flush=True)
    return rows


def learning(quick: bool, out: Path, jobs: int = 1, shard: tuple[int, int] | None = None, datasets=tuple(DATASETS)):
    """Run every cell (or the ``shard = (i, k)``-th of every k cells) and return the per-run rows.
    ``jobs > 1`` starts that many processes of this script, each on one shard, and merges."""
    import pandas as pd

    s = sizes(quick)
    seeds = range(s["seeds"])
    todo = cells(quick, datasets)
    if jobs > 1:
        procs = []
        for i in range(jobs):
            cmd = [sys.executable, os.path.abspath(__file__), "--out", str(out), "--shard", f"{i}/{jobs}"]
            cmd += ["--datasets", ",".join(datasets)]
            procs.append(subprocess.Popen(cmd + (["--quick"] if quick else [])))
        if any(p.wait() for p in procs):
            raise SystemExit("a shard of the learning part failed")
        return pd.concat([pd.read_csv(out / f"runs_shard{i}.csv") for i in range(jobs)], ignore_index=True)
    if shard is not None:
        todo = todo[shard[0] :: shard[1]]
    # Every finished sweep is written at once: a run stopped part-way resumes where it was.
    done = out / "_cells"
    done.mkdir(exist_ok=True)
    frames = []
    for cell in todo:
        f = done / ("_".join(cell) + ".csv")
        if not f.exists():
            pd.DataFrame(run_cell(cell, quick, seeds)).to_csv(f, index=False)
        frames.append(pd.read_csv(f))
    df = pd.concat(frames, ignore_index=True)
    if shard is not None:
        df.to_csv(out / f"runs_shard{shard[0]}.csv", index=False)
    return df


def summarize(runs):
    """``results.csv``: per variant × dataset × partition × topology, mean/min/max over seeds."""
    by = ["method", "variant", "dataset", "partition", "topology"]
    return R.over_seeds(runs, by, list(METRICS))


# ----------------------------------------------------------------------------- part 2: Ditto theory
DITTO = dict(n=8, m=5, d=2, sigma2=1.0, tau2=(0.05, 0.2, 0.8))


def ditto_lams(quick: bool) -> np.ndarray:
    """The measured λ: a log grid over [0.01, 30] plus each level's optimum σ²/(mτ²)."""
    import redeem_jax as rj

    grid = np.geomspace(0.01, 10.0, 5) if quick else np.geomspace(0.01, 30.0, 9)
    star = [rj.theory.ditto_optimal_lambda(DITTO["m"], DITTO["sigma2"], t) for t in DITTO["tau2"]]
    return np.unique(np.round(np.concatenate([grid, star]), 12))


def ditto_measure(Y, lams, rounds: int):
    """Ditto (``rj.algorithms.ditto.ditto``, shared model through ``rj.channels.server``) on
    fᵢ(v) = (1/2m)Σⱼ‖v − yᵢⱼ‖² for every level and draw ``Y [T, R, n, m, d]`` and λ in
    ``lams [L]``: the personal models after ``rounds`` rounds, ``[T, L, R, n, d]``. One compiled
    program: ``vmap`` over levels, λ (a Hyper, with η = 1/(1 + λ)) and draws of ``scan`` over
    rounds."""
    import jax
    import jax.numpy as jnp

    import redeem_jax as rj
    from redeem_jax.algorithms import ditto

    lam_h, lr_h = rj.core.hyper("algorithm.lam", 1.0), rj.core.hyper("optimizer.learning_rate", 0.5)
    algo = ditto.ditto(rj.local.optim.local_optimizer("sgd", lr_h), lam_h)

    def update(x, s, ctx, Yn):
        # The per-sample mean of ½‖v − yᵢⱼ‖²: its gradient is v − ȳᵢ.
        loss = 0.5 * jnp.mean(jnp.sum((x[:, None, :] - Yn) ** 2, -1), 1)
        return loss, x - jnp.mean(Yn, 1), s

    oracle = rj.core.Oracle(lambda x: (), update)
    channels = {"model": rj.channels.server()}
    step = rj.round.make_step(algo, oracle, channels)

    def one(Yn, lam):
        hp = {"algorithm.lam": lam, "optimizer.learning_rate": 1.0 / (1.0 + lam)}
        x0 = jnp.zeros((Yn.shape[0], Yn.shape[-1]), jnp.float32)
        s0 = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), hp=hp)
        s, _ = jax.lax.scan(lambda s, _: (step(s, Yn, hp)[0], None), s0, None, length=rounds)
        return algo.models(s.algorithm)

    # Y is an argument, not a constant folded into the program.
    per_lam = jax.vmap(lambda lam, Ys: jax.vmap(lambda Yn: one(Yn, lam))(Ys), in_axes=(0, None))
    run = jax.jit(jax.vmap(per_lam, in_axes=(None, 0)))
    return np.asarray(run(jnp.asarray(lams, jnp.float32), jnp.asarray(Y)), np.float64)


def ditto_theory(quick: bool, seed: int = 0):
    """Rows of ``ditto_theory.csv``: per level τ² and λ, the closed form and the measured MSE
    E‖vᵢ − μᵢ‖² (mean over nodes within a draw, then over draws) with its standard error."""
    import jax.numpy as jnp

    import redeem_jax as rj

    n, m, d, s2 = DITTO["n"], DITTO["m"], DITTO["d"], DITTO["sigma2"]
    draws = 2000 if quick else 20000
    lams = ditto_lams(quick)
    # The shared model contracts by λ/(1 + λ) a round: (30/31)^1200 < 1e-16, (10/11)^400 < 1e-16.
    rounds = 400 if quick else 1200
    rng = np.random.default_rng(seed)
    means, Ys = [], []
    for tau2 in DITTO["tau2"]:
        mu = rng.normal(size=(draws, 1, 1, d))
        delta = rng.normal(size=(draws, n, 1, d)) * math.sqrt(tau2)
        Ys.append((mu + delta + rng.normal(size=(draws, n, m, d)) * math.sqrt(s2)).astype(np.float32))
        means.append((mu + delta)[:, :, 0, :])
    vs = ditto_measure(jnp.asarray(np.stack(Ys)), lams, rounds)  # [T, L, R, n, d]
    rows = []
    for tau2, v, mu_i in zip(DITTO["tau2"], vs, means):
        err = ((v - mu_i[None]) ** 2).sum(-1).mean(-1)  # [L, R]: nodes in a draw correlate
        lam_star = rj.theory.ditto_optimal_lambda(m, s2, tau2)
        j_star = int(np.argmin(np.abs(lams - lam_star)))
        for j, lam in enumerate(lams):
            mean, se = float(err[j].mean()), float(err[j].std(ddof=1) / math.sqrt(draws))
            # Every λ sees the same draws: the excess over λ* has a paired standard error.
            gap = err[j] - err[j_star]
            rows.append(
                dict(
                    tau2=tau2,
                    lam=float(lam),
                    w=float(lam / (1 + lam)),
                    optimal=bool(abs(lam - lam_star) < 1e-9 * max(1.0, lam_star)),
                    lam_star=lam_star,
                    theory=float(rj.theory.ditto_mse(lam, m, s2, tau2, n, d)),
                    measured=mean,
                    se=se,
                    ci95=1.96 * se,
                    excess=float(gap.mean()),
                    excess_se=float(gap.std(ddof=1) / math.sqrt(draws)),
                    excess_theory=float(
                        rj.theory.ditto_mse(lam, m, s2, tau2, n, d) - rj.theory.ditto_mse(lam_star, m, s2, tau2, n, d)
                    ),
                    draws=draws,
                    n=n,
                    m=m,
                    d=d,
                    sigma2=s2,
                    rounds=rounds,
                )
            )
    return rows


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """Save and close ``fig``; return every axis's (title, x label, y label)."""
    plt = _plt()
    labels = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return labels


def variants(res) -> list[str]:
    """Variant labels in METHODS order (then by hyper-parameter value)."""
    order = {m: i for i, m in enumerate(METHODS)}
    v = res[["method", "variant"]].drop_duplicates()
    return list(v.assign(k=v["method"].map(order)).sort_values(["k", "variant"])["variant"])


def plot_learning(res, meta, path):
    """Per dataset (rows) and partition (columns): every variant's local-test mean, worst-node
    local-test and global-test accuracy, ring and server side by side, min–max bars over seeds."""
    plt = _plt()
    dss = [d for d in DATASETS if d in set(res["dataset"])]
    parts = [p for p in PARTITIONS if p in set(res["partition"])]
    names = variants(res)
    fig, axes = plt.subplots(len(dss), len(parts), figsize=(5.2 * len(parts), 4.6 * len(dss)), squeeze=False)
    marks = {"local_mean": ("o", "local test, mean over nodes"), "local_worst": ("v", "local test, worst node"),
             "global": ("s", "global test (own model, mean over nodes)")}  # fmt: skip
    offs = {"ring": -0.18, "server": 0.18}
    for r, ds in enumerate(dss):
        for col, part in enumerate(parts):
            ax = axes[r, col]
            sub = res[(res["dataset"] == ds) & (res["partition"] == part)]
            for t, color in (("ring", "C0"), ("server", "C3")):
                st = sub[sub["topology"] == t].set_index("variant")
                if st.empty:
                    continue
                x = np.array([i + offs[t] for i, v in enumerate(names) if v in st.index])
                vs = [v for v in names if v in st.index]
                for k, (mk, what) in marks.items():
                    mean, lo, hi = (st.loc[vs, f"{k}_{s}"].to_numpy(float) for s in ("mean", "min", "max"))
                    ax.errorbar(
                        x + (0.06 if k == "global" else 0.0),
                        mean,
                        yerr=np.abs(np.stack([mean - lo, hi - mean])),
                        fmt=mk,
                        color=color,
                        mfc=color if k != "global" else "none",
                        ms=5,
                        capsize=2,
                        lw=0.8,
                        label=f"{t}: {what}",
                    )
            ax.set_xticks(range(len(names)), names, rotation=55, ha="right", fontsize=8)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3, axis="y")
            ax.set_title(f"{ds}, {PART_LABELS[part]}", fontsize=10)
            ax.set_xlabel("method")
            ax.set_ylabel("accuracy at the last round")
    # Dirichlet α = 1 (the last column) keeps every point above 0.6: room for the legend there.
    axes[0, -1].legend(fontsize=7, loc="lower center")
    fig.suptitle(
        f"Personalized methods: n = {meta['n']} nodes, MLP with {', '.join(map(str, meta['hidden']))} hidden units, "
        f"{meta['rounds']} rounds, {meta['seeds']} seeds\n(points: mean, bars: min–max over seeds; "
        "local test = 20% of each node's data, same label mix)",
        fontsize=10,
    )
    return _save(fig, path)


def plot_ditto(rows, path):
    """MSE against λ per heterogeneity level: the closed form as a line, λ* marked, the measured
    points with 95% confidence intervals."""
    import redeem_jax as rj

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    n, m, d, s2 = (rows[0][k] for k in ("n", "m", "d", "sigma2"))
    grid = np.geomspace(min(r["lam"] for r in rows) / 2, max(r["lam"] for r in rows) * 2, 400)
    for i, tau2 in enumerate(sorted({r["tau2"] for r in rows})):
        pts = [r for r in rows if r["tau2"] == tau2]
        col = f"C{i}"
        ax.plot(
            grid, rj.theory.ditto_mse(grid, m, s2, tau2, n, d), color=col, lw=1.3, label=f"τ² = {tau2:g}: closed form"
        )
        star = pts[0]["lam_star"]
        ax.plot(
            [star],
            [rj.theory.ditto_mse(star, m, s2, tau2, n, d)],
            "*",
            color=col,
            ms=14,
            mfc="none",
            label=f"τ² = {tau2:g}: optimum λ* = σ²/(mτ²) = {star:g}",
        )
        ax.errorbar(
            [r["lam"] for r in pts],
            [r["measured"] for r in pts],
            yerr=[r["ci95"] for r in pts],
            fmt="o",
            color=col,
            ms=4,
            capsize=3,
            label=f"τ² = {tau2:g}: Ditto run, mean ± 95% CI ({pts[0]['draws']} draws)",
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="Ditto's λ (pull of the personal model toward the shared one)",
        ylabel="E‖vᵢ − μᵢ‖²  (personal model's squared error)",
        title=f"Ditto on Gaussian mean estimation: n = {n}, m = {m} samples / node, d = {d}, σ² = {s2:g}",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


# ----------------------------------------------------------------------------- tables
def _setting_cols(res):
    cols = []
    for ds in DATASETS:
        for part in PARTITIONS:
            for t in TOPOLOGIES:
                if ((res["dataset"] == ds) & (res["partition"] == part) & (res["topology"] == t)).any():
                    cols.append((ds, part, t))
    return cols


def _table(metric: str):
    def render(folder: Path) -> str:
        import pandas as pd

        res = pd.read_csv(Path(folder) / "results.csv")
        cols = _setting_cols(res)
        key = res.set_index(["variant", "dataset", "partition", "topology"])
        body = []
        for v in variants(res):
            row = [v]
            for c in cols:
                if (v, *c) in key.index:
                    r = key.loc[(v, *c)]
                    row.append(R.fmt_band(r[f"{metric}_mean"], r[f"{metric}_min"], r[f"{metric}_max"]))
                else:
                    row.append("–")
            body.append(row)
        header = ["method"] + [f"{ds} · {PART_LABELS[p]} · {t}" for ds, p, t in cols]
        return R.markdown_table(header, body)

    return render


def _ditto_table(folder: Path) -> str:
    import pandas as pd

    df = pd.read_csv(Path(folder) / "ditto_theory.csv")
    rows = []
    for _, r in df[df["optimal"]].iterrows():
        lvl = df[df["tau2"] == r["tau2"]].sort_values("lam")
        lo, hi = lvl.iloc[0], lvl.iloc[-1]
        rows.append(
            [
                f"{r['tau2']:g}",
                f"{r['lam_star']:g}",
                R.fmt(r["theory"], 4),
                R.fmt_pm(r["measured"], r["ci95"], 4),
                f"{(r['measured'] - r['theory']) / r['se']:+.2f}",
                f"{R.fmt_pm(lo['measured'], lo['ci95'], 4)} ({R.fmt(lo['theory'], 4)})",
                f"{R.fmt_pm(hi['measured'], hi['ci95'], 4)} ({R.fmt(hi['theory'], 4)})",
                f"{np.abs((lvl['measured'] - lvl['theory']) / lvl['se']).max():.2f}",
                int(r["draws"]),
            ]
        )
    lo_lam, hi_lam = R.fmt(df["lam"].min(), 2), R.fmt(df["lam"].max(), 2)
    return R.markdown_table(
        [
            "τ²",
            "λ* = σ²/(mτ²)",
            "closed-form MSE at λ*",
            "measured at λ* (± 95% CI)",
            "(measured − closed form) / SE",
            f"λ = {lo_lam}, nearly local: measured (closed form)",
            f"λ = {hi_lam}, nearly global: measured (closed form)",
            "max abs(measured − closed form) / SE, all λ",
            "draws",
        ],
        rows,
    )


TABLES = {
    "personalization": _table("local_mean"),
    "worst_node": _table("local_worst"),
    "global": _table("global"),
    "ditto_theory": _ditto_table,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/personalization", help="output directory")
    ap.add_argument(
        "--quick", action="store_true", help="digits, shards, local_only + ditto on a ring, 2 seeds, 30 rounds"
    )
    ap.add_argument("--jobs", type=int, default=1, help="processes for the learning part (each a shard of cells)")
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/k": a worker of --jobs
    ap.add_argument(
        "--parts", default="learning,ditto", help="learning, ditto, or replot (the learning figure from runs.csv)"
    )
    ap.add_argument("--datasets", default=",".join(DATASETS), help="datasets of the learning part (comma-separated)")
    args = ap.parse_args(argv)
    out = R.out_dir(args.out)
    datasets = tuple(args.datasets.split(","))
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        raise SystemExit(f"--datasets: {sorted(unknown)} not in {list(DATASETS)}")
    if args.shard:
        i, k = (int(v) for v in args.shard.split("/"))
        learning(args.quick, out, shard=(i, k), datasets=datasets)
        return None
    parts = set(args.parts.split(","))
    import pandas as pd

    spath = out / "summary.json"
    summary = json.loads(spath.read_text()) if spath.exists() else {}
    summary.update(quick=args.quick)
    times, axes = summary.setdefault("times", {}), summary.setdefault("axes", {})
    if "learning" in parts or "replot" in parts:
        if "replot" in parts:  # the figure and results.csv again from the committed runs.csv
            runs = pd.read_csv(out / "runs.csv")
        else:
            t = time.perf_counter()
            runs = learning(args.quick, out, jobs=args.jobs, datasets=datasets)
            times["learning_s"] = time.perf_counter() - t
            for f in [*out.glob("runs_shard*.csv"), *out.glob("_cells/*")]:
                f.unlink()
            (out / "_cells").rmdir()
            runs.to_csv(out / "runs.csv", index=False)
        res = summarize(runs)
        res.to_csv(out / "results.csv", index=False)
        meta = {**sizes(args.quick), "jobs": args.jobs, "datasets": list(datasets)}
        summary["learning"] = meta | {"traces": sorted({int(v) for v in runs["traces"]})}
        axes["learning"] = plot_learning(res, meta, out / "personalization.png")
        print(TABLES["personalization"](out), flush=True)
    if "ditto" in parts:
        t = time.perf_counter()
        rows = ditto_theory(args.quick)
        times["ditto_s"] = time.perf_counter() - t
        pd.DataFrame(rows).to_csv(out / "ditto_theory.csv", index=False)
        axes["ditto"] = plot_ditto(rows, out / "ditto_theory.png")
        print(TABLES["ditto_theory"](out), flush=True)
    spath.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out} ({', '.join(f'{k} {v:.0f} s' for k, v in times.items())})")
    return summary


if __name__ == "__main__":
    main()
