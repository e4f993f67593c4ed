"""Consensus rate of pure gossip: measured decay beside the closed-form rho.

Runs ``x <- W(t) x`` (one jitted ``lax.scan`` per topology, float64) from a
random start and records ``log10`` of the consensus distance
``(1/n) sum_i ||x_i - xbar||^2`` relative to the start. Theory: the distance
contracts by ``rho^2`` per round asymptotically (Xiao & Boyd 2004; Koloskova
et al. 2020), so the curve's tail has slope ``2 log10(rho)``. One-peer
exponential graphs (Ying et al. 2021) reach the exact average after
``log2 n`` rounds when ``n`` is a power of 2, and only geometrically otherwise.

    python experiments/consensus_rate.py --out runs/consensus_rate   # ~20 s on 2 CPU cores
    python experiments/consensus_rate.py --quick                     # a few seconds

Writes ``DIR/consensus_rate.json`` (per topology: n, rho_theory,
rho_measured from the tail fit, the curve) and ``DIR/consensus_rate.png``.
Expected: measured rho within 0.1% of theory for every static family;
one-peer n = 16, 64 exact (relative distance < 1e-25) at round 4, 6; n = 12 not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from redeem_jax import gossip, theory, topology  # noqa: E402

DECADES = 24  # run until theory predicts this many decades of decay
FLOOR = 1e-26  # relative distance below which float64 roundoff dominates (fits stop)
EXACT = 1e-25  # "exact average" threshold for one-peer graphs


def _cases(quick: bool):
    if quick:
        return [
            ("ring", 16),
            ("torus", 16),
            ("hypercube", 16),
            ("exponential", 16),
            ("one_peer_exponential", 16),
            ("one_peer_exponential", 12),
        ]
    return [
        ("ring", 16),
        ("ring", 32),
        ("ring", 64),
        ("torus", 16),
        ("torus", 64),
        ("hypercube", 16),
        ("hypercube", 64),
        ("exponential", 16),
        ("exponential", 64),
        ("one_peer_exponential", 16),
        ("one_peer_exponential", 64),
        ("one_peer_exponential", 12),
    ]


def _rounds(topo, rho_th: float, cap: int) -> int:
    if rho_th <= 1e-12:
        return 4 * topo.period
    t = math.ceil(DECADES / (-2 * math.log10(rho_th)))
    t = max(t, 8 * topo.period)
    return int(min(cap, math.ceil(t / topo.period) * topo.period))


def run_gossip(topo, rounds: int, d: int = 4, seed: int = 0) -> np.ndarray:
    """Relative consensus distance after 0..rounds gossip steps (float64, one jitted scan)."""
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(seed).normal(size=(topo.n, d)), jnp.float64)

        def step(x, r):
            y = gossip.mix(topo, x, r)
            return y, gossip.consensus_distance(y)

        @jax.jit
        def go(x):
            _, dist = jax.lax.scan(step, x, jnp.arange(rounds))
            return dist

        dist = np.asarray(go(x0))
        d0 = float(gossip.consensus_distance(x0))
    return np.concatenate([[1.0], dist / d0])


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


def label(name, topo):
    if name == "torus":
        return f"torus {topo.params['rows']}x{topo.params['cols']}"
    return f"{name} n={topo.n}"


def run(quick: bool = False):
    cap = 600 if quick else 6000
    results = []
    for name, n in _cases(quick):
        topo = topology.get(name, n)
        rho_th = float(theory.rho(topo))
        rounds = _rounds(topo, rho_th, cap)
        t0 = time.perf_counter()
        rel = run_gossip(topo, rounds)
        rho_m, t_a, t_b = fit_tail(rel, topo.period)
        # Only one-peer graphs average exactly; static ones merely decay past EXACT.
        exact = np.flatnonzero(rel < EXACT) if name == "one_peer_exponential" else np.zeros(0)
        results.append(
            dict(
                family=name,
                label=label(name, topo),
                n=topo.n,
                period=topo.period,
                rounds=rounds,
                rho_theory=rho_th,
                rho_measured=rho_m,
                fit_rounds=[t_a, t_b],
                rel_error=(abs(rho_m - rho_th) / rho_th) if (rho_m is not None and rho_th > 0) else None,
                exact_after_rounds=int(exact[0]) if exact.size else None,
                seconds=time.perf_counter() - t0,
                log10_distance=[round(float(v), 4) for v in np.log10(np.maximum(rel, 1e-300))],
            )
        )
    return results


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["ring", "torus", "hypercube", "exponential", "one_peer_exponential"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, fam in zip(axes.flat, panels):
        for i, r in enumerate([r for r in results if r["family"] == fam]):
            y = np.asarray(r["log10_distance"])
            c = f"C{i}"
            if r["rho_measured"] is not None:
                what = f" rho={r['rho_measured']:.4f}"
            elif r["exact_after_rounds"] is not None:
                what = f", exact at t={r['exact_after_rounds']}"
            else:
                what = ""
            # Measured: wide and translucent, so the theory line stays visible on top.
            ax.plot(np.arange(y.size), y, color=c, lw=4, alpha=0.45, label=f"{r['label']}: measured{what}")
            if r["rho_theory"] > 0 and r["fit_rounds"][1] is not None:
                t_ref = r["fit_rounds"][1]
                t = np.arange(y.size)
                line = y[t_ref] + 2 * (t - t_ref) * math.log10(r["rho_theory"])
                ax.plot(
                    t,
                    line,
                    color="k",
                    ls="--",
                    lw=0.9,
                    zorder=5,
                    label=f"theory 2t·log10(rho), rho={r['rho_theory']:.4f}",
                )
        ax.set_title(fam.replace("_", " "))
        ax.set_xlabel("gossip round t")
        ax.set_ylabel("log10 consensus distance / initial")
        ax.set_ylim(-32, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    ax = axes.flat[5]
    for i, r in enumerate([r for r in results if r["family"] in ("one_peer_exponential", "exponential")]):
        y = np.asarray(r["log10_distance"])[:25]
        ls = "-" if r["family"] == "one_peer_exponential" else ":"
        ax.plot(
            np.arange(y.size),
            y,
            ls,
            marker="o",
            ms=3,
            color=f"C{i}",
            label=r["label"].replace("one_peer_exponential", "one-peer"),
        )
        if r["family"] == "one_peer_exponential" and r["n"] & (r["n"] - 1) == 0:
            ax.axvline(theory.one_peer_exact_rounds(r["n"]), color=f"C{i}", lw=0.8, alpha=0.6)
    ax.set_title("exact averaging: one-peer exp. (vertical: log2 n)")
    ax.set_xlabel("gossip round t")
    ax.set_ylabel("log10 consensus distance / initial")
    ax.set_ylim(-36, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("Pure gossip from a random start (float64): measured vs closed-form rate rho^(2t)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/consensus_rate", help="output directory")
    p.add_argument("--quick", action="store_true", help="fewer topologies and rounds (tests)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    results = run(args.quick)
    jpath = os.path.join(args.out, "consensus_rate.json")
    ppath = os.path.join(args.out, "consensus_rate.png")
    with open(jpath, "w") as f:
        json.dump(dict(quick=args.quick, results=results), f)
    plot(results, ppath)
    print(f"{'topology':<28}{'rounds':>7}{'rho theory':>12}{'rho measured':>14}{'rel err':>10}{'exact at':>10}")
    for r in results:
        rm = "-" if r["rho_measured"] is None else f"{r['rho_measured']:.6f}"
        re_ = "-" if r["rel_error"] is None else f"{r['rel_error']:.1e}"
        ex = "-" if r["exact_after_rounds"] is None else str(r["exact_after_rounds"])
        print(f"{r['label']:<28}{r['rounds']:>7}{r['rho_theory']:>12.6f}{rm:>14}{re_:>10}{ex:>10}")
    print(f"wrote {jpath} and {ppath} ({time.perf_counter() - t0:.1f} s)")
    return results


if __name__ == "__main__":
    main()
