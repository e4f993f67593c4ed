"""Consensus rate of pure gossip: measured decay beside the closed-form spectral rate rho.

Runs ``x <- W(t) x`` (float64) from random starts and records the relative consensus distance
``(1/n) sum_i ||x_i - xbar||^2`` / its start. Theory: the distance contracts by ``rho^2`` per
round asymptotically, ``rho`` the second largest eigenvalue magnitude of W (Xiao & Boyd 2004;
Koloskova et al. 2020), so the tail of ``log10`` distance has slope ``2 log10(rho)``.
``rho`` is ``rj.theory.rho``: the closed form of the ring, torus, hypercube and exponential
graph (and 0 per round for one-peer exponential graphs with n a power of 2, which average
exactly after ``log2 n`` rounds, Ying et al. 2021), the eigenvalues of the drawn W
(``Topology.effective_rho``, NumPy) for random 4-regular and Erdős–Rényi graphs.

The seeds are the initial vectors (``x_0 ~ N(0, I)``, ``[n, 4]``; 5 per graph, vmapped: one
jitted ``lax.scan`` of ``rj.gossip.mix`` per graph) and, for the random families, the graph
draws (5 different graphs: the first topology seeds from 0 that give distinct connected graphs,
each with its own theory rho). The measured rho of each
(graph, draw, start) is fitted on the last half of the rounds above the float64 roundoff floor.

    python experiments/consensus_rate.py --out docs/results/consensus_rate   # 214 s wall, 17 s CPU
    python experiments/consensus_rate.py --quick --out /tmp/cr                # the test's run: 8 s CPU

Timed on the 2-core machine at load about 20 (other jobs): the wall time is mostly waiting for a
core; each of the 32 graphs compiles one small program.

Writes in DIR: ``rates.csv`` (one row per graph, draw and initial vector: n, rounds, rho
theory, rho measured, fitted rounds, relative error, round of exact averaging),
``consensus_rate.png`` (decay curves per family with the theory slope; measured against theory
for every run; exact averaging of one-peer graphs) and ``consensus_rate.json`` (run time).
``TABLES["rates"]`` renders docs/results.md's table from ``rates.csv``.
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
from _results import fmt, markdown_table  # noqa: E402

from redeem_jax import gossip, theory, topology  # noqa: E402

DECADES = 24  # run until theory predicts this many decades of decay
FLOOR = 1e-26  # relative distance below which float64 roundoff dominates (fits stop)
# "Exact average" (one-peer graphs): at the float64 floor. Runs are sized so that geometric decay
# reaches about 1e-24 at the end (DECADES), so only exact averaging gets below this.
EXACT = 1e-28
DIM = 4  # columns of x: independent gossip problems sharing W
RANDOM = {  # random families: how to draw one graph of n nodes with topology seed s
    "random_regular": lambda n, s: topology.random_regular(n, 4, seed=s),
    "erdos_renyi": lambda n, s: topology.erdos_renyi(n, 0.25 if n <= 16 else 0.1, seed=s),
}
PANELS = (
    "ring",
    "torus",
    "hypercube",
    "exponential",
    "one_peer_exponential",
    "random_regular",
    "erdos_renyi",
)


def _cases(quick: bool):
    """(family, n, graph draw or None) of every graph run."""
    if quick:
        static = [("ring", 16), ("torus", 16), ("hypercube", 16), ("exponential", 16)]
        static += [("one_peer_exponential", 16), ("one_peer_exponential", 12)]
        return [(f, n, None) for f, n in static] + [
            ("random_regular", 16, d) for d in _distinct_seeds("random_regular", 16, 2)
        ]
    static = [("ring", 16), ("ring", 32), ("ring", 64), ("torus", 16), ("torus", 64)]
    static += [("hypercube", 16), ("hypercube", 64), ("exponential", 16), ("exponential", 64)]
    static += [("one_peer_exponential", 16), ("one_peer_exponential", 64), ("one_peer_exponential", 12)]
    draws = [(f, n, d) for f in RANDOM for n in (16, 64) for d in _distinct_seeds(f, n, 5)]
    return [(f, n, None) for f, n in static] + draws


def _distinct_seeds(family: str, n: int, k: int) -> list[int]:
    """The topology seeds of ``k`` different graphs: a draw that is rejected (not connected)
    moves on to the next seed, so seeds s and s + 1 can give one graph; keep the seed used."""
    seeds, s = [], 0
    while len(seeds) < k:
        used = int(RANDOM[family](n, s).params.get("seed", s))
        seeds.append(used)
        s = used + 1
    return seeds


def _graph(family: str, n: int, draw):
    return topology.get(family, n) if draw is None else RANDOM[family](n, draw)


def _rounds(topo, rho_th: float, cap: int) -> int:
    if rho_th <= 1e-12:
        return 4 * topo.period
    t = math.ceil(DECADES / (-2 * math.log10(rho_th)))
    t = max(t, 8 * topo.period)
    return int(min(cap, math.ceil(t / topo.period) * topo.period))


def run_gossip(topo, rounds: int, seeds, d: int = DIM) -> np.ndarray:
    """Relative consensus distance after 0..rounds gossip steps, one row per initial vector
    (``x_0 ~ N(0, I)`` from NumPy seed s): ``[S, rounds + 1]``, float64, one jitted scan vmapped
    over the starts."""
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.stack([np.random.default_rng(s).normal(size=(topo.n, d)) for s in seeds]), jnp.float64)

        def one(x):
            def step(x, r):
                y = gossip.mix(topo, x, r)
                return y, gossip.consensus_distance(y)

            _, dist = jax.lax.scan(step, x, jnp.arange(rounds))
            return jnp.concatenate([jnp.ones(1), dist / gossip.consensus_distance(x)])

        return np.asarray(jax.jit(jax.vmap(one))(x0))


def fit_tail(rel: np.ndarray, period: int):
    """Per-round rho from the slope of log10 distance over the tail above the roundoff floor.

    The first rounds decay faster (energy in fast modes), so only the last
    half of the usable rounds is fitted; time-varying graphs are sampled once
    per period so the within-period sawtooth does not bias the slope.
    Returns (rho_measured, first fitted round, last fitted round) or Nones.
    """
    t = np.arange(rel.size)
    ok = (rel > FLOOR) & (t % period == 0)
    ts = t[ok]
    if ts.size < 4:
        return None, None, None
    ts = ts[ts.size // 2 :]
    slope = np.polyfit(ts, np.log10(rel[ts]), 1)[0]
    return float(10 ** (slope / 2)), int(ts[0]), int(ts[-1])


def label(family: str, topo, draw=None) -> str:
    name = f"torus {topo.params['rows']}x{topo.params['cols']}" if family == "torus" else f"{family} n={topo.n}"
    return name if draw is None else f"{name}, draw {draw}"


def run(quick: bool = False):
    """Every graph of :func:`_cases`: its theory rho, the decay curves of every start and the
    fitted rho per start. Returns one dict per graph (curves as ``[S, T+1]`` arrays)."""
    cap = 600 if quick else 6000
    seeds = (0, 1) if quick else (0, 1, 2, 3, 4)
    results = []
    for family, n, draw in _cases(quick):
        topo = _graph(family, n, draw)
        rho_th = float(theory.rho(topo))
        rounds = _rounds(topo, rho_th, cap)
        t0 = time.perf_counter()
        rel = run_gossip(topo, rounds, seeds)
        fits = [fit_tail(r, topo.period) for r in rel]
        # Only one-peer graphs average exactly; static ones merely decay past EXACT.
        exact = []
        for r in rel:
            hit = np.flatnonzero(r < EXACT) if family == "one_peer_exponential" else np.zeros(0)
            exact.append(int(hit[0]) if hit.size else None)
        results.append(
            dict(
                family=family,
                label=label(family, topo, draw),
                n=topo.n,
                draw=draw,
                period=topo.period,
                rounds=rounds,
                rho_theory=rho_th,
                seeds=list(seeds),
                rho_measured=[f[0] for f in fits],
                fit_rounds=[[f[1], f[2]] for f in fits],
                exact_after_rounds=exact,
                seconds=time.perf_counter() - t0,
                curves=rel,
            )
        )
    return results


def write_csv(results, out: Path) -> None:
    """``rates.csv``: one row per (graph, draw, initial vector)."""
    import pandas as pd

    rows = []
    for r in results:
        for k, s in enumerate(r["seeds"]):
            m = r["rho_measured"][k]
            rows.append(
                dict(
                    family=r["family"],
                    n=r["n"],
                    draw=-1 if r["draw"] is None else r["draw"],
                    seed=s,
                    rounds=r["rounds"],
                    rho_theory=r["rho_theory"],
                    rho_measured=float("nan") if m is None else m,
                    fit_first=r["fit_rounds"][k][0],
                    fit_last=r["fit_rounds"][k][1],
                    rel_error=abs(m - r["rho_theory"]) / r["rho_theory"]
                    if m is not None and r["rho_theory"] > 0
                    else float("nan"),
                    exact_after_rounds=r["exact_after_rounds"][k],
                )
            )
    pd.DataFrame(rows).to_csv(out / "rates.csv", index=False)


# --------------------------------------------------------------------------- tables (docs/results.md)
def table_rates(folder) -> str:
    """Per family and n: theory rho (over draws for random families), the measured rho over
    draws and initial vectors (mean [min, max]), the largest relative gap of one run to its own
    graph's theory, and one-peer graphs' round of exact averaging."""
    import pandas as pd

    df = pd.read_csv(Path(folder) / "rates.csv")
    rows = []
    for (fam, n), g in df.groupby(["family", "n"], sort=False):
        runs = f"{g['draw'].nunique()} × {g['seed'].nunique()}"
        th = g["rho_theory"]
        theory_cell = f"{th.iloc[0]:.6f}" if th.nunique() == 1 else f"{th.mean():.4f} [{th.min():.4f}, {th.max():.4f}]"
        meas = g["rho_measured"].dropna()
        if len(meas):
            k = 6 if th.nunique() == 1 else 4
            meas_cell = f"{meas.mean():.{k}f} [{meas.min():.{k}f}, {meas.max():.{k}f}]"
            err = fmt(g["rel_error"].max(), 2)
        else:
            meas_cell, err = "– (exact)", "–"
        ex = g["exact_after_rounds"]
        if fam != "one_peer_exponential":
            exact = "–"
        elif ex.isna().any():
            exact = f"never ({int(g['rounds'].max())} rounds)"
        else:
            exact = f"round {int(ex.max())}" if ex.nunique() == 1 else f"rounds {int(ex.min())}–{int(ex.max())}"
        rows.append([fam.replace("_", " "), int(n), runs, theory_cell, meas_cell, err, exact])
    header = ["graph", "n", "draws × initial vectors", "ρ theory", "ρ measured, mean [min, max]"]
    return markdown_table(header + ["max rel. gap to own theory", "exact average"], rows)


TABLES = {"rates": table_rates}


def _band(curves):
    """log10 curves of the starts: mean, min, max per round (roundoff below 1e-300 clipped)."""
    y = np.log10(np.maximum(np.asarray(curves), 1e-300))
    return y.mean(0), y.min(0), y.max(0)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(18, 14))
    for ax, fam in zip(axes.flat, PANELS):
        rs = [r for r in results if r["family"] == fam]
        ns = sorted({r["n"] for r in rs}, key=lambda n: [r["n"] for r in rs].index(n))
        for r in rs:
            c = f"C{ns.index(r['n'])}"
            first = r is next(q for q in rs if q["n"] == r["n"])  # one legend entry per n
            mid, lo, hi = _band(r["curves"])
            t = np.arange(mid.size)
            what = r["label"].split(", draw")[0]
            if r["draw"] is not None:
                what += f" ({len([q for q in rs if q['n'] == r['n']])} draws)"
            ax.fill_between(t, lo, hi, color=c, alpha=0.25, lw=0)
            ax.plot(t, mid, color=c, lw=3, alpha=0.45, label=f"{what}: measured" if first else None)
            fits = [f[1] for f in r["fit_rounds"] if f[1] is not None]
            if r["rho_theory"] > 0 and fits:
                t_ref = max(fits)
                line = mid[t_ref] + 2 * (t - t_ref) * math.log10(r["rho_theory"])
                th = (
                    f"theory slope 2 log10 ρ, ρ = {r['rho_theory']:.4f}"
                    if r["draw"] is None
                    else "theory slope 2 log10 ρ of each draw"
                )
                ax.plot(t, line, color="k", ls="--", lw=0.8, zorder=5, label=th if first else None)
        ax.set_title(fam.replace("_", " ") + (" (random graphs: one curve per draw)" if fam in RANDOM else ""))
        ax.set_xlabel("gossip round t")
        ax.set_ylabel("log10 (consensus distance / start)")
        ax.set_ylim(-32, 1)
        ax.grid(alpha=0.3)
        if rs:
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.text(0.5, 0.5, "not run (--quick)", ha="center", transform=ax.transAxes)

    ax = axes.flat[7]
    for i, fam in enumerate(PANELS):
        rs = [r for r in results if r["family"] == fam and r["rho_theory"] > 0]
        x = [r["rho_theory"] for r in rs for m in r["rho_measured"] if m is not None]
        y = [(m - r["rho_theory"]) / r["rho_theory"] for r in rs for m in r["rho_measured"] if m is not None]
        if x:
            ax.plot(x, y, "osD^v<>"[i], color=f"C{i}", mfc="none", ms=5, label=fam.replace("_", " "))
    ax.axhline(0, color="k", lw=1, label="theory (ρ measured = ρ)")
    ax.set(
        xlabel="ρ theory (per round)",
        ylabel="(ρ measured − ρ theory) / ρ theory",
        title="every graph, draw and initial vector",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    ax = axes.flat[8]
    rs = [r for r in results if r["family"] in ("one_peer_exponential", "exponential")]
    for i, r in enumerate(rs):
        mid = _band(r["curves"])[0][:25]
        ls = "-" if r["family"] == "one_peer_exponential" else ":"
        ax.plot(
            np.arange(mid.size),
            mid,
            ls,
            marker="o",
            ms=3,
            color=f"C{i}",
            label=r["label"].replace("one_peer_exponential", "one-peer") + " (mean over starts)",
        )
        if r["family"] == "one_peer_exponential" and r["n"] & (r["n"] - 1) == 0:
            ax.axvline(
                theory.one_peer_exact_rounds(r["n"]),
                color=f"C{i}",
                lw=0.8,
                alpha=0.6,
                label=f"theory: exact at t = log2 {r['n']}",
            )
    ax.set_title("exact averaging: one-peer exponential")
    ax.set_xlabel("gossip round t")
    ax.set_ylabel("log10 (consensus distance / start)")
    ax.set_ylim(-36, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    seeds = len(results[0]["seeds"])
    fig.suptitle(
        f"Pure gossip from {seeds} random starts per graph (float64): measured decay (line: mean of log10, "
        "band: min–max over starts) against the spectral rate ρ^(2t)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/consensus_rate", help="output directory")
    p.add_argument("--quick", action="store_true", help="fewer graphs, starts and rounds (tests)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run(args.quick)
    write_csv(results, out)
    plot(results, out / "consensus_rate.png")
    seconds = time.perf_counter() - t0
    with open(out / "consensus_rate.json", "w") as f:
        json.dump(dict(quick=args.quick, seconds=seconds, graphs=len(results)), f)
    print(table_rates(out))
    print(f"wrote {out}: rates.csv, consensus_rate.png, consensus_rate.json ({seconds:.1f} s)")
    return results


if __name__ == "__main__":
    main()
