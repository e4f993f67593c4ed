"""Collaborative anomaly detection: AUROC at every node, local-only against collaborative.

The task of ``rj.detect`` (issue 14, point 4) on scikit-learn's bundled breast-cancer table
(benign = normal, malignant = anomaly; ``detect.breast_cancer_nodes``): 8 nodes, each training
on 10 benign rows (fewer than the 30 features: its own covariance is singular) dealt out in
contiguous slices along the normals' first principal axis (``skew``: each node has seen one
slice of normal behaviour), every node scored on all held-out rows (~277 normals, 212
anomalies). Methods, each giving one AUROC per node (Hanley & McNeil 1982's Mann–Whitney form):

* **Gaussian, local**: each node's own mean and shrunk covariance (Ledoit & Wolf 2004, α = 0.1),
  Mahalanobis score.
* **Gaussian, gossip on a ring / the complete graph**: the sufficient statistics
  ``[n, Σx, Σxxᵀ]`` averaged by ``rounds`` gossip steps (``detect.gossip_average``; 400 on the
  ring, 1 on the complete graph, where one uniform step is the exact average). The theory line is
  the centralized detector (the pooled statistics), which gossip reaches at rate
  ρ = ‖W − 11ᵀ/N‖₂ per round (Xiao & Boyd 2004) and which the complete graph equals.
* **Autoencoder, local / D-SGD on a ring**: a 30 → 4 → 30 tanh autoencoder (Hinton &
  Salakhutdinov 2006), 300 full-batch rounds, η = 0.05, ATC D-SGD (Lian et al. 2017) through
  ``rj.round.make_step``; local-only is the same step with an identity channel.

Seeds: 5 draws of the split (which benign rows train, at which node) and of the autoencoder's
initialization. The Gaussian detector is a few matrix products per seed (looped); the
autoencoder runs are the library's round (``detect.autoencoder_oracle``, ``algorithms.dsgd``,
``rj.round.make_step``) in one ``lax.scan`` ``jax.vmap``-ped over the seeds: one compile per
channel. Detection runs do not go through the config runner, hence not ``rj.sweep``.

    python experiments/detection.py --out docs/results/detection   # 114 s wall at load 20
    python experiments/detection.py --quick --out /tmp/det         # the test's run

Writes in DIR: ``per_node.csv`` (method, seed, node, AUROC), ``sorted.csv`` (per method and
rank of the node after sorting each seed's AUROCs: mean, min, max over seeds), ``summary.csv``
(per method and seed: mean and worst-node AUROC), ``summary.json`` and ``detection.png``.
``TABLES["auroc"]`` renders docs/results.md's table.
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

import _results  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax import detect as dt  # noqa: E402
from redeem_jax.algorithms.dsgd import dsgd  # noqa: E402
from redeem_jax.core import stateless_channel  # noqa: E402
from redeem_jax.local.optim import local_optimizer  # noqa: E402
from redeem_jax.round import init_state, make_step  # noqa: E402

METHODS = [
    "Gaussian, local",
    "Gaussian, gossip on a ring",
    "Gaussian, complete graph",
    "autoencoder, local",
    "autoencoder, D-SGD on a ring",
]


def autoencoders(datas, topo, seeds, *, hidden, rounds, lr):
    """Per-node AUROC ``[S, N]`` of the autoencoder trained by D-SGD over ``topo`` (None: local
    only), vmapped over the seeds' data splits and initializations (one compile)."""
    train = jnp.stack([d.train for d in datas])
    mask = jnp.stack([d.train_mask for d in datas])
    N, _, D = datas[0].train.shape
    algo = dsgd(local_optimizer("sgd", lr))
    oracle = dt.autoencoder_oracle(D, hidden)
    chan = rj.channels.gossip(topo) if topo is not None else stateless_channel(lambda x, ctx: x, name="local_only")
    step = make_step(algo, oracle, {"model": chan}, topology=topo)

    def one(tr, m, seed):
        x0 = jnp.tile(dt.autoencoder_init(jax.random.PRNGKey(seed), D, hidden), (N, 1))
        s = init_state(algo, oracle, {"model": chan}, x0, jax.random.PRNGKey(seed + 1), topology=topo)
        s = jax.lax.scan(lambda s, _: (step(s, (tr, m), {})[0], None), s, None, length=rounds)[0]
        return algo.models(s.algorithm)

    params = jax.jit(jax.vmap(one))(train, mask, jnp.asarray(seeds))
    return np.stack(
        [
            np.asarray(dt.auroc(dt.reconstruction_scores(params[i], d.test, D, hidden), d.test_label, d.test_mask))
            for i, d in enumerate(datas)
        ]
    )


def centralized_auroc(d, shrinkage=0.1):
    """AUROC of the detector fitted on the pooled training rows (NumPy; the same score for every
    node, since they share the test set): the limit of gossip-averaged statistics."""
    X = np.asarray(d.train, np.float64).reshape(-1, d.train.shape[-1])
    mu = X.mean(0)
    cov = np.cov(X.T, bias=True)
    D = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / D * np.eye(D)
    z = np.asarray(d.test[0], np.float64) - mu
    s = np.einsum("kd,de,ke->k", z, np.linalg.inv(cov), z)
    return float(dt.auroc(s[None], np.asarray(d.test_label[:1]))[0])


def gaussian_curve(datas, topo, rounds):
    """Per-node AUROC ``[len(rounds), S, N]`` of the Mahalanobis detector after each number of
    gossip rounds in ``rounds`` (0: local statistics): one ``lax.scan`` of ``rj.gossip.mix``
    keeps every round's statistics, the detector is fitted at the requested ones; vmapped over
    the seeds, one compile."""
    from redeem_jax.network.gossip import mix

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *datas)
    idx = jnp.asarray(rounds)

    def one(d):
        st = dt.sufficient_stats(d.train, d.train_mask)

        def body(x, t):
            y = mix(topo, x, round=t)
            return y, y

        _, hist = jax.lax.scan(body, st, jnp.arange(max(rounds)))
        hist = jnp.concatenate([st[None], hist])[idx]

        def score(stats):
            mu, prec = dt.gaussian_fit(stats)
            return dt.auroc(dt.mahalanobis_scores(mu, prec, d.test), d.test_label, d.test_mask)

        return jax.vmap(score)(hist)

    return np.swapaxes(np.asarray(jax.jit(jax.vmap(one))(stacked)), 0, 1)


def run(a, log=print):
    """Every method's per-node AUROC ``{method: [S, N]}``, the gossip-rounds curve rows and the
    centralized AUROC per seed."""
    seeds = list(range(a.seeds))
    datas = [dt.breast_cancer_nodes(a.nodes, a.n_train, seed=s) for s in seeds]
    ring, complete = rj.topology.ring(a.nodes), rj.topology.complete(a.nodes)
    out = {}
    t0 = time.time()
    rounds = sorted({0, a.gossip_rounds, *a.curve_rounds})
    on_ring = gaussian_curve(datas, ring, rounds)
    out["Gaussian, local"] = on_ring[0]
    out["Gaussian, gossip on a ring"] = on_ring[rounds.index(a.gossip_rounds)]
    out["Gaussian, complete graph"] = gaussian_curve(datas, complete, [1])[0]
    log(f"Gaussian detectors: {time.time() - t0:.1f} s")
    # Mean and worst node against gossip rounds on the ring (the convergence to centralized).
    curve = [
        {
            "gossip_rounds": t,
            "seed": s,
            "mean": on_ring[rounds.index(t), si].mean(),
            "worst": on_ring[rounds.index(t), si].min(),
        }
        for t in a.curve_rounds
        for si, s in enumerate(seeds)
    ]
    central = [centralized_auroc(d) for d in datas]
    for name, topo in (("autoencoder, local", None), ("autoencoder, D-SGD on a ring", ring)):
        t0 = time.time()
        out[name] = autoencoders(datas, topo, seeds, hidden=a.hidden, rounds=a.ae_rounds, lr=a.lr)
        log(f"{name}: {time.time() - t0:.1f} s")
    return out, curve, central


# --------------------------------------------------------------------------- tables
def table_auroc(d: Path) -> str:
    """Mean, worst-node AUROC and smallest per-node gain per method (mean [min, max] over seeds)."""
    import pandas as pd

    s = pd.read_csv(Path(d) / "summary.csv")
    rows = []
    for m in METHODS:
        r = s[s["method"] == m]
        if r.empty:
            continue
        rows.append(
            [
                m,
                _results.fmt_band(r["mean"].mean(), r["mean"].min(), r["mean"].max()),
                _results.fmt_band(r["worst"].mean(), r["worst"].min(), r["worst"].max()),
                _results.fmt_band(r["gain_min"].mean(), r["gain_min"].min(), r["gain_min"].max())
                if r["gain_min"].notna().all()
                else "–",
                r["seed"].nunique(),
            ]
        )
    head = ["method", "mean AUROC over nodes", "worst-node AUROC", "smallest per-node gain over local", "seeds"]
    return _results.markdown_table(head, rows)


TABLES = {"auroc": table_auroc}


# --------------------------------------------------------------------------- figure
def figure(srt, curve, central, info, path, quick):
    """Sorted per-node AUROC per method and the gossip-rounds curve; returns the axes' labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1.4, 1]})
    ax = axs[0]
    for i, m in enumerate(METHODS):
        b = srt[srt["method"] == m].sort_values("rank")
        ls = ":" if "local" in m else "-"
        (ln,) = ax.plot(b["rank"] + 1, b["auroc_mean"], ls=ls, marker="o", ms=3, color=f"C{i}", label=m)
        ax.fill_between(b["rank"] + 1, b["auroc_min"], b["auroc_max"], color=ln.get_color(), alpha=0.15, lw=0)
    ax.axhline(np.mean(central), color="k", lw=1, label="centralized Gaussian (pooled statistics), mean over seeds")
    ax.set(
        title=f"(a) AUROC at every node, sorted ({info['nodes']} nodes, {info['n_train']} normals each)",
        xlabel="node rank (sorted by AUROC within each seed)",
        ylabel="AUROC (fraction of pairs ordered)",
    )
    ax = axs[1]
    c = curve.groupby("gossip_rounds").agg(["mean", "min", "max"])
    for k, col in (("mean", "C1"), ("worst", "C6")):
        ax.plot(c.index, c[k]["mean"], color=col, marker="o", ms=3, label=f"{k} node, gossip on a ring")
        ax.fill_between(c.index, c[k]["min"], c[k]["max"], color=col, alpha=0.2, lw=0)
    ax.axhline(np.mean(central), color="k", lw=1, label="centralized Gaussian")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set(
        title="(b) Gaussian detector vs gossip rounds on the ring",
        xlabel="gossip rounds (0 = local only)",
        ylabel="AUROC (fraction of pairs ordered)",
    )
    for ax in axs:
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Breast cancer (malignant = anomaly), skewed split; mean with min–max band over {info['seeds']} seeds"
        + (" (--quick)" if quick else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    axes = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in axs]
    plt.close(fig)
    return axes


def main(argv=None):
    """Run and write DIR's files; returns the summary dict."""
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/detection", help="output directory")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 100 autoencoder rounds (the test)")
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args(argv)
    a.nodes, a.n_train, a.hidden, a.ae_rounds, a.lr, a.gossip_rounds = 8, 10, 4, 300, 0.05, 400
    a.curve_rounds = (0, 1, 3, 10, 30, 100, 400)
    if a.quick:
        a.seeds, a.ae_rounds, a.curve_rounds = 2, 100, (0, 10, 100)
    out = _results.out_dir(a.out)
    t0 = time.time()
    res, curve, central = run(a)
    rows = [
        {"method": m, "seed": s, "node": i, "auroc": float(v[s, i])}
        for m, v in res.items()
        for s in range(a.seeds)
        for i in range(a.nodes)
    ]
    per = pd.DataFrame(rows)
    per.to_csv(out / "per_node.csv", index=False)
    per["rank"] = per.groupby(["method", "seed"])["auroc"].rank(method="first").astype(int) - 1
    srt = _results.over_seeds(per, ["method", "rank"], ["auroc"])
    srt.to_csv(out / "sorted.csv", index=False)
    summ = []
    for m, v in res.items():
        base = res["autoencoder, local" if m.startswith("autoencoder") else "Gaussian, local"]
        for s in range(a.seeds):
            gain = np.nan if "local" in m else float((v[s] - base[s]).min())
            summ.append(
                {"method": m, "seed": s, "mean": float(v[s].mean()), "worst": float(v[s].min()), "gain_min": gain}
            )
    pd.DataFrame(summ).to_csv(out / "summary.csv", index=False)
    curve = pd.DataFrame(curve)
    curve.to_csv(out / "gossip_rounds.csv", index=False)
    info = {"nodes": a.nodes, "n_train": a.n_train, "seeds": a.seeds}
    axes = figure(srt, curve, central, info, out / "detection.png", a.quick)
    summary = {
        "quick": a.quick,
        **info,
        "ae_rounds": a.ae_rounds,
        "gossip_rounds": a.gossip_rounds,
        "centralized_auroc": central,
        "wall_s": round(time.time() - t0, 1),
        "axes": {"detection.png": axes},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out} in {summary['wall_s']} s")
    return summary


if __name__ == "__main__":
    main()
