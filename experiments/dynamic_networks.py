"""Dynamic networks: measured contraction against theory, D-SGD on drawn graphs, robust gossip with failures.

Three parts (issue 13, part 5; the rules of issue 16):

1. **Contraction against theory** (``dynamic_contraction.png``). For every random-graph model
   (EL-Oracle and EL-Local of de Vos et al. 2023 over the fan-out s; link failures with both
   weight policies over the link-up probability p; Bernoulli churn over the online probability
   q; Boyd et al. 2006 pairwise gossip and random matchings over several base graphs) one jitted
   program (``vmap`` over seeds, ``lax.scan`` over rounds, float64, dense W of each draw) draws a
   fresh W every round and measures the one-round ratio ``r(x) = ||(I-J) W x||^2 / ||(I-J) x||^2``
   for three choices of x:

   - ``x = v``, the top eigenvector of ``S = E[W^T (I-J) W]`` on ``1^perp``: ``E r(v) = lambda``
     exactly, ``lambda = rj.theory.mean_square_contraction(topology)`` (the worst direction);
   - ``x`` isotropic Gaussian in ``1^perp``, fresh every round: ``x/||x||`` is uniform on the
     sphere and independent of ``||x||`` and W, so ``E r(x) = tr(S|1^perp) / (n - 1)`` exactly;
   - x along a trajectory ``x_{t+1} = W_t x_t`` (the per-round ratio averaged over rounds): no
     closed form, but ``E[r | x_t] <= lambda`` for every x_t, so its mean lies at or below lambda
     (equal, up to noise, where ``S`` is a multiple of ``I - J``: EL-Oracle, complete bases).

   Renormalized link failures take ``S`` from :func:`renormalize_second_moment` (exact, local
   enumeration) since the library's enumeration of all 2^m link patterns stops at m = 20.

   The figure plots ``1 - E r`` (the expected decrease per round, log scale) with both theory
   values as lines and the measured means with min-max bars over seeds.
2. **D-SGD on digits, Dirichlet alpha = 0.1** (``dynamic_dsgd.png``): a static ring, the ring
   with link failures (p = 0.5, policy "self"), EL-Oracle with s = 1, 2, 4, 7 and SGP (Assran et
   al. 2019) on the directed exponential graph; mean test accuracy of the nodes' own models against
   rounds and against the models sent per node (``bytes_sent`` / (n * model bytes)), the
   Epidemic Learning paper's comparison at small scale. One ``rj.sweep`` per graph, seed axis.
3. **ClippedGossip under the dissensus attack on an unreliable torus** (``dynamic_robust.png``):
   4x4 torus, 2 Byzantine nodes, link-up p in {1.0, 0.7, 0.5}; honest nodes' mean test accuracy
   and honest consensus distance against rounds, with attack-free runs at p = 1 and 0.5 as reference.

    python experiments/dynamic_networks.py --out docs/results/dynamic_networks   # 189 s wall, 227 s CPU
    python experiments/dynamic_networks.py --quick --out /tmp/dyn                # the test's run: 32 s at load 2.5

Measured on the 2-core development machine at load 1-4: 189 s wall, 227 s of CPU (contraction
68 s, D-SGD 86 s, ClippedGossip 30 s), mostly XLA compiles (one per drawn model or sweep
group). At load 8-18 the same parts took 757 s, 832 s and 455 s wall. ``--parts`` runs a subset
(e.g. ``--parts robust``) and merges into ``summary.json``.

Writes in DIR: ``contraction.csv`` / ``.json`` (one row per model and parameter: theory lambda,
trace form, measured means with standard errors and min-max over seeds), ``dsgd.csv`` and
``robust.csv`` (per graph and round: mean, min, max over seeds), ``summary.json`` (final
accuracies, run time) and the three PNGs. ``TABLES`` renders docs/results.md's four tables of the
section "Dynamic networks" from those files (``python experiments/regenerate.py``).
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _results, when loaded as a module

import numpy as np  # noqa: E402
from _results import fmt_band, markdown_table  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax.network import random_graphs as rg  # noqa: E402
from redeem_jax.network import unreliable as ur  # noqa: E402

PANELS = ("epidemic_oracle", "epidemic_local", "link_failures", "churn", "pairwise_matching")
TITLES = {
    "epidemic_oracle": "EL-Oracle (s-regular digraph), n = {n}",
    "epidemic_local": "EL-Local (push to s, receivers average), n = {n}",
    "link_failures": "ring with link failures, n = {n}",
    "churn": "ring with Bernoulli churn (policy self), n = {n}",
    "pairwise_matching": "Boyd pairwise gossip / random matching, n = {n}",
}


# ----------------------------------------------------------------------------- part 1: contraction
def renormalize_second_moment(topo) -> np.ndarray:
    """Exact ``E[W^T (I - J) W]`` of link failures under ``policy="renormalize"`` by local
    enumeration: ``W^T (I-J) W = sum_b w_b w_b^T - (1/n) u u^T`` with ``u = sum_b w_b`` (w_b the
    rows). Row b depends only on the links at b, so rows b != c are independent unless they share
    a link, and ``E[u u^T] = (sum_b m_b)(sum_c m_c)^T + sum_{b,c dependent} Cov(w_b, w_c)``; each
    dependent pair is enumerated over the ``2^(deg_b + deg_c - 1)`` patterns of its links. The same
    quantity as ``unreliable.enumerate_second_moment`` (2^m patterns, m <= 20) at O(n deg 4^deg)."""
    if not isinstance(topo, ur.Unreliable) or topo.node_model != "always":
        raise ValueError("renormalize_second_moment: link failures without churn only")
    p, n = topo._p(), topo.n
    nbr, w, sw, mask, eid = topo._nbr, topo._w.astype(float), topo._sw.astype(float), topo._mask, topo._eid
    links = [np.unique(eid[b][mask[b]]) for b in range(n)]

    def rows(b, ls, pats):
        """Row b of W [P, n] for each up pattern ``pats`` [P, len(ls)] of the links ``ls``."""
        slots = np.nonzero(mask[b])[0]
        up = pats[:, np.searchsorted(ls, eid[b, slots])]
        wl = up * w[b, slots]
        tot = sw[b] + wl.sum(1)
        safe = np.where(tot > 0, tot, 1.0)
        R = np.zeros((len(pats), n))
        R[:, b] = np.where(tot > 0, sw[b] / safe, 1.0)
        np.add.at(R, (np.arange(len(pats))[:, None], nbr[b, slots][None, :]), wl / safe[:, None])
        return R

    def patterns(ls):
        pats = ((np.arange(2 ** len(ls))[:, None] >> np.arange(len(ls))) & 1).astype(bool)
        return pats, np.prod(np.where(pats, p, 1 - p), axis=1)

    mean = np.zeros((n, n))
    sq = np.zeros((n, n))
    for b in range(n):  # host, once per parameter value
        pats, prob = patterns(links[b])
        R = rows(b, links[b], pats)
        mean[b] = prob @ R
        sq += np.einsum("p,pa,pd->ad", prob, R, R)
    u = mean.sum(0)
    uu = np.outer(u, u)
    for b in range(n):
        for c in range(n):
            if b != c and not np.intersect1d(links[b], links[c]).size:
                continue
            ls = np.union1d(links[b], links[c])
            pats, prob = patterns(ls)
            uu += np.einsum("p,pa,pd->ad", prob, rows(b, ls, pats), rows(c, ls, pats)) - np.outer(mean[b], mean[c])
    return sq - uu / n


def _theory(topo):
    """``(lambda, trace form, v)`` of one round from the exact second moment S: ``lambda`` =
    ``lambda_max(S|1^perp)`` (``rj.theory.mean_square_contraction``), ``tr(S|1^perp)/(n-1)`` (isotropic
    x) and the top eigenvector ``v`` of S on ``1^perp``. Renormalized link failures use
    :func:`renormalize_second_moment` (the library's enumeration is limited to 2^20 patterns)."""
    n = topo.n
    renorm = isinstance(topo, ur.Unreliable) and topo.policy == "renormalize"
    S = renormalize_second_moment(topo) if renorm else topo.second_moment()
    Q = np.linalg.qr(np.concatenate([np.ones((n, 1)), np.eye(n)[:, : n - 1]], 1))[0][:, 1:]
    R = Q.T @ S @ Q
    evals, evecs = np.linalg.eigh((R + R.T) / 2)
    lam = float(evals[-1]) if renorm else float(rj.theory.mean_square_contraction(topo))
    return lam, float(np.trace(R) / (n - 1)), Q @ evecs[:, -1]


def measure(topo, vs: np.ndarray, seeds: int, rounds: int, params=None, n_iso: int = 4):
    """Measured one-round ratios, each ``[P, seeds]``: means of ``r(v)``, ``r(isotropic x)``,
    ``r(trajectory)`` over ``rounds`` fresh draws, and the sample variances of the first two (for
    standard errors). One jitted program: vmap over the P parameter values (``params``: link-up p
    or online q, passed traced through ``Unreliable.with_params``; ``vs`` [P, n] the worst
    directions), vmap over seeds, ``lax.scan`` over rounds, float64, the dense W of each draw."""
    import jax
    import jax.numpy as jnp

    n = topo.n
    name = "q" if getattr(topo, "node_model", "always") == "bernoulli" else "p"
    with jax.enable_x64(True):
        C = jnp.eye(n) - jnp.ones((n, n)) / n

        def one_seed(key, v, prm):
            t = topo if params is None else topo.with_params(**{name: prm})

            def body(x, r):
                kg = jax.random.fold_in(key, r)
                nbr, w, sw, m = t.draw(r, kg)
                W = ur.dense_mixing(n, (nbr, w.astype(jnp.float64), sw.astype(jnp.float64), m))
                r_v = jnp.sum((C @ (W @ v)) ** 2) / jnp.sum(v**2)
                z = C @ jax.random.normal(jax.random.fold_in(kg, 1), (n, n_iso), jnp.float64)
                r_iso = jnp.sum((C @ (W @ z)) ** 2, 0) / jnp.sum(z**2, 0)
                xn = C @ (W @ x)
                r_tr = jnp.sum(xn**2) / jnp.sum(x**2)
                # Rescale so the trajectory never underflows; the ratio is scale-free.
                return xn / jnp.sqrt(jnp.sum(xn**2)), (r_v, jnp.mean(r_iso), r_tr)

            x0 = C @ jax.random.normal(jax.random.fold_in(key, 2**20), (n,), jnp.float64)
            _, (rv, ri, rt) = jax.lax.scan(body, x0 / jnp.linalg.norm(x0), jnp.arange(rounds))
            return rv.mean(), ri.mean(), rt.mean(), rv.var(ddof=1), ri.var(ddof=1)

        keys = jax.random.split(jax.random.PRNGKey(1234), seeds)
        prm = jnp.asarray(np.zeros(len(vs)) if params is None else params, jnp.float64)
        run = jax.jit(jax.vmap(jax.vmap(one_seed, (0, None, None)), (None, 0, 0)))
        return [np.asarray(a) for a in run(keys, jnp.asarray(vs, jnp.float64), prm)]


def _row(model, param_name, param, n, topo, th, m, j, rounds):
    lam, trace = th[0], th[1]
    rv, ri, rt, vv, vi = (a[j] for a in m)
    seeds = rv.size
    count = seeds * rounds
    return dict(
        model=model,
        param=param_name,
        value=param,
        n=n,
        seeds=seeds,
        rounds=rounds,
        lambda_theory=lam,
        trace_theory=trace,
        worst_mean=float(rv.mean()),
        worst_se=float(math.sqrt(vv.mean() / count)),
        worst_min=float(rv.min()),
        worst_max=float(rv.max()),
        iso_mean=float(ri.mean()),
        iso_se=float(math.sqrt(vi.mean() / count)),
        iso_min=float(ri.min()),
        iso_max=float(ri.max()),
        traj_mean=float(rt.mean()),
        traj_min=float(rt.min()),
        traj_max=float(rt.max()),
        doubly_stochastic=bool(getattr(topo, "is_doubly_stochastic", False)),
    )


def contraction(quick: bool):
    """Every model over its parameter; one row per (model, parameter value)."""
    n = 16 if quick else 32
    seeds = 2 if quick else 5
    rounds = 300 if quick else 2000
    rows = []
    ring = rj.topology.ring(n)

    # EL: the fan-out s changes the padded width K, so each s is its own (small) program.
    s_vals = (2,) if quick else (1, 2, 4, 7, 15)
    for model, make in (("epidemic_oracle", rg.el_oracle), ("epidemic_local", rg.el_local)):
        for s in s_vals:
            topo = make(n, s)
            th = _theory(topo)
            rows.append(_row(model, "s", s, n, topo, th, measure(topo, th[2][None], seeds, rounds), 0, rounds))

    # Failures and churn: one program per model for its whole p (or q) grid, the value traced.
    grid = (0.3, 0.6, 0.9) if quick else (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    for model, make in (
        ("link_failures_self", lambda v: ur.link_failures(ring, v, "self")),
        ("link_failures_renormalize", lambda v: ur.link_failures(ring, v, "renormalize")),
        ("churn_self", lambda v: ur.churn(ring, q=v, policy="self")),
    ):
        topos = [make(v) for v in grid]
        ths = [_theory(t) for t in topos]
        m = measure(topos[0], np.stack([t[2] for t in ths]), seeds, rounds, params=np.asarray(grid))
        for j, v in enumerate(grid):
            rows.append(_row(model, "q" if model.startswith("churn") else "p", v, n, topos[j], ths[j], m, j, rounds))

    bases = (
        (("ring", ring),)
        if quick
        else (
            ("ring", ring),
            ("torus", rj.topology.torus(4, n // 4)),
            ("hypercube", rj.topology.hypercube(n)),
            ("4-regular", rj.topology.random_regular(n, 4, seed=0)),
            ("complete", rj.topology.complete(n)),
        )
    )
    for model, make in (("pairwise", rg.pairwise), ("random_matching", rg.random_matching)):
        for bname, base in bases:
            topo = make(base)
            th = _theory(topo)
            rows.append(_row(model, "base", bname, n, topo, th, measure(topo, th[2][None], seeds, rounds), 0, rounds))
    return rows


# ----------------------------------------------------------------------------- parts 2-3: learning
def _train_config(n: int, rounds: int, eval_every: int):
    c = rj.config.base_config()
    c.num_nodes = n
    c.data.name = "digits"
    c.data.partition = "dirichlet"
    c.data.alpha = 0.1
    c.data.batch_size = 16
    c.model.hidden = (32,)
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    c.num_rounds = rounds
    c.eval_every = eval_every
    c.checkpoint_every = 0
    c.progress = False
    c.plots = False
    return c


def dsgd_graphs(quick: bool):
    """(label, config overrides) of part 2."""
    el = (2,) if quick else (1, 2, 4, 7)
    out = [] if quick else [("static ring", {})]
    out.append(("ring, link failures p = 0.5", {"topology.link_up": 0.5}))
    out += [(f"EL-Oracle s = {s}", {"topology.name": "epidemic_oracle", "topology.s": s}) for s in el]
    if not quick:
        out.append(("SGP, directed exponential", {"topology.name": "directed_exponential", "algorithm.name": "sgp"}))
    return out


def _band(df, metrics, by=None):
    """Per (group, round): mean, min and max over the seeds of every metric in ``metrics``."""
    keys = ([by] if by else []) + ["round"]
    agg = df.groupby(keys)[list(metrics)].agg(["mean", "min", "max"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg["seeds"] = df.groupby(keys)["seed"].nunique()
    return agg.reset_index()


def dsgd(quick: bool, seeds):
    import pandas as pd

    n, rounds, every = (8, 20, 10) if quick else (16, 200, 10)
    frames = []
    for label, over in dsgd_graphs(quick):
        c = _train_config(n, rounds, every)
        for k, v in over.items():
            rj.config.set_field(c, k, v)
        t = time.perf_counter()
        df = rj.sweep(c, {"seed": list(seeds)})
        df["graph"] = label
        df["seconds"] = time.perf_counter() - t
        df["traces"] = df.attrs["traces"][0]
        frames.append(df)
        print(f"  dsgd {label}: {time.perf_counter() - t:.1f} s", flush=True)
    df = pd.concat(frames, ignore_index=True)
    # Messages: bytes / (bytes of one model); a ring sends 2n models per round. SGP's messages
    # carry one extra float (the push-sum weight), 4 bytes in ~10 kB, counted as a model.
    model_bytes = 4 * (64 * 32 + 32 + 32 * 10 + 10)
    df["models_sent_per_node"] = df["bytes_sent"].fillna(0.0) / (n * model_bytes)
    return df, n, rounds


def robust(quick: bool, seeds):
    import pandas as pd

    n, rounds, every = (16, 20, 10) if quick else (16, 200, 10)
    ps = (0.5,) if quick else (1.0, 0.7, 0.5)
    c = _train_config(n, rounds, every)
    c.topology.name = "torus"
    c.aggregation.rule = "clipped_gossip"
    frames = []
    t = time.perf_counter()
    attacked = c.copy_and_resolve_references()
    attacked.byzantine.num = 2
    attacked.byzantine.attack = "dissensus"
    df = rj.sweep(attacked, {"topology.link_up": list(ps), "seed": list(seeds)})
    df["setting"] = [f"dissensus, f = 2, p = {p:g}" for p in df["topology.link_up"]]
    frames.append(df)
    if not quick:
        dr = rj.sweep(c.copy_and_resolve_references(), {"topology.link_up": [1.0, 0.5], "seed": list(seeds)})
        dr["setting"] = [f"no attacker, p = {p:g}" for p in dr["topology.link_up"]]
        frames.append(dr)
    print(f"  robust: {time.perf_counter() - t:.1f} s", flush=True)
    return pd.concat(frames, ignore_index=True), n, rounds


# ----------------------------------------------------------------------------- plots and tables
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_contraction(rows, path):
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    groups = {
        "epidemic_oracle": ["epidemic_oracle"],
        "epidemic_local": ["epidemic_local"],
        "link_failures": ["link_failures_self", "link_failures_renormalize"],
        "churn": ["churn_self"],
        "pairwise_matching": ["pairwise", "random_matching"],
    }
    xlabels = {
        "s": "fan-out s (messages sent per node per round)",
        "p": "link-up probability p per round",
        "q": "online probability q per node per round",
        "base": "base graph sampled",
    }
    for ax, panel in zip(axes.flat, PANELS):
        for i, model in enumerate(groups[panel]):
            pts = [r for r in rows if r["model"] == model]
            if not pts:
                continue
            cats = pts[0]["param"] == "base"
            # Categorical bases: the second model is shifted a little so both stay visible.
            x = np.arange(len(pts)) + 0.15 * i if cats else np.array([r["value"] for r in pts], float)
            col = f"C{i}"
            short = model.replace("link_failures_", "policy ").replace("_", " ")

            def gap(key):
                return 1.0 - np.array([r[key] for r in pts])

            # Theory: a line over p, q, s; a wide tick per base graph (categories are not a continuum).
            lw, sty = (
                (
                    {"ls": "none", "marker": "_", "ms": 22, "mew": 1.5},
                    {"ls": "none", "marker": "_", "ms": 14, "mew": 1.0},
                )
                if cats
                else ({"ls": "-", "lw": 1.2}, {"ls": "--", "lw": 1.2})
            )
            ax.plot(x, gap("lambda_theory"), color=col, label=f"{short}: theory 1 − λ (worst x)", **lw)
            ax.plot(x, gap("trace_theory"), color=col, label=f"{short}: theory 1 − tr S/(n−1) (isotropic x)", **sty)
            for key, mk, what in (("worst", "o", "x = top eigenvector"), ("iso", "s", "isotropic x")):
                y = gap(f"{key}_mean")
                err = np.stack([y - gap(f"{key}_max"), gap(f"{key}_min") - y])
                ax.errorbar(
                    x,
                    y,
                    yerr=np.abs(err),
                    fmt=mk,
                    color=col,
                    ms=5,
                    mfc="none",
                    capsize=2,
                    label=f"{short}: measured, {what}",
                )
            ax.plot(
                x,
                gap("traj_mean"),
                "^",
                color=col,
                ms=4,
                alpha=0.5,
                label=f"{short}: measured along a trajectory (≥ 1 − λ)",
            )
            if cats:
                ax.set_xticks(np.arange(len(pts)), [r["value"] for r in pts])
            n, seeds, rounds = pts[0]["n"], pts[0]["seeds"], pts[0]["rounds"]
        ax.set_yscale("log")
        ax.set_title(TITLES[panel].format(n=n), fontsize=10)
        ax.set_xlabel(xlabels[pts[0]["param"]])
        ax.set_ylabel("1 − E‖(I−J)Wx‖² / ‖(I−J)x‖²  (decrease per round)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, loc="best")
    ax = axes.flat[5]
    for i, key in enumerate(("worst", "iso")):
        th = np.array([r["lambda_theory" if key == "worst" else "trace_theory"] for r in rows])
        me = np.array([r[f"{key}_mean"] for r in rows])
        se = np.array([r[f"{key}_se"] for r in rows])
        ax.errorbar(
            th,
            me,
            yerr=5 * se,
            fmt="os"[i],
            ms=4,
            mfc="none",
            color=f"C{i}",
            label=("x = top eigenvector vs λ" if key == "worst" else "isotropic x vs tr S/(n−1)") + " (bars: ±5 SE)",
        )
    lim = [0, 1.02]
    ax.plot(lim, lim, "k-", lw=0.8, label="measured = theory")
    ax.set(
        xlim=lim,
        ylim=lim,
        xlabel="theory: E ratio per round (closed form)",
        ylabel="measured: mean ratio over rounds and seeds",
        title="every model and parameter: measured vs theory",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"One round's mean-square contraction E‖(I−J)Wx‖²/‖(I−J)x‖² on graphs drawn every round: "
        f"{seeds} seeds × {rounds} draws per point (bars: min–max over seeds)",
        fontsize=11,
    )
    return _save(fig, path)


def _save(fig, path):
    """Save and close ``fig``; return every axis's (title, x label, y label) so the test can
    check that none is missing."""
    plt = _plt()
    labels = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return labels


def _curve(ax, x, mean, lo, hi, color, label, marker=None):
    """Mean with a min-max band; a run that diverged (non-finite) is cut there and marked with an
    x at its last finite value instead of being drawn at a cap."""
    x, mean, lo, hi = (np.asarray(a, float) for a in (x, mean, lo, hi))
    bad = ~np.isfinite(mean) | ~np.isfinite(hi)
    stop = int(np.argmax(bad)) if bad.any() else len(x)
    if stop < len(x):
        label = f"{label} (diverged at {x[stop]:g})"
    ax.plot(x[:stop], mean[:stop], color=color, label=label, marker=marker, ms=3)
    ax.fill_between(x[:stop], lo[:stop], hi[:stop], color=color, alpha=0.2)
    if stop < len(x) and stop > 0:
        ax.plot(x[stop - 1], mean[stop - 1], "x", color=color, ms=10, mew=2)


def plot_dsgd(band, n, rounds, seeds, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (g, part) in enumerate(band.groupby("graph", sort=False)):
        part = part.sort_values("round")
        m = "node_test_accuracy_mean"
        for ax, x in ((axes[0], part["round"]), (axes[1], part["models_sent_per_node_mean"])):
            _curve(ax, x, part[f"{m}_mean"], part[f"{m}_min"], part[f"{m}_max"], f"C{i}", g)
    axes[0].set(xlabel="round", ylabel="test accuracy (mean over nodes' own models)", title="against rounds")
    axes[1].set(
        xlabel="models sent per node (bytes_sent / (n · model bytes))",
        ylabel="test accuracy (mean over nodes' own models)",
        title="against communication",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"D-SGD on digits, Dirichlet α = 0.1, n = {n}, {rounds} rounds, {seeds} seeds (mean, min–max band)")
    return _save(fig, path)


def plot_robust(band, n, rounds, seeds, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (g, part) in enumerate(band.groupby("setting", sort=False)):
        part = part.sort_values("round")
        for ax, m in ((axes[0], "node_test_accuracy_mean"), (axes[1], "consensus_distance")):
            # Round 0 has every node at the same init (distance ~1e-12): left off the log axis.
            p = part if m != "consensus_distance" else part[part["round"] > 0]
            _curve(ax, p["round"], p[f"{m}_mean"], p[f"{m}_min"], p[f"{m}_max"], f"C{i}", g)
    axes[0].set(
        xlabel="round", ylabel="test accuracy (mean over honest nodes' models)", ylim=(0, 1), title="honest accuracy"
    )
    axes[1].set(
        xlabel="round",
        ylabel="honest consensus distance (1/|H|) Σ‖x_i − x̄‖²",
        yscale="log",
        title="honest consensus distance",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"ClippedGossip on a 4×4 torus with link failures (policy self), n = {n}, {rounds} rounds, "
        f"{seeds} seeds (mean, min–max band)"
    )
    return _save(fig, path)


def _final(band, by):
    last = band.sort_values("round").groupby(by, sort=False).tail(1)
    cols = [by, "round", "seeds"] + [
        c
        for c in band.columns
        if c.startswith(("node_test_accuracy_mean_", "test_accuracy_", "consensus_distance_", "models_sent_per_node_"))
    ]
    return last[[c for c in cols if c in last.columns]].reset_index(drop=True)


# ----------------------------------------------------------------------------- tables (docs/results.md)
# docs/results.md renders these from the committed files (experiments/regenerate.py).
CONTRACTION_ROWS = (  # (model, value, label, parameter): the rows the page shows; all 50 are in contraction.csv
    ("epidemic_oracle", "1", "EL-Oracle", "s = 1"),
    ("epidemic_oracle", "7", "EL-Oracle", "s = 7"),
    ("epidemic_local", "1", "EL-Local", "s = 1"),
    ("epidemic_local", "7", "EL-Local", "s = 7"),
    ("link_failures_self", "0.5", "ring, link failures, policy self", "p = 0.5"),
    ("link_failures_renormalize", "0.5", "ring, link failures, renormalize", "p = 0.5"),
    ("churn_self", "0.5", "ring, Bernoulli churn, policy self", "q = 0.5"),
    ("pairwise", "torus", "pairwise gossip", "base torus 4×8"),
    ("random_matching", "hypercube", "random matching", "base hypercube"),
)
DSGD_ORDER = (
    "static ring",
    "ring, link failures p = 0.5",
    "EL-Oracle s = 1",
    "EL-Oracle s = 2",
    "EL-Oracle s = 4",
    "EL-Oracle s = 7",
    "SGP, directed exponential",
)
ROBUST_ORDER = (
    "no attacker, p = 1",
    "no attacker, p = 0.5",
    "dissensus, f = 2, p = 1",
    "dissensus, f = 2, p = 0.7",
    "dissensus, f = 2, p = 0.5",
)


def _read(folder, name):
    import pandas as pd

    return pd.read_csv(Path(folder) / name, keep_default_na=False, na_values=["NaN", "nan"])


def _decimals(se: float) -> int:
    """Decimals that show a standard error with two significant digits (at least 4)."""
    return max(4, 1 - math.floor(math.log10(se))) if se > 0 else 6


def table_contraction(folder) -> str:
    """The selected rows of contraction.csv: λ and the trace form against the measured means."""
    c = _read(folder, "contraction.csv")
    pick = [(c[(c["model"] == m) & (c["value"].astype(str) == v)], lab, prm) for m, v, lab, prm in CONTRACTION_ROWS]
    pick = [(sel.iloc[0], lab, prm) for sel, lab, prm in pick if len(sel)]
    if not pick:  # a --quick folder: other sizes, so every row
        pick = [(r, r["model"], f"{r['param']} = {r['value']}") for _, r in c.iterrows()]
    rows = []
    for r, label, param in pick:
        k = _decimals(r["worst_se"])
        rows.append(
            [
                label,
                param,
                f"{r['lambda_theory']:.{k}f}",
                f"{r['worst_mean']:.{k}f} ± {r['worst_se']:.{k}f}",
                f"{r['trace_theory']:.4f}",
                f"{r['iso_mean']:.4f}",
            ]
        )
    header = ["model (n = {})".format(int(c["n"].iloc[0])), "parameter", "λ (theory)"]
    header += ["measured, x = v (± SE)", "tr S/(n−1)", "measured, isotropic x"]
    return markdown_table(header, rows)


def table_contraction_check(folder) -> str:
    """All rows of contraction.csv: how many standard errors the measured means are from theory."""
    c = _read(folder, "contraction.csv")
    drawn = c["worst_se"] > 1e-12  # p = 1 / q = 1: the static ring, no randomness
    zw = ((c["worst_mean"] - c["lambda_theory"]).abs() / c["worst_se"])[drawn]
    zi = ((c["iso_mean"] - c["trace_theory"]).abs() / c["iso_se"])[drawn]
    static = (c["worst_mean"] - c["lambda_theory"]).abs()[~drawn]
    traj = (c["traj_mean"] - c["lambda_theory"]) / c["worst_se"].where(drawn)
    header = ["points (drawn / static)", "seeds × draws", "x = v: abs(mean − λ) / SE, max (median)"]
    header += ["isotropic x: abs(mean − tr S/(n−1)) / SE, max (median)", "static rows: max abs(mean − λ)"]
    header += ["trajectory: max (mean − λ) / SE"]
    row = [
        f"{int(drawn.sum())} / {int((~drawn).sum())}",
        f"{int(c['seeds'].iloc[0])} × {int(c['rounds'].iloc[0])}",
        f"{zw.max():.2f} ({zw.median():.2f})",
        f"{zi.max():.2f} ({zi.median():.2f})",
        f"{static.max():.1e}" if len(static) else "–",
        f"{traj.max():.2f}",
    ]
    return markdown_table(header, [row])


def _acc(r, key) -> str:
    """Accuracy over seeds as 'mean [min, max]' with three decimals."""
    return "{:.3f} [{:.3f}, {:.3f}]".format(*(r[f"{key}_{s}"] for s in ("mean", "min", "max")))


def _models(mean, lo, hi) -> str:
    if lo == hi:
        return f"{mean:.0f}"
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"


def _last(df, by, order):
    last = df.sort_values("round").groupby(by, sort=False).tail(1).set_index(by)
    return [(k, last.loc[k]) for k in order if k in last.index]


def table_dsgd(folder) -> str:
    """dsgd.csv at the last round: mean [min, max] over seeds per graph."""
    rows = []
    for g, r in _last(_read(folder, "dsgd.csv"), "graph", DSGD_ORDER):
        rows.append(
            [
                g,
                _models(*(r[f"models_sent_per_node_{s}"] for s in ("mean", "min", "max"))),
                _acc(r, "node_test_accuracy_mean"),
                _acc(r, "test_accuracy"),
                fmt_band(*(r[f"consensus_distance_{s}"] for s in ("mean", "min", "max"))),
                int(r["seeds"]),
            ]
        )
    header = ["graph", "models sent per node", "node accuracy", "averaged-model accuracy"]
    return markdown_table(header + ["consensus distance", "seeds"], rows)


def table_robust(folder) -> str:
    """robust.csv at the last round: mean [min, max] over seeds per setting."""
    rows = []
    for s, r in _last(_read(folder, "robust.csv"), "setting", ROBUST_ORDER):
        rows.append(
            [
                s,
                _acc(r, "node_test_accuracy_mean"),
                _acc(r, "test_accuracy"),
                fmt_band(*(r[f"consensus_distance_{k}"] for k in ("mean", "min", "max"))),
                int(r["seeds"]),
            ]
        )
    header = ["setting", "honest node accuracy", "averaged-model accuracy", "honest consensus distance", "seeds"]
    return markdown_table(header, rows)


TABLES = {
    "contraction": table_contraction,
    "contraction_check": table_contraction_check,
    "dsgd": table_dsgd,
    "robust": table_robust,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/dynamic_networks", help="output directory")
    ap.add_argument("--quick", action="store_true", help="tiny n, few rounds, 2 seeds (the test)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the learning runs (parts 2, 3)")
    ap.add_argument(
        "--parts",
        default="contraction,dsgd,robust",
        help="which parts to run; summary.json keeps the other parts' entries",
    )
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    os.makedirs(args.out, exist_ok=True)
    seeds = range(2 if args.quick else args.seeds)
    import pandas as pd

    spath = os.path.join(args.out, "summary.json")
    summary = dict(quick=args.quick, seeds=len(seeds), times={}, axes={})
    times, axes = summary["times"], summary["axes"]

    if "contraction" in parts:
        t = time.perf_counter()
        rows = contraction(args.quick)
        times["contraction_s"] = time.perf_counter() - t
        pd.DataFrame(rows).to_csv(os.path.join(args.out, "contraction.csv"), index=False)
        with open(os.path.join(args.out, "contraction.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
        axes["contraction"] = plot_contraction(rows, os.path.join(args.out, "dynamic_contraction.png"))
        print(
            f"{'model':28}{'param':>12}{'lambda':>10}{'measured':>10}{'SE':>9}{'tr/(n-1)':>10}{'measured':>10}{'traj':>9}"
        )
        for r in rows:
            print(
                f"{r['model']:28}{r['param'] + '=' + str(r['value']):>12}{r['lambda_theory']:10.5f}"
                f"{r['worst_mean']:10.5f}{r['worst_se']:9.1e}{r['trace_theory']:10.5f}{r['iso_mean']:10.5f}"
                f"{r['traj_mean']:9.5f}"
            )
        print(f"contraction: {times['contraction_s']:.1f} s", flush=True)

    if "dsgd" in parts:
        t = time.perf_counter()
        df, n_d, rounds_d = dsgd(args.quick, seeds)
        times["dsgd_s"] = time.perf_counter() - t
        band = _band(
            df, ["node_test_accuracy_mean", "test_accuracy", "consensus_distance", "models_sent_per_node"], "graph"
        )
        band.to_csv(os.path.join(args.out, "dsgd.csv"), index=False)
        axes["dsgd"] = plot_dsgd(band, n_d, rounds_d, len(seeds), os.path.join(args.out, "dynamic_dsgd.png"))
        fd = _final(band, "graph")
        summary["dsgd"] = dict(
            n=n_d, rounds=rounds_d, traces=sorted(set(int(v) for v in df["traces"])), final=fd.to_dict("records")
        )
        with pd.option_context("display.width", 250, "display.max_columns", 20):
            print(fd.to_string(index=False), flush=True)

    if "robust" in parts:
        t = time.perf_counter()
        dr, n_r, rounds_r = robust(args.quick, seeds)
        times["robust_s"] = time.perf_counter() - t
        band_r = _band(dr, ["node_test_accuracy_mean", "test_accuracy", "consensus_distance"], "setting")
        band_r.to_csv(os.path.join(args.out, "robust.csv"), index=False)
        axes["robust"] = plot_robust(band_r, n_r, rounds_r, len(seeds), os.path.join(args.out, "dynamic_robust.png"))
        fr = _final(band_r, "setting")
        summary["robust"] = dict(n=n_r, rounds=rounds_r, final=fr.to_dict("records"))
        with pd.option_context("display.width", 250, "display.max_columns", 20):
            print(fr.to_string(index=False), flush=True)

    # Parts may run as separate processes into one folder: merge into summary.json under a lock.
    import fcntl

    with open(spath + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(spath) and parts != {"contraction", "dsgd", "robust"}:
            old = json.load(open(spath))
            for k in ("times", "axes"):
                summary[k] = {**old.get(k, {}), **summary[k]}
            summary = {**old, **summary}
        times = summary["times"]
        times["total_s"] = sum(v for k, v in times.items() if k != "total_s")
        with open(spath, "w") as fh:
            json.dump(summary, fh, indent=1)
    print(
        f"wrote {args.out} ({', '.join(sorted(parts))}; {sum(times.values()) - times['total_s']:.1f} s in all parts so far)"
    )
    return summary


if __name__ == "__main__":
    main()
