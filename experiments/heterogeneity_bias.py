"""Data heterogeneity: D-SGD's consensus bias against the exact methods that remove it.

The problem is whitened least squares with a known optimum: every node's loss is exactly
fᵢ(x) = ½‖x − bᵢ‖² + cᵢ (``data.name="linear"``, ``data.whiten=True``, full batches), so
x* = mean(bᵢ) and every method below is a linear recursion with a closed form (``rj.theory``).
Each seed is a fresh data draw (``seed``; ``data.seed`` left at −1 so it follows), hence new
node optima bᵢ; the graph is fixed.

(a) Constant-step D-SGD (CTA ``x⁺ = Wx − α∇f`` and ATC ``x⁺ = W(x − α∇f)``) on a ring of 16
    nodes stops at the fixed point of ``rj.theory.dsgd_fixed_point`` (CTA α(αI + I − W)⁻¹b,
    ATC α(I − (1−α)W)⁻¹Wb), off the optimum. We run every α of a grid in one vmapped, jitted
    ``lax.scan`` of ``exp.step`` (the learning rate is a hyper-parameter of the step), long
    enough for the transient to die (``rj.theory.dsgd_rate``), and compare the measured bias
    (1/n)Σᵢ‖xᵢ − x*‖² with the closed form, for 5 data draws. It shrinks like α² (small α).
(b) DIGing (CTA α = 0.15, ATC α = 0.2), exact diffusion (α = 0.5) and D² (α = 0.7) on a random
    3-regular graph of 8 nodes (``topology.seed=6``: MH weights 1/4, exact in float32, so W is
    exactly doubly stochastic; λ_min(W) = −0.309 > −1/3 as D² needs) reach x*; D-SGD ATC at
    α = 0.2 stalls at its closed-form bias. The linear rate fitted on the tail of
    log‖X_t − 1x*ᵀ‖_F (window 1e-5 < error < 1e-2, above float32 noise) is compared with the
    spectral radius of the error iteration (``rj.theory.diging_rate``, ``exact_diffusion_rate``,
    ``d2_rate``). Steps are chosen so that the dominant eigenvalue is real (a clean linear tail).

    python experiments/heterogeneity_bias.py --out docs/results/heterogeneity_bias   # 116 s wall, 15.5 s CPU
    python experiments/heterogeneity_bias.py --quick --out /tmp/hb                   # 3 step sizes, 3 draws

Full run: 5 data draws (seeds 0–4), timed at load 12–15 on the 2-core machine; the quick run
(3 draws, the test's) took 82 s wall and 12 s of CPU at load 9–15. Both are dominated by
compiling (one program per order in (a), per method in (b), each vmapped over the draws). The
draws are vmapped by hand rather than through ``rj.sweep``, whose seed axis keeps one data
partition (``data.seed`` pinned) while here each seed is new data; the program is the same
(``vmap`` over the seeds' node data and states, and over the learning rates, of ``exp.step``).

Writes DIR/heterogeneity_bias.png (two panels), DIR/bias.csv (one row per order and α: measured
bias and closed form, mean/min/max over draws, largest relative gap), DIR/exact.csv (one row per
method of (b): spectral rate, fitted rate over draws, final error) and DIR/heterogeneity_bias.json
(every number and curve); ``TABLES`` renders docs/results.md's two tables from the CSVs.
Measured (full run, 5 draws): D-SGD's bias equals the closed form to < 5.5e-5 relative at every
α (1e-3 … 0.5), order and draw, ∝ α² for α ≪ 1 − λ₂ = 0.051 and saturating above; the exact
methods end within 1.5e-6 of x* (float32) with tail rates within 1.3e-3 relative of theory;
D-SGD ATC α = 0.2 stalls at its closed-form ‖X∞ − 1x*ᵀ‖_F (0.74–1.52 over the draws).
"""

from __future__ import annotations

import argparse
import json
import math
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

DIM, M = 5, 20  # model dimension; examples per node (one full batch)
RING_N = 16  # (a): ring
REG = {"num_nodes": 8, "topology.name": "random_regular", "topology.k": 3, "topology.seed": 6}  # (b)
EXACT = (  # (b): label, algorithm, order, step — each with a real dominant eigenvalue
    ("DIGing CTA", "diging", "cta", 0.15),
    ("DIGing ATC", "diging", "atc", 0.2),
    ("exact diffusion", "exact_diffusion", None, 0.5),
    ("D²", "d2", None, 0.7),
)
DSGD_REF = ("D-SGD ATC", "dsgd", "atc", 0.2)  # the biased reference in panel (b)
FIT_WINDOW = (1e-5, 1e-2)  # absolute ‖X − 1x*ᵀ‖_F range of the fitted linear tail
TARGET = 1e-8  # (b) run until theory predicts this error, not far beyond
TRANSIENT = 1e-9  # (a) run until dsgd_rate^t is below this


def config(n: int, algorithm: str, lr: float, seed: int, order: str | None = None, **over):
    c = rj.config.base_config()
    fields = {
        "seed": seed,
        "num_nodes": n,
        "topology.name": "ring",
        "data.name": "linear",
        "data.whiten": True,
        "data.dim": DIM,
        "data.num_examples": n * M,
        "data.heterogeneity": 1.0,
        "data.batch_size": M,
        "model.name": "linear",
        "optimizer.name": "sgd",
        "optimizer.learning_rate": lr,
        "num_rounds": 1,
        "eval_every": 1,
        "checkpoint_every": 0,
        "progress": False,
        "plots": False,
        "algorithm.name": algorithm,
        **over,
    }
    if order is not None:
        fields["algorithm.order"] = order
    for k, v in fields.items():
        rj.config.set_field(c, k, v)
    return c


def problem(exp):
    """Node optima b [n, d], x* = mean(b) and W (float64) of a built linear experiment."""
    n = exp.topology.n
    B = np.asarray(exp.dataset.info["node_targets"], np.float64).reshape(n, DIM)
    return B, B.mean(0), np.asarray(exp.topology.mixing_matrix(), np.float64)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def run_seeds(exps, lrs, rounds: int, trajectory: bool = False) -> np.ndarray:
    """Every node's model for each data draw (one built experiment per seed) and learning rate.

    One jitted program: ``vmap`` over the seeds' node data and initial states (arguments of the
    step, never constants: DESIGN.md) and over the learning rates (a hyper-parameter of the step,
    as in ``rj.sweep``) of a ``lax.scan`` over rounds of ``exps[0].step``. Returns the final
    models ``[S, L, n, d]``, or with ``trajectory`` every round's ``[S, L, rounds + 1, n, d]``
    (round 0 first), float64."""
    exp = exps[0]
    states, datas = _stack([e.init_state() for e in exps]), _stack([e.node_data for e in exps])
    lrs = jnp.asarray(lrs, jnp.float32)
    hps = {k: jnp.broadcast_to(v, lrs.shape) for k, v in exp.hp_values().items()}
    hps["optimizer.learning_rate"] = lrs

    def one(state, data, hp):
        def body(s, _):
            s, _ = exp.step(s, data, hp)
            return s, (exp.models(s) if trajectory else None)

        s, xs = jax.lax.scan(body, state, None, length=rounds)
        return jnp.concatenate([exp.models(state)[None], xs]) if trajectory else exp.models(s)

    over_lr = jax.vmap(one, in_axes=(None, None, 0))
    return np.asarray(jax.jit(jax.vmap(over_lr, in_axes=(0, 0, None)))(states, datas, hps), np.float64)


def fit_rate(err: np.ndarray):
    """Per-round linear rate from the slope of log(err) over the window FIT_WINDOW (None if < 10 points)."""
    t = np.flatnonzero((err > FIT_WINDOW[0]) & (err < FIT_WINDOW[1]))
    if t.size < 10:
        return None, None
    slope = np.polyfit(t, np.log(err[t]), 1)[0]
    return float(np.exp(slope)), [int(t[0]), int(t[-1])]


def theory_rate(W, name: str, order: str | None, lr: float) -> float:
    if name == "diging":
        return rj.theory.diging_rate(W, lr, 1.0, order)
    if name == "exact_diffusion":
        return rj.theory.exact_diffusion_rate(W, lr, 1.0)
    if name == "d2":
        return rj.theory.d2_rate(W, lr, 1.0)
    return rj.theory.dsgd_rate(W, lr, 1.0, order)


# --------------------------------------------------------------------------- (a)
def run_bias(seeds, lrs, fine):
    out = {
        "alphas": [float(a) for a in lrs],
        "fine_alphas": [float(a) for a in fine],
        "seeds": list(seeds),
        "orders": {},
        "closed_form_fine": {},
    }
    for order in ("cta", "atc"):
        exps = [rj.build(config(RING_N, "dsgd", float(lrs[0]), seed, order)) for seed in seeds]
        W = problem(exps[0])[2]
        rate = max(rj.theory.dsgd_rate(W, a, 1.0, order) for a in lrs)
        rounds = math.ceil(math.log(TRANSIENT) / math.log(rate))
        xs = run_seeds(exps, lrs, rounds)  # [S, L, n, d]
        rows, fine_curves = [], []
        for seed, exp, xs_seed in zip(seeds, exps, xs):
            B, x_star, W = problem(exp)
            for a, x in zip(lrs, xs_seed):
                th = rj.theory.dsgd_consensus_bias(W, B, float(a), order)
                meas = float(np.mean(np.sum((x - x_star) ** 2, axis=1)))
                rows.append(
                    {
                        "seed": seed,
                        "alpha": float(a),
                        "rounds": rounds,
                        "measured": meas,
                        "closed_form": th["distance_to_optimum"],
                        "rel_error": abs(meas - th["distance_to_optimum"]) / th["distance_to_optimum"],
                        "max_abs_to_fixed_point": float(np.abs(x - th["fixed_point"]).max()),
                        "consensus_measured": float(np.mean(np.sum((x - x.mean(0)) ** 2, axis=1))),
                        "consensus_closed_form": th["consensus_error"],
                        "mean_error": float(np.linalg.norm(x.mean(0) - x_star)),
                        "heterogeneity": float(np.mean(np.sum((B - x_star) ** 2, axis=1))),
                    }
                )
            fine_curves.append(
                [rj.theory.dsgd_consensus_bias(W, B, float(a), order)["distance_to_optimum"] for a in fine]
            )
        out["orders"][order] = rows
        out["closed_form_fine"][order] = fine_curves
    lam = np.sort(np.linalg.eigvalsh(W))
    out["ring"] = {"n": RING_N, "lambda_2": float(lam[-2]), "lambda_min": float(lam[0])}
    return out


# --------------------------------------------------------------------------- (b)
def run_exact(seeds):
    out = []
    for label, name, order, lr in EXACT + (DSGD_REF,):
        exps = [
            rj.build(
                config(REG["num_nodes"], name, lr, seed, order, **{k: v for k, v in REG.items() if k != "num_nodes"})
            )
            for seed in seeds
        ]
        W = problem(exps[0])[2]
        rate_th = theory_rate(W, name, order, lr)
        if name == "dsgd":
            rounds = max(m["rounds"] for m in out)  # as long as the longest exact method
        else:
            rounds = math.ceil(math.log(TARGET) / math.log(rate_th)) + 10
        xs = run_seeds(exps, [lr], rounds, trajectory=True)[:, 0]  # [S, T+1, n, d]
        per_seed = []
        for seed, exp, traj in zip(seeds, exps, xs):
            B, x_star, W = problem(exp)
            err = np.linalg.norm(traj - x_star, axis=(1, 2))
            rec = {
                "seed": seed,
                "rounds": rounds,
                "error": err,
                "final_max_abs": float(np.abs(traj[-1] - x_star).max()),
            }
            if name == "dsgd":
                fixed = rj.theory.dsgd_fixed_point(W, B, lr, order)
                rec["floor_closed_form"] = float(np.linalg.norm(fixed - x_star))
                rec["max_abs_to_fixed_point"] = float(np.abs(traj[-1] - fixed).max())
            else:
                rec["rate_measured"], rec["fit_rounds"] = fit_rate(err)
            per_seed.append(rec)
        lam = np.sort(np.linalg.eigvalsh(W))
        out.append(
            {
                "label": label,
                "algorithm": name,
                "order": order,
                "step": lr,
                "rate_theory": rate_th,
                "rounds": rounds,
                "lambda_min": float(lam[0]),
                "lambda_2": float(lam[-2]),
                "seeds": per_seed,
            }
        )
    return out


# --------------------------------------------------------------------------- output
def summarize(bias, exact):
    s = {"bias": {}, "exact": {}}
    for order, rows in bias["orders"].items():
        s["bias"][order] = {
            "max_rel_error": max(r["rel_error"] for r in rows),
            "per_alpha": [
                {
                    "alpha": a,
                    "measured": [r["measured"] for r in rows if r["alpha"] == a],
                    "closed_form": [r["closed_form"] for r in rows if r["alpha"] == a],
                }
                for a in bias["alphas"]
            ],
        }
    for m in exact:
        if m["algorithm"] == "dsgd":
            s["exact"][m["label"]] = {
                "final_error_fro": [float(r["error"][-1]) for r in m["seeds"]],
                "floor_closed_form": [r["floor_closed_form"] for r in m["seeds"]],
            }
            continue
        rates = [r["rate_measured"] for r in m["seeds"]]
        s["exact"][m["label"]] = {
            "step": m["step"],
            "rate_theory": m["rate_theory"],
            "rate_measured": rates,
            "max_rel_error": max(abs(r - m["rate_theory"]) / m["rate_theory"] for r in rates),
            "final_max_abs_error": max(r["final_max_abs"] for r in m["seeds"]),
        }
    return s


# --------------------------------------------------------------------------- output: result files
def write_csvs(bias, exact, out: Path) -> None:
    """The result files docs/results.md's tables are rendered from (``TABLES``).

    ``bias.csv``: one row per (order, α) of (a): the measured bias (1/n)Σ‖xᵢ − x*‖² and its
    closed form, mean/min/max over the data draws, and the largest relative gap of a draw.
    ``exact.csv``: one row per method of (b): the spectral rate, the fitted tail rate over draws,
    the final max |xᵢ − x*|, and for the D-SGD reference its final ‖X − 1x*ᵀ‖_F and closed form."""
    import pandas as pd

    rows = []
    for order, rs in bias["orders"].items():
        for a in bias["alphas"]:
            sel = [r for r in rs if r["alpha"] == a]
            m, c = np.array([r["measured"] for r in sel]), np.array([r["closed_form"] for r in sel])
            rows.append(
                {
                    "order": order,
                    "alpha": a,
                    "rounds": sel[0]["rounds"],
                    "measured_mean": m.mean(),
                    "measured_min": m.min(),
                    "measured_max": m.max(),
                    "closed_form_mean": c.mean(),
                    "closed_form_min": c.min(),
                    "closed_form_max": c.max(),
                    "max_rel_error": max(r["rel_error"] for r in sel),
                    "max_abs_to_fixed_point": max(r["max_abs_to_fixed_point"] for r in sel),
                    "n": bias["ring"]["n"],
                    "lambda_2": bias["ring"]["lambda_2"],
                    "seeds": len(sel),
                }
            )
    pd.DataFrame(rows).to_csv(out / "bias.csv", index=False)

    rows = []
    for m in exact:
        ss = m["seeds"]
        row = {
            "method": m["label"],
            "algorithm": m["algorithm"],
            "order": m["order"] or "",
            "step": m["step"],
            "rounds": m["rounds"],
            "rate_theory": m["rate_theory"],
            "lambda_2": m["lambda_2"],
            "lambda_min": m["lambda_min"],
            "final_max_abs_error": max(r["final_max_abs"] for r in ss),
            "seeds": len(ss),
        }
        if m["algorithm"] == "dsgd":
            fe, fl = np.array([r["error"][-1] for r in ss]), np.array([r["floor_closed_form"] for r in ss])
            row.update(
                {f"final_error_fro_{k}": f(fe) for k, f in (("mean", np.mean), ("min", np.min), ("max", np.max))}
            )
            row.update(
                {f"floor_closed_form_{k}": f(fl) for k, f in (("mean", np.mean), ("min", np.min), ("max", np.max))}
            )
            row["max_rel_gap_to_floor"] = float(np.max(np.abs(fe - fl) / fl))
        else:
            rm = np.array([r["rate_measured"] for r in ss], np.float64)
            row.update({f"rate_measured_{k}": f(rm) for k, f in (("mean", np.mean), ("min", np.min), ("max", np.max))})
            row["max_rel_error"] = float(np.max(np.abs(rm - m["rate_theory"]) / m["rate_theory"]))
        rows.append(row)
    pd.DataFrame(rows).to_csv(out / "exact.csv", index=False)


# --------------------------------------------------------------------------- tables (docs/results.md)
def _csv(folder, name):
    import pandas as pd

    return pd.read_csv(Path(folder) / name)


def table_bias(folder) -> str:
    """(a) per order and α: measured bias against the closed form (mean [min, max] over draws)."""
    rows = []
    for _, r in _csv(folder, "bias.csv").iterrows():
        rows.append(
            [
                r["order"].upper(),
                f"{r['alpha']:g}",
                fmt_band(r["measured_mean"], r["measured_min"], r["measured_max"]),
                fmt_band(r["closed_form_mean"], r["closed_form_min"], r["closed_form_max"]),
                f"{r['max_rel_error']:.1e}",
                int(r["seeds"]),
            ]
        )
    header = ["order", "α", "(1/n)Σ‖xᵢ − x*‖², measured", "closed form", "max rel. gap (any draw)", "seeds"]
    return markdown_table(header, rows)


def table_exact(folder) -> str:
    """(b) per method: spectral rate against the fitted tail rate (mean [min, max] over draws)."""
    rows = []
    for _, r in _csv(folder, "exact.csv").iterrows():
        if r["algorithm"] == "dsgd":
            fe = fmt_band(r["final_error_fro_mean"], r["final_error_fro_min"], r["final_error_fro_max"])
            fl = fmt_band(r["floor_closed_form_mean"], r["floor_closed_form_min"], r["floor_closed_form_max"])
            rows.append(
                [
                    f"{r['method']} (biased)",
                    f"{r['step']:g}",
                    "–",
                    "–",
                    f"stalls at ‖X − 1x*ᵀ‖_F = {fe}; closed form {fl}",
                ]
                + [int(r["seeds"])]
            )
            continue
        rows.append(
            [
                r["method"],
                f"{r['step']:g}",
                f"{r['rate_theory']:.5f}",
                "{:.5f} [{:.5f}, {:.5f}]".format(*(r[f"rate_measured_{k}"] for k in ("mean", "min", "max"))),
                f"final max abs(xᵢ − x*) {fmt(r['final_max_abs_error'], 2)}",
                int(r["seeds"]),
            ]
        )
    header = ["method", "α", "rate, iteration-matrix spectrum", "rate measured", "end point", "seeds"]
    return markdown_table(header, rows)


TABLES = {"bias": table_bias, "exact": table_exact}


def plot(bias, exact, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.6))
    alphas = np.asarray(bias["alphas"])
    fine = np.asarray(bias["fine_alphas"])
    for i, (order, rows) in enumerate(bias["orders"].items()):
        c = f"C{i}"
        meas = np.array([[r["measured"] for r in rows if r["alpha"] == a] for a in alphas])  # [A, S]
        curves = np.asarray(bias["closed_form_fine"][order])  # [S, F]: closed form per data draw
        ax.fill_between(
            fine,
            curves.min(0),
            curves.max(0),
            color=c,
            alpha=0.15,
            label=f"{order.upper()} closed form, min–max over {len(bias['seeds'])} data draws",
        )
        ax.plot(fine, curves.mean(0), color=c, lw=1.2, label=f"{order.upper()} closed form (mean over draws)")
        mid = meas.mean(1)
        ax.errorbar(
            alphas,
            mid,
            yerr=[mid - meas.min(1), meas.max(1) - mid],
            fmt="o",
            color=c,
            ms=6,
            mfc="none",
            capsize=3,
            label=f"{order.upper()} measured (mean, min–max bars)",
        )
    ref = bias["orders"]["cta"]
    a0 = alphas.min()
    y0 = np.mean([r["closed_form"] for r in ref if r["alpha"] == a0])
    ax.plot(fine, y0 * (fine / a0) ** 2, "k:", lw=1, label="slope 2 (bias ∝ α²)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="step size α",
        ylabel="(1/n) Σᵢ ‖xᵢ − x*‖²  (final models)",
        title=f"(a) D-SGD consensus bias, ring n = {RING_N}, heterogeneity 1",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5)

    for i, m in enumerate(exact):
        c = f"C{i}"
        errs = np.array([r["error"] for r in m["seeds"]])  # [S, T+1]
        t = np.arange(errs.shape[1])
        lo, hi, med = errs.min(0), errs.max(0), np.exp(np.log(errs).mean(0))  # geometric mean
        if m["algorithm"] == "dsgd":
            bx.plot(t, med, color=c, lw=2.5, alpha=0.6, label=f"{m['label']} α={m['step']:g}: measured")
            fl = np.mean([r["floor_closed_form"] for r in m["seeds"]])
            bx.axhline(fl, color=c, ls="--", lw=1, label=f"{m['label']}: closed-form bias ‖X∞ − 1x*ᵀ‖_F")
            continue
        rates = [r["rate_measured"] for r in m["seeds"]]
        bx.fill_between(t, lo, hi, color=c, alpha=0.2)
        bx.plot(
            t,
            med,
            color=c,
            lw=2.5,
            alpha=0.6,
            label=f"{m['label']} α={m['step']:g}: measured, rate {np.mean(rates):.4f}",
        )
        t_ref = m["seeds"][0]["fit_rounds"][1]
        line = med[t_ref] * m["rate_theory"] ** (t - t_ref)
        bx.plot(
            t, line, color=c, ls="--", lw=1, zorder=5, label=f"{m['label']}: theory slope, rate {m['rate_theory']:.4f}"
        )
    bx.axhspan(*FIT_WINDOW, color="grey", alpha=0.08, label="fit window")
    bx.set(
        yscale="log",
        ylim=(1e-9, 30),
        xlabel="round t",
        ylabel="‖X_t − 1x*ᵀ‖_F  (geometric mean, band min–max over draws)",
        title=f"(b) exact methods reach x* (3-regular, n = 8), {len(exact[0]['seeds'])} data draws",
    )
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle("Whitened least squares fᵢ = ½‖x − bᵢ‖²: measured (markers / wide lines) vs closed forms (thin lines)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [float(f"{v:.6g}") for v in x.tolist()]
    return x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/heterogeneity_bias", help="output directory")
    p.add_argument("--quick", action="store_true", help="fewer step sizes (tests)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    seeds = (0, 1, 2) if args.quick else (0, 1, 2, 3, 4)
    lrs = (0.02, 0.1, 0.5) if args.quick else (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    bias = run_bias(seeds, lrs, np.geomspace(min(lrs), max(lrs), 60))
    exact = run_exact(seeds)
    summary = summarize(bias, exact)
    summary["seconds"] = time.perf_counter() - t0
    summary["quick"] = args.quick
    base = os.path.join(args.out, "heterogeneity_bias")
    with open(base + ".json", "w") as f:
        json.dump(_jsonable({"summary": summary, "bias": bias, "exact": exact}), f)
    write_csvs(bias, exact, Path(args.out))
    plot(bias, exact, base + ".png")
    for name, table in TABLES.items():
        print(f"{name}:\n{table(args.out)}\n")
    print(f"wrote {args.out}: heterogeneity_bias.json, .png, bias.csv, exact.csv ({time.perf_counter() - t0:.1f} s)")
    return _jsonable({"summary": summary, "bias": bias, "exact": exact})


if __name__ == "__main__":
    main()
