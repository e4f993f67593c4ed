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

    python experiments/compressed_gossip.py --out runs/compressed_gossip   # 50 s on 2 CPU cores (measured)
    python experiments/compressed_gossip.py --quick --out /tmp/cg          # 24 s (n = 16, d = 100, 150
                                                                           # rounds; digits: 8 nodes, 20
                                                                           # rounds, D-SGD and Choco top-k)

Writes DIR/compressed_gossip.png (four panels), DIR/compressed_gossip.json (every number and
curve) and DIR/compressed_gossip.md (tables). Measured (full mode): the network mean moves by
< 4e-5 (float32 roundoff; weights 1/3) for every compressor and γ that does not diverge; best γ
is 1 (identity, QSGD, sign), 0.32 (top-k) and 0.1 (random-k, whose distance grows from γ ≈ 0.18 on), while
γ* = 3.3e-4, 3.2e-5, 3.2e-5, 1.8e-4, 1.6e-6: at γ* the consensus distance after 1000 rounds is
still 0.66–1.0 of its start. On digits after 200 rounds the compressed methods end 0.7–5 points
below D-SGD's node accuracy (0.969) having sent 7.3–8.0× fewer bytes; after the same bytes
D-SGD is at 0.71–0.75.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

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
                per_gamma.append(
                    {"gamma": float(g), ACC: _stats(lg[ACC]), "test_accuracy": _stats(lg["test_accuracy"])}
                )
            best = max(per_gamma, key=lambda r: r[ACC]["mean"])["gamma"]
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


# --------------------------------------------------------------------------- output
def markdown(gossip, digits) -> str:
    L = [
        "# Compressed gossip",
        "",
        (
            f"## (a) Choco-Gossip, ring n = {gossip['n']}, d = {gossip['d']}, {gossip['rounds']} rounds, "
            f"seeds {gossip['seeds']}"
        ),
        "",
        (
            "| compressor | ω (worst case) | bits / message | γ* (Thm 2) | paper rate 1−δ²ω/82 | best γ (grid) | "
            "rel. consensus dist. at T: best γ | at γ* | max mean drift (stable γ) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in gossip["compressors"]:
        b = r["gammas"].index(r["gamma_best"])
        L.append(
            f"| {r['label']} | {r['omega']:.4g} | {r['bits_per_message']:.0f} | {r['gamma_star']:.3g} | "
            f"{r['paper_rate']:.8f} | {r['gamma_best']:.3g} | {r['final_distance'][b]:.3g} | "
            f"{r['final_distance'][-1]:.3g} | {r['mean_drift_max_stable']:.2g} |"
        )
    L += [
        "",
        "## (b) digits, accuracy per byte (final round; mean [min, max] over seeds)",
        "",
        (
            "| method | γ | node accuracy | averaged-model accuracy | MB sent | MB closed form | ×fewer bytes than D-SGD "
            "| D-SGD node accuracy at the same MB |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = digits[0]["final_mb_sent"]
    for r in digits:
        a, m = r["final_node_accuracy"], r["final_averaged_model_accuracy"]
        g = "—" if r["gamma_best"] is None else f"{r['gamma_best']:g}"
        L.append(
            f"| {r['label']} | {g} | {a['mean']:.4f} [{a['min']:.4f}, {a['max']:.4f}] | "
            f"{m['mean']:.4f} [{m['min']:.4f}, {m['max']:.4f}] | {r['final_mb_sent']:.3f} | "
            f"{r['mb_sent_closed_form']:.3f} | {ref / r['final_mb_sent']:.2f} | {r['dsgd_accuracy_at_same_mb']:.4f} |"
        )
    L += ["", "γ grid (b), final node accuracy (mean over seeds):", ""]
    for r in digits[1:]:
        L.append(f"- {r['label']}: " + ", ".join(f"γ={p['gamma']:g}: {p[ACC]['mean']:.4f}" for p in r["per_gamma"]))
    return "\n".join(L) + "\n"


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
    ax.set(
        xscale="log",
        xlabel="consensus step γ",
        ylabel="mean over rounds of log10 rel. consensus distance",
        title="(a) grid search, one vmapped scan per compressor\n(lower = faster; ★ best γ, dotted: γ*, missing: diverged)",
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
        "mean and min–max over 3 seeds",
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
        ax.errorbar(
            g * (1 + 0.04 * (i - 2.5)),
            m,
            yerr=[m - lo_, hi_ - m],
            fmt="o-",
            color=f"C{i}",
            ms=4,
            capsize=3,
            label=f"{r['label']} (best γ = {r['gamma_best']:g})",
        )
    ax.set(
        xscale="log",
        xlabel="consensus step γ",
        ylim=(0, 1),
        ylabel="final test accuracy, mean over nodes (min–max over seeds)",
        title="(b) choosing γ: one rj.sweep over γ × seed per method\n(error bars: min–max over seeds)",
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
        gossip = run_gossip(16, 200, 1000, np.geomspace(1e-4, 1, 17), (0, 1, 2))
        digits = run_digits(16, 200, (32,), 10, (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8), (0, 1, 2))
    result = _jsonable({"quick": args.quick, "gossip": gossip, "digits": digits, "seconds": time.perf_counter() - t0})
    base = os.path.join(args.out, "compressed_gossip")
    with open(base + ".json", "w") as f:
        json.dump(result, f)
    md = markdown(gossip, digits)
    with open(base + ".md", "w") as f:
        f.write(md)
    plot(gossip, digits, base + ".png")
    print(md)
    print(f"wrote {base}.json, .md and .png ({time.perf_counter() - t0:.1f} s)")
    return result


if __name__ == "__main__":
    main()
