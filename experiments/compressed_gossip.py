"""Compressed gossip: Choco-Gossip's theoretical γ* against a grid search, and accuracy per byte.

(a) Choco-Gossip (Koloskova, Stich & Jaggi 2019, Alg. 1: ``q = Q(x − x̂)``, ``x̂ ← x̂ + q``,
    ``x ← x + γ(W − I)x̂``, x̂₀ = 0) on a ring of 16 nodes averaging random vectors
    (x₀ ~ N(0, I), d = 200, float32 as the library runs), for each compressor of
    ``rj.compress``: identity, top-k and random-k (10% of the coordinates), QSGD (s = 16 levels,
    scaled by 1/τ) and scaled sign. The consensus step γ is a ``Hyper`` of the channel
    (``"compression.gamma"``, read from ``ctx.hp``), so the grid search is ONE jitted program per
    compressor: ``jax.vmap`` over γ (a log grid 1e-4 … 1 plus the theoretical γ*) and over seeds
    of a ``lax.scan`` over rounds of ``rj.channels.choco(rj.channels.gossip(ring), Q, γ)`` —
    exactly what ``rj.sweep`` does with a hyper-parameter axis. The best γ minimises the mean
    over rounds (and seeds) of log10 of the relative consensus distance (1/n)Σ‖xᵢ − x̄‖² / its
    start (area under the log curve: fast and low wins). γ* is Theorem 2's step from
    ``rj.theory.choco_constants(W, ω)``, ω the compressor's worst-case quality ``Q.omega(d)``;
    it is orders of magnitude below the best γ and its curve is nearly flat. For the identity
    compressor the exact contraction ``rj.theory.choco_identity_rate(W, γ)`` is drawn as a line.
    (The paper's rate 1 − δ²ω/82 is printed, not asserted: it is inconsistent on slow rings.)
(b) Digits on a ring of 16 nodes (MLP, one hidden layer of 32, momentum 0.9, lr 0.05, batch 16,
    200 rounds): D-SGD (ATC) against Choco-SGD (top-k 10%, QSGD s = 4) and DeepSqueeze (the same
    two compressors, error feedback). γ of each compressed method is chosen on a grid by ONE
    ``rj.sweep(config, {"compression.gamma": grid, "seed": [0, 1, 2]})`` (γ and the seed are
    vmapped: one compile; the seed redraws the initial model and the minibatches, the data
    partition is that of seed 0), picking the best final mean node accuracy; D-SGD is one sweep
    over the seeds. Plotted: the nodes' mean test accuracy (each node's own model) against the
    cumulative bytes sent over all directed edges, mean and min–max band over the 3 seeds.
    The bytes sent are checked against the closed form rounds · edges · bits(d)/8.

    python experiments/compressed_gossip.py --out docs/results/compressed_gossip   # 990 s wall, 179 s CPU
    python experiments/compressed_gossip.py --quick --out /tmp/cg                  # the test's run: 42 s CPU
    # quick: n = 16, d = 100, 150 rounds, 2 starts; digits: 8 nodes, 20 rounds, D-SGD and Choco top-k

Timed on the 2-core machine at load 20–24 (other jobs: most of the wall time is waiting for a
core; the same run took about 50 s on a quiet machine before this version); almost all of it is
XLA compiles, one per compressor in (a) and one per method in (b). (a) runs 5 initial vectors
(seeds 0–4) per (compressor, γ), (b) 3 seeds per (method, γ).

Writes in DIR: ``gossip.csv`` (one row per compressor and γ of (a), the last being γ*: score,
final relative consensus distance over the seeds, diverged or not, mean drift), ``digits.csv``
(one row per method and evaluated round: node accuracy and MB sent over the seeds),
``digits_final.csv`` (one row per method at the last round), ``digits_gamma.csv`` (one row per
method and γ of (b)'s grid), ``compressed_gossip.png`` (four panels) and ``compressed_gossip.json``
(every number, without the per-round curves). ``TABLES`` renders docs/results.md's three tables
from the CSVs. A diverged γ (relative distance above 10 in (a); a non-finite loss or consensus
distance in (b)) is marked as such in the files, tables and figure, never given a value.

Measured (full run): the network mean moves by < 3.4e-5 (float32 roundoff; weights 1/3) for every
compressor and stable γ; best γ is 1 (identity, QSGD, sign), 0.32 (top-k) and 0.1 (random-k,
diverging from γ = 0.18 on), 3.5 to 5.8 orders of magnitude above γ* = 3.3e-4, 3.2e-5, 3.2e-5,
1.8e-4, 1.6e-6, at which the consensus distance after 1000 rounds is still 0.65–1.0 of its
start. On digits after 200 rounds the compressed methods end 1.0–5.2 points below D-SGD's node
accuracy (0.968) having sent 7.3–8.0× fewer bytes; after the same bytes D-SGD is at 0.73–0.77.
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
from _results import fmt, fmt_band, markdown_table  # noqa: E402

import redeem_jax as rj  # noqa: E402

GAMMA = "compression.gamma"
COMPRESSORS = (  # (a): label, rj.compress name, options
    ("identity", "identity", {}),
    ("top-k 10%", "top_k", {"ratio": 0.1}),
    ("random-k 10%", "random_k", {"ratio": 0.1}),
    ("QSGD s=16", "qsgd", {"levels": 16}),
    ("scaled sign", "sign", {}),
)
FLOOR = 1e-12  # (a) relative consensus distance below which float32 roundoff dominates
DIVERGED = 10.0  # (a) relative consensus distance above which (at any round) a run counts as diverged
RATE_WINDOW = (1e-10, 1e-3)  # (a) identity: relative distances fitted for the measured rate
METHODS = (  # (b): label, algorithm, compression fields (None: uncompressed)
    ("D-SGD", "dsgd", None),
    ("Choco-SGD top-k 10%", "choco_sgd", {"compression.name": "top_k", "compression.ratio": 0.1}),
    ("Choco-SGD QSGD s=4", "choco_sgd", {"compression.name": "qsgd", "compression.levels": 4}),
    ("DeepSqueeze top-k 10%", "deepsqueeze", {"compression.name": "top_k", "compression.ratio": 0.1}),
    ("DeepSqueeze QSGD s=4", "deepsqueeze", {"compression.name": "qsgd", "compression.levels": 4}),
)
ACC = "node_test_accuracy_mean"


# --------------------------------------------------------------------------- (a)
def choco_gossip(topo, q, gammas, seeds, d: int, rounds: int):
    """Choco-Gossip for every (γ, seed): relative consensus distance ``[G, S, rounds + 1]`` and the
    largest drift of the network mean ``max_t max_k |x̄_t − x̄_0|_k`` ``[G, S]`` (one jitted vmap)."""
    n = topo.n
    ch = rj.channels.choco(rj.channels.gossip(topo), q, rj.core.hyper(GAMMA, 1.0))

    def run(gamma, seed):
        x0 = jax.random.normal(jax.random.PRNGKey(seed), (n, d), jnp.float32)
        key = jax.random.PRNGKey(10_000 + seed)
        d0 = rj.gossip.consensus_distance(x0)

        def body(carry, t):
            x, s = carry
            ctx = rj.core.Ctx(
                t, jax.random.fold_in(key, t), rj.core.Edges.of(topo, t), jnp.ones(n, bool), {GAMMA: gamma}
            )
            x, s = ch.update(x, s, ctx)
            return (x, s), (rj.gossip.consensus_distance(x) / d0, jnp.max(jnp.abs(x.mean(0) - x0.mean(0))))

        _, (dist, drift) = jax.lax.scan(body, (x0, ch.init(x0)), jnp.arange(rounds, dtype=jnp.int32))
        return jnp.concatenate([jnp.ones(1), dist]), jnp.max(drift)

    f = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None)))
    dist, drift = f(jnp.asarray(gammas, jnp.float32), jnp.asarray(seeds, jnp.int32))
    return np.asarray(dist, np.float64), np.asarray(drift, np.float64)


def _score(dist):
    """Mean over rounds and seeds of log10 relative distance (clipped at FLOOR); +inf if diverged."""
    ok = np.all(np.isfinite(dist), axis=(-2, -1)) & (np.nanmax(dist, axis=(-2, -1)) < DIVERGED)
    s = np.log10(np.clip(np.nan_to_num(dist, nan=DIVERGED, posinf=DIVERGED), FLOOR, None)).mean(axis=(-2, -1))
    return np.where(ok, s, np.inf), ok


def run_gossip(n: int, d: int, rounds: int, grid, seeds):
    topo = rj.topology.ring(n)
    W = np.asarray(topo.mixing_matrix(), np.float64)
    out = {"n": n, "d": d, "rounds": rounds, "seeds": list(seeds), "grid": [float(g) for g in grid], "compressors": []}
    for label, name, opts in COMPRESSORS:
        q = rj.compress.get(name, **opts)
        omega = float(q.omega(d))
        cst = rj.theory.choco_constants(W, omega)
        gammas = np.concatenate([np.asarray(grid, np.float64), [cst["gamma"]]])  # the last one is γ*
        t0 = time.perf_counter()
        dist, drift = choco_gossip(topo, q, gammas, seeds, d, rounds)  # [G, S, T+1], [G, S]
        score, ok = _score(dist)
        best = int(np.argmin(score))
        rec = {
            "label": label,
            "compressor": q.name,
            "omega": omega,
            "bits_per_message": float(q.bits(d)),
            "bits_uncompressed": 32.0 * d,
            "delta": cst["delta"],
            "beta": cst["beta"],
            "gamma_star": cst["gamma"],
            "paper_rate": cst["rate"],
            "gamma_best": float(gammas[best]),
            "best_is_gamma_star": best == len(grid),
            "gammas": [float(g) for g in gammas],
            "score": [float(s) for s in score],
            "stable": [bool(v) for v in ok],
            "final_distance": [float(v) for v in np.exp(np.log(np.clip(dist[:, :, -1], 1e-300, None)).mean(1))],
            "final_distance_min": [float(v) for v in dist[:, :, -1].min(1)],
            "final_distance_max": [float(v) for v in dist[:, :, -1].max(1)],
            "mean_drift": [float(v) for v in drift.max(1)],
            "mean_drift_best": float(drift[best].max()),
            "mean_drift_gamma_star": float(drift[-1].max()),
            "mean_drift_max_stable": float(drift[ok].max()) if ok.any() else None,
            "curve_best": dist[best],
            "curve_gamma_star": dist[-1],
            "seconds": time.perf_counter() - t0,
        }
        if name == "identity":
            curve = np.exp(np.log(np.clip(dist[best], 1e-300, None)).mean(0))
            t = np.flatnonzero((curve > RATE_WINDOW[0]) & (curve < RATE_WINDOW[1]))
            # the distance is squared: it contracts by rate² per round
            rec["identity_rate_measured"] = (
                float(np.exp(np.polyfit(t, np.log(curve[t]), 1)[0] / 2)) if t.size >= 10 else None
            )
            rec["identity_fit_rounds"] = [int(t[0]), int(t[-1])] if t.size else None
            rec["identity_rate_best"] = rj.theory.choco_identity_rate(W, gammas[best])
            rec["identity_rate_gamma_star"] = rj.theory.choco_identity_rate(W, cst["gamma"])
        out["compressors"].append(rec)
        print(
            f"  (a) {label:14} ω={omega:.4g}  γ*={cst['gamma']:.3g}  best γ={gammas[best]:.3g}  "
            f"final dist at best {rec['final_distance'][best]:.3g}, at γ* {rec['final_distance'][-1]:.3g}  "
            f"({rec['seconds']:.1f} s)",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- (b)
def digits_config(n: int, rounds: int, hidden, eval_every: int, algorithm: str, fields=None):
    c = rj.config.base_config()
    base = {
        "num_nodes": n,
        "topology.name": "ring",
        "data.name": "digits",
        "data.batch_size": 16,
        "model.name": "mlp",
        "model.hidden": tuple(hidden),
        "optimizer.name": "momentum",
        "optimizer.learning_rate": 0.05,
        "optimizer.momentum": 0.9,
        "num_rounds": rounds,
        "eval_every": eval_every,
        "checkpoint_every": 0,
        "progress": False,
        "plots": False,
        "algorithm.name": algorithm,
        **(fields or {}),
    }
    for k, v in base.items():
        rj.config.set_field(c, k, v)
    return c


def _compressor(fields):
    name = fields["compression.name"]
    opts = {
        "top_k": {"ratio": fields.get("compression.ratio")},
        "random_k": {"ratio": fields.get("compression.ratio")},
        "qsgd": {"levels": fields.get("compression.levels")},
    }.get(name, {})
    return rj.compress.get(name, **opts)


def _stats(v):
    v = np.asarray(v, np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}


def run_digits(n: int, rounds: int, hidden, eval_every: int, grid, seeds, methods=METHODS):
    out = []
    for label, algorithm, fields in methods:
        c = digits_config(n, rounds, hidden, eval_every, algorithm, fields)
        exp = rj.build(c)
        d = int(exp.model.num_params)
        edges = int(np.asarray(exp.topology.edge_mask).sum())
        bits = float(_compressor(fields).bits(d)) if fields else 32.0 * d  # one message, on the wire
        axes = {"seed": list(seeds)} if fields is None else {GAMMA: list(grid), "seed": list(seeds)}
        t0 = time.perf_counter()
        df = rj.sweep(c, axes, progress=False)
        secs = time.perf_counter() - t0
        start = df[df["round"] == 0]
        df = df[df["round"] > 0]  # 0 bytes: not on a log axis
        last = df[df["round"] == df["round"].max()]
        per_gamma = []
        if fields is None:
            chosen = df
        else:
            for g in grid:
                lg = last[np.isclose(last[GAMMA], g)]
                # A seed diverged when its models or loss are no longer finite (its accuracy is then
                # that of NaN logits, not a value): such a γ is marked, never chosen.
                bad = ~np.isfinite(lg["consensus_distance"].to_numpy(float)) | ~np.isfinite(
                    lg["train_loss"].to_numpy(float)
                )
                per_gamma.append(
                    {
                        "gamma": float(g),
                        ACC: _stats(lg[ACC]),
                        "test_accuracy": _stats(lg["test_accuracy"]),
                        "diverged_seeds": int(bad.sum()),
                    }
                )
            ok = [r for r in per_gamma if r["diverged_seeds"] == 0]
            best = max(ok, key=lambda r: r[ACC]["mean"])["gamma"]
            chosen = df[np.isclose(df[GAMMA], best)]
        acc, mb = (
            chosen.pivot_table(index="round", columns="seed", values=col).sort_index() for col in (ACC, "bytes_sent")
        )
        mb = mb / 1e6
        fin = chosen[chosen["round"] == chosen["round"].max()]
        rec = {
            "label": label,
            "algorithm": algorithm,
            "compression": fields,
            "d": d,
            "directed_edges": edges,
            "bits_per_message": bits,
            "gamma_best": None if fields is None else float(best),
            "per_gamma": per_gamma,
            "rounds": [int(r) for r in acc.index],
            "accuracy": acc.to_numpy().T,
            "mb_sent": mb.to_numpy().T,
            "final_node_accuracy": _stats(fin[ACC]),
            "final_node_accuracy_min": _stats(fin["node_test_accuracy_min"]),
            "final_averaged_model_accuracy": _stats(fin["test_accuracy"]),
            "final_consensus_distance": _stats(fin["consensus_distance"]),
            "final_mb_sent": float(fin["bytes_sent"].max()) / 1e6,
            "mb_sent_closed_form": rounds * edges * bits / 8 / 1e6,
            "bytes_per_round": float(fin["bytes_per_round"].max()),
            "accuracy_round0": _stats(start[ACC]),
            "traces": list(df.attrs.get("traces", [])),
            "seconds": secs,
        }
        out.append(rec)
        g = "" if fields is None else f" γ={best:g}"
        print(
            f"  (b) {label:22}{g:8} node acc {rec['final_node_accuracy']['mean']:.4f} "
            f"[{rec['final_node_accuracy']['min']:.4f}, {rec['final_node_accuracy']['max']:.4f}]  "
            f"{rec['final_mb_sent']:.2f} MB ({secs:.1f} s)",
            flush=True,
        )
    # D-SGD's mean accuracy after sending as many bytes as each method sent in all its rounds
    # (linear interpolation between D-SGD's evaluations, from 0 MB at round 0)
    ref = out[0]
    ref_mb = np.concatenate([[0.0], np.asarray(ref["mb_sent"]).mean(0)])
    ref_acc = np.concatenate([[ref["accuracy_round0"]["mean"]], np.asarray(ref["accuracy"]).mean(0)])
    for rec in out:
        rec["dsgd_accuracy_at_same_mb"] = float(np.interp(rec["final_mb_sent"], ref_mb, ref_acc))
    return out


# --------------------------------------------------------------------------- output: result files
def write_csvs(gossip, digits, out: Path) -> None:
    """The result files docs/results.md's tables are rendered from (``TABLES``).

    ``gossip.csv``: one row per (compressor, γ) of (a), the last γ of each compressor being
    Theorem 2's γ*; ``final_distance_*`` is the relative consensus distance after the last round
    over the seeds (geometric mean, min, max), empty where a seed diverged. ``digits.csv``: one
    row per (method, round) of (b), mean/min/max over seeds of the node accuracy and MB sent.
    ``digits_final.csv``: one row per method at the last round. ``digits_gamma.csv``: one row per
    (method, γ) of the γ grid of (b)."""
    import pandas as pd

    rows = []
    for r in gossip["compressors"]:
        for j, g in enumerate(r["gammas"]):
            star = j == len(r["gammas"]) - 1
            ok = r["stable"][j]
            rows.append(
                {
                    "compressor": r["label"],
                    "omega": r["omega"],
                    "bits_per_message": r["bits_per_message"],
                    "delta": r["delta"],
                    "beta": r["beta"],
                    "gamma": g,
                    "is_gamma_star": star,
                    "is_best": j == r["gammas"].index(r["gamma_best"]),
                    "paper_rate": r["paper_rate"],
                    "diverged": not ok,
                    "score": r["score"][j] if ok else float("nan"),
                    "final_distance_geomean": r["final_distance"][j] if ok else float("nan"),
                    "final_distance_min": r["final_distance_min"][j] if ok else float("nan"),
                    "final_distance_max": r["final_distance_max"][j] if ok else float("nan"),
                    "mean_drift_max": r["mean_drift"][j] if ok else float("nan"),
                    "identity_rate_theory": rj.theory.choco_identity_rate(
                        rj.topology.ring(gossip["n"]).mixing_matrix(), g
                    )
                    if r["compressor"] == "identity"
                    else float("nan"),
                    "identity_rate_measured": r.get("identity_rate_measured")
                    if r["compressor"] == "identity" and j == r["gammas"].index(r["gamma_best"])
                    else float("nan"),
                    "n": gossip["n"],
                    "d": gossip["d"],
                    "rounds": gossip["rounds"],
                    "seeds": len(gossip["seeds"]),
                }
            )
    pd.DataFrame(rows).to_csv(out / "gossip.csv", index=False)

    curves, finals, grid = [], [], []
    for r in digits:
        acc, mb = np.asarray(r["accuracy"]), np.asarray(r["mb_sent"])  # [S, R]
        for k, t in enumerate(r["rounds"]):
            curves.append(
                {
                    "method": r["label"],
                    "gamma": r["gamma_best"],
                    "round": t,
                    "node_accuracy_mean": acc[:, k].mean(),
                    "node_accuracy_min": acc[:, k].min(),
                    "node_accuracy_max": acc[:, k].max(),
                    "mb_sent_mean": mb[:, k].mean(),
                    "mb_sent_min": mb[:, k].min(),
                    "mb_sent_max": mb[:, k].max(),
                    "seeds": acc.shape[0],
                }
            )
        f = {"method": r["label"], "algorithm": r["algorithm"], "gamma": r["gamma_best"], "round": r["rounds"][-1]}
        for key, name in (
            ("final_node_accuracy", "node_accuracy"),
            ("final_node_accuracy_min", "worst_node_accuracy"),
            ("final_averaged_model_accuracy", "averaged_model_accuracy"),
            ("final_consensus_distance", "consensus_distance"),
        ):
            f.update({f"{name}_{s}": r[key][s] for s in ("mean", "min", "max")})
        f.update(
            d=r["d"],
            directed_edges=r["directed_edges"],
            bits_per_message=r["bits_per_message"],
            mb_sent=r["final_mb_sent"],
            mb_sent_closed_form=r["mb_sent_closed_form"],
            dsgd_node_accuracy_at_same_mb=r["dsgd_accuracy_at_same_mb"],
            seeds=np.asarray(r["accuracy"]).shape[0],
        )
        finals.append(f)
        for p in r["per_gamma"]:
            g = {"method": r["label"], "gamma": p["gamma"], "chosen": p["gamma"] == r["gamma_best"]}
            g.update({f"node_accuracy_{s}": p[ACC][s] for s in ("mean", "min", "max")})
            g.update({f"averaged_model_accuracy_{s}": p["test_accuracy"][s] for s in ("mean", "min", "max")})
            g["diverged_seeds"] = p["diverged_seeds"]
            g["seeds"] = f["seeds"]
            grid.append(g)
    pd.DataFrame(curves).to_csv(out / "digits.csv", index=False)
    pd.DataFrame(finals).to_csv(out / "digits_final.csv", index=False)
    pd.DataFrame(grid).to_csv(out / "digits_gamma.csv", index=False)


# --------------------------------------------------------------------------- tables (docs/results.md)
def _csv(folder, name):
    import pandas as pd

    return pd.read_csv(Path(folder) / name)


def _acc(r, key) -> str:
    return "{:.3f} [{:.3f}, {:.3f}]".format(*(r[f"{key}_{s}"] for s in ("mean", "min", "max")))


def table_gossip(folder) -> str:
    """(a) per compressor: ω, bits, Theorem 2's γ*, the best grid γ and the consensus distance
    after the last round at both (geometric mean [min, max] over seeds)."""
    g = _csv(folder, "gossip.csv")
    rows = []
    for comp, part in g.groupby("compressor", sort=False):
        best, star = part[part["is_best"]].iloc[0], part[part["is_gamma_star"]].iloc[0]
        band = [fmt_band(*(r[f"final_distance_{s}"] for s in ("geomean", "min", "max")), 2) for r in (best, star)]
        div = part[part["diverged"] & ~part["is_gamma_star"]]["gamma"]
        rows.append(
            [
                comp,
                fmt(best["omega"], 2),
                f"{best['bits_per_message']:.0f}",
                fmt(star["gamma"], 2),
                fmt(best["gamma"], 2),
                band[0],
                band[1],
                "none" if div.empty else f"γ ≥ {fmt(div.min(), 2)}",
                int(best["seeds"]),
            ]
        )
    d, n, t = (int(g[k].iloc[0]) for k in ("d", "n", "rounds"))
    return markdown_table(
        [
            "compressor",
            "ω",
            f"bits / message (d = {d})",
            "γ* (Thm. 2)",
            "best γ on the grid",
            f"rel. consensus distance after {t} rounds, best γ",
            "at γ*",
            "diverged on the grid",
            "seeds",
        ],
        rows,
    )


def table_digits(folder) -> str:
    """(b) per method at the last round: γ, node accuracy (mean [min, max] over seeds), MB sent,
    and D-SGD's node accuracy after as many MB."""
    rows = []
    for _, r in _csv(folder, "digits_final.csv").iterrows():
        same = "–" if r["algorithm"] == "dsgd" else f"{r['dsgd_node_accuracy_at_same_mb']:.3f}"
        rows.append(
            [
                r["method"],
                "–" if not np.isfinite(r["gamma"]) else f"{r['gamma']:g}",
                _acc(r, "node_accuracy"),
                _acc(r, "averaged_model_accuracy"),
                f"{r['mb_sent']:.1f}",
                same,
                int(r["seeds"]),
            ]
        )
    header = ["method", "γ", "node accuracy", "averaged-model accuracy", "MB sent"]
    return markdown_table(header + ["D-SGD's node accuracy at the same MB", "seeds"], rows)


def table_digits_gamma(folder) -> str:
    """(b) the γ grid: final node accuracy per method and γ (mean [min, max] over seeds; bold: the
    chosen γ; 'diverged' where a seed's models or loss stopped being finite)."""
    g = _csv(folder, "digits_gamma.csv")
    gammas = sorted(g["gamma"].unique())
    rows = []
    for m, part in g.groupby("method", sort=False):
        by = part.set_index("gamma")
        cells = [
            f"diverged ({int(by.loc[x, 'diverged_seeds'])} of {int(by.loc[x, 'seeds'])} seeds)"
            if by.loc[x, "diverged_seeds"]
            else ("**{}**" if by.loc[x, "chosen"] else "{}").format(_acc(by.loc[x], "node_accuracy"))
            for x in gammas
        ]
        rows.append([m, *cells])
    return markdown_table(["method \\ γ", *(f"{x:g}" for x in gammas)], rows)


TABLES = {"gossip": table_gossip, "digits": table_digits, "digits_gamma": table_digits_gamma}


def plot(gossip, digits, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    ax = axes[0, 0]
    for i, r in enumerate(gossip["compressors"]):
        c = f"C{i}"
        for which, ls, lw, al in (("best", "-", 2.5, 0.6), ("gamma_star", "--", 1.5, 0.9)):
            cur = np.clip(np.asarray(r[f"curve_{which}"]), 1e-16, None)  # [S, T+1]
            t = np.arange(cur.shape[1])
            g = r["gamma_best"] if which == "best" else r["gamma_star"]
            ax.fill_between(t, cur.min(0), cur.max(0), color=c, alpha=0.15)
            ax.plot(
                t,
                np.exp(np.log(cur).mean(0)),
                ls,
                color=c,
                lw=lw,
                alpha=al,
                label=f"{r['label']}: {'best' if which == 'best' else 'γ*'} γ = {g:.2g}",
            )
        if "identity_rate_best" in r:
            cur = np.asarray(r["curve_best"])
            t = np.arange(cur.shape[1])
            t_ref = r["identity_fit_rounds"][1] if r["identity_fit_rounds"] else 1
            y_ref = np.exp(np.log(np.clip(cur[:, t_ref], 1e-300, None)).mean())
            ax.plot(
                t,
                y_ref * r["identity_rate_best"] ** (2 * (t - t_ref)),
                ":",
                color="k",
                lw=1.2,
                label=f"identity, theory (1 + γ(λ₂ − 1))^(2t), γ = {r['gamma_best']:.2g}: rate "
                f"{r['identity_rate_best']:.4f} (measured {r['identity_rate_measured'] or float('nan'):.4f})",
            )
            ax.plot(
                t,
                r["identity_rate_gamma_star"] ** (2 * t),
                ":",
                color="grey",
                lw=1.2,
                label=f"identity, theory at γ* = {r['gamma_star']:.2g}",
            )
    ax.set(
        yscale="log",
        ylim=(1e-15, 3),
        xlabel="gossip round t",
        ylabel="(1/n)Σ‖xᵢ − x̄‖² / start  (geo. mean; band: min–max over seeds)",
        title=f"(a) Choco-Gossip, ring n = {gossip['n']}, d = {gossip['d']}: best grid γ vs Theorem 2's γ*",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=1, loc="center right", framealpha=0.9)

    ax = axes[0, 1]
    for i, r in enumerate(gossip["compressors"]):
        c = f"C{i}"
        g = np.asarray(r["gammas"][:-1])
        s = np.asarray(r["score"][:-1])
        ax.plot(
            g, np.where(np.isfinite(s), s, np.nan), "o-", color=c, ms=4, label=f"{r['label']} (ω = {r['omega']:.3g})"
        )
        ax.axvline(r["gamma_star"], color=c, ls=":", lw=1.2, label=f"{r['label']}: γ* = {r['gamma_star']:.2g}")
        b = r["gammas"].index(r["gamma_best"])
        ax.plot([r["gamma_best"]], [r["score"][b]], "*", color=c, ms=14, mec="k")
        # A diverged γ has no value: an x on the panel's top edge, not a point at a cap.
        bad = ~np.isfinite(s)
        if bad.any():
            ax.plot(
                g[bad],
                np.full(bad.sum(), 0.97 - 0.03 * i),
                "x",
                color=c,
                ms=8,
                mew=2,
                transform=ax.get_xaxis_transform(),
                label=f"{r['label']}: diverged (distance > {DIVERGED:g} × start)",
            )
    ax.set(
        xscale="log",
        xlabel="consensus step γ",
        ylabel="mean over rounds of log10(consensus distance / start)",
        title="(a) grid search, one vmapped scan per compressor\n(lower = faster; ★ best γ, dotted: γ*, x on top: diverged)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1, 0]
    for i, r in enumerate(digits):
        c = f"C{i}"
        acc, mb = np.asarray(r["accuracy"]), np.asarray(r["mb_sent"])  # [S, R]
        x = mb.mean(0)
        g = "" if r["gamma_best"] is None else f", γ = {r['gamma_best']:g}"
        ax.fill_between(x, acc.min(0), acc.max(0), color=c, alpha=0.2)
        ax.plot(
            x,
            acc.mean(0),
            "-",
            color=c,
            lw=2,
            label=f"{r['label']}{g}: {r['final_node_accuracy']['mean']:.3f} at {r['final_mb_sent']:.1f} MB",
        )
    ax.set(
        xscale="log",
        xlabel="bytes sent, all directed edges, cumulative (MB)",
        ylabel="test accuracy, mean over nodes of each node's model",
        title=f"(b) digits, ring n = {digits[0]['directed_edges'] // 2}, MLP (d = {digits[0]['d']}): "
        f"mean and min–max over {np.asarray(digits[0]['accuracy']).shape[0]} seeds",
    )
    ax.set_ylim(max(0.0, min(r["final_node_accuracy"]["mean"] for r in digits) - 0.25), 1.0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1, 1]
    ref = digits[0]["final_node_accuracy"]
    ax.axhspan(ref["min"], ref["max"], color="C0", alpha=0.2)
    ax.axhline(ref["mean"], color="C0", lw=1.5, label="D-SGD (uncompressed), band min–max")
    for i, r in enumerate(digits[1:], start=1):
        g = np.array([p["gamma"] for p in r["per_gamma"]])
        m = np.array([p[ACC]["mean"] for p in r["per_gamma"]])
        lo_, hi_ = np.array([p[ACC]["min"] for p in r["per_gamma"]]), np.array([p[ACC]["max"] for p in r["per_gamma"]])
        bad = np.array([p.get("diverged_seeds", 0) > 0 for p in r["per_gamma"]])
        m, lo_, hi_ = (np.where(bad, np.nan, a) for a in (m, lo_, hi_))  # a diverged γ has no accuracy
        gx = g * (1 + 0.04 * (i - 2.5))
        ax.errorbar(
            gx,
            m,
            yerr=[m - lo_, hi_ - m],
            fmt="o-",
            color=f"C{i}",
            ms=4,
            capsize=3,
            label=f"{r['label']} (best γ = {r['gamma_best']:g})",
        )
        if bad.any():
            ax.plot(
                gx[bad],
                np.full(bad.sum(), 0.04 + 0.03 * i),
                "x",
                color=f"C{i}",
                ms=9,
                mew=2,
                transform=ax.get_xaxis_transform(),  # on the bottom edge: not an accuracy value
                label=f"{r['label']}: diverged (a seed's loss not finite)",
            )
    ax.set(
        xscale="log",
        xlabel="consensus step γ",
        ylim=(0, 1),
        ylabel="final test accuracy, mean over nodes (min–max over seeds)",
        title="(b) choosing γ: one rj.sweep over γ × seed per method\n(error bars: min–max over seeds; x: diverged)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist()) if x.ndim > 1 else [float(f"{v:.6g}") for v in x.tolist()]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def slim(result: dict) -> dict:
    """``result`` without the per-round curves (in the figure and digits.csv): the JSON stays small."""
    drop = {"curve_best", "curve_gamma_star", "accuracy", "mb_sent"}
    out = dict(result)
    out["gossip"] = {
        **result["gossip"],
        "compressors": [{k: v for k, v in c.items() if k not in drop} for c in result["gossip"]["compressors"]],
    }
    out["digits"] = [{k: v for k, v in r.items() if k not in drop} for r in result["digits"]]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/compressed_gossip", help="output directory")
    p.add_argument("--quick", action="store_true", help="smaller problems, fewer rounds and γ (tests)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.quick:
        gossip = run_gossip(16, 100, 150, np.geomspace(1e-3, 1, 7), (0, 1))
        # each rj.sweep compiles for ~8 s on 2 cores whatever its size: D-SGD and Choco-SGD top-k only
        digits = run_digits(8, 20, (16,), 10, (0.1, 0.4), (0, 1), METHODS[:2])
    else:
        gossip = run_gossip(16, 200, 1000, np.geomspace(1e-4, 1, 17), (0, 1, 2, 3, 4))
        digits = run_digits(16, 200, (32,), 10, (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8), (0, 1, 2))
    result = _jsonable({"quick": args.quick, "gossip": gossip, "digits": digits, "seconds": time.perf_counter() - t0})
    base = os.path.join(args.out, "compressed_gossip")
    with open(base + ".json", "w") as f:
        json.dump(slim(result), f)
    write_csvs(gossip, digits, Path(args.out))
    plot(gossip, digits, base + ".png")
    for name, table in TABLES.items():
        print(f"{name}:\n{table(args.out)}\n")
    print(f"wrote {args.out}: compressed_gossip.json, .png and gossip, digits*.csv ({time.perf_counter() - t0:.1f} s)")
    return result


if __name__ == "__main__":
    main()
