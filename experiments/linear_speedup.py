"""Linear speedup of D-SGD: the stationary noise of ATC D-SGD on identical quadratics against its closed forms.

Lian et al. (2017, Thm. 1) and Koloskova et al. (2020, Thm. 2) bound D-SGD's error by a term
``sigma^2 / n`` (the network average sees n independent gradients: linear speedup) plus a
consensus term that depends on the graph. On identical quadratics both are exact
(``rj.theory``): with ``f_i = ½||x - b||^2``, gradients ``x_i - b + xi_i`` (``xi_i ~ N(0, sigma^2 I_d)``,
the config's ``oracle.grad_noise``) and ATC ``X+ = W(X - eta G)``,

- ``E||x_bar - b||^2 = eta sigma^2 d / (n (2 - eta))`` (:func:`rj.theory.dsgd_noise_average_variance`:
  the average is a scalar AR(1) with coefficient ``1 - eta`` and noise ``eta^2 sigma^2 / n``);
- ``(1/n) E||X - 1 x_bar^T||^2 = (eta^2 sigma^2 d / n) sum_{k>=2} lambda_k^2 / (1 - (1 - eta)^2 lambda_k^2)``
  (:func:`rj.theory.dsgd_noise_consensus_distance`: mode k of W is an AR(1) with coefficient
  ``(1 - eta) lambda_k`` and noise ``eta^2 lambda_k^2 sigma^2``).

The runs are configs (``data.name = "linear"``, ``data.whiten = True``, ``data.noise = 0``: node
i's loss is exactly ``½||x - b||^2`` with the same b everywhere; full batch; ``model.name =
"linear"``; ``optimizer.name = "sgd"``; ``oracle.grad_noise = sigma``) built by ``rj.build``. Their
compiled step is run as a sweep runs it (one program: ``vmap`` over seeds, ``lax.scan`` over
rounds) but records ``||x_bar - b||^2`` and the consensus distance at every round, which a
stationary time average needs (``rj.sweep`` records the state only at evaluations). After a
burn-in the per-round values are averaged in batches of ``batch`` rounds; a seed's value is the
mean of its batches and the standard error comes from the batch means of all seeds (batch
length >> the slowest mode's correlation time ``1 / (1 - (1 - eta)^2 lambda_2^2)``).

    python experiments/linear_speedup.py --out docs/results/linear_speedup   # 319 s wall at load ~12
    python experiments/linear_speedup.py --quick --out /tmp/speedup          # the test's run

Measured on the shared 2-core machine at load ~12: 319 s wall for the full run (27 configs, about
10 s each, mostly the compile of each n and graph); the --quick run (ring n = 4, 9 and the 3x3
torus, 2 seeds) is three compiles.

Full run: ring, torus, star and complete graphs for n in {4, 9, 16, 25, 36, 49, 64} (torus:
square n), eta = 0.1, sigma = 1, d = 4, 5 seeds (``1000 n + 0..4``) of 4000 rounds after 500 of
burn-in, batches of 200 rounds. Writes
``speedup.csv`` (one row per topology and n: closed forms, measured mean, min, max over seeds,
standard errors, seeds), ``speedup.png`` (both quantities against n, theory as lines, measured
points with min-max bars) and ``summary.json``.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402

try:  # run as a script (experiments/ on the path) or loaded by file from the tests
    import _results  # noqa: E402
except ImportError:  # pragma: no cover
    from experiments import _results  # noqa: E402

TOPOLOGIES = ("ring", "torus", "star", "complete")
FULL = dict(ns=(4, 9, 16, 25, 36, 49, 64), seeds=5, burn_in=500, rounds=4000, batch=200)
QUICK = dict(ns=(4, 9), seeds=2, burn_in=200, rounds=800, batch=100, topologies=("ring", "torus"))
ETA, SIGMA, DIM = 0.1, 1.0, 4


def config(n: int, topology: str, eta: float = ETA, sigma: float = SIGMA, dim: int = DIM, seed: int = 0):
    """ATC D-SGD on ``f_i = ½||x - b||^2`` (whitened noiseless linear regression, full batch) with
    gradient noise ``sigma``: the setting of :func:`rj.theory.dsgd_noise_average_variance`."""
    c = rj.config.base_config()
    for k, v in {
        "seed": seed,
        "num_nodes": n,
        "topology.name": topology,
        "data.name": "linear",
        "data.whiten": True,
        "data.noise": 0.0,
        "data.dim": dim,
        "data.num_examples": n * dim,
        "data.batch_size": dim,
        "model.name": "linear",
        "optimizer.name": "sgd",
        "optimizer.learning_rate": eta,
        "algorithm.order": "atc",
        "oracle.grad_noise": sigma,
        "progress": False,
        "plots": False,
        "checkpoint_every": 0,
    }.items():
        rj.config.set_field(c, k, v)
    return c


def measure(c, seeds, burn_in: int, rounds: int, batch: int, sigmas=None) -> dict:
    """Batch means ``[P, S, B]`` of ``||x_bar - b||^2`` (``avg``) and of the consensus distance
    (``cons``) over ``rounds`` rounds after ``burn_in``, for seeds ``S`` and gradient-noise values
    ``sigmas`` (``P``; default the config's), from the built experiment's own step (one compile)."""
    import jax
    import jax.numpy as jnp

    if rounds % batch:
        raise ValueError(f"rounds ({rounds}) must be a multiple of batch ({batch})")
    exp = rj.build(c)
    b = jnp.asarray(exp.dataset.optimum, jnp.float32)
    sigmas = np.atleast_1d(c.oracle.grad_noise if sigmas is None else np.asarray(sigmas, np.float32))

    def stats(state):
        x = exp.models(state)
        xbar = jnp.mean(x, 0)
        return jnp.sum((xbar - b) ** 2), rj.metrics.consensus_distance(x)

    def one(seed, sigma):
        hp = exp.hp_values() | {"oracle.grad_noise": sigma}
        state = exp.init_state(seed, hp)

        def body(s, _):
            s, _m = exp.step(s, exp.node_data, hp)
            return s, stats(s)

        state, _ = jax.lax.scan(body, state, None, length=burn_in)
        _, (avg, cons) = jax.lax.scan(body, state, None, length=rounds)
        return avg.reshape(-1, batch).mean(1), cons.reshape(-1, batch).mean(1)

    run = jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0)))
    avg, cons = jax.device_get(run(jnp.asarray(seeds, jnp.uint32), jnp.asarray(sigmas, jnp.float32)))
    return {"avg": np.asarray(avg, np.float64), "cons": np.asarray(cons, np.float64), "sigmas": sigmas, "exp": exp}


def summarize(batches: np.ndarray) -> dict:
    """Mean over all batch means, its standard error (batch means of all seeds), and the per-seed
    means' min and max. ``batches [S, B]``."""
    per_seed = batches.mean(1)
    flat = batches.reshape(-1)
    return {
        "mean": float(flat.mean()),
        "se": float(flat.std(ddof=1) / math.sqrt(flat.size)),
        "min": float(per_seed.min()),
        "max": float(per_seed.max()),
    }


def theory(exp, eta: float, sigma: float) -> tuple[float, float]:
    """The two closed forms for the built experiment's graph."""
    W = exp.topology.mixing_matrix()
    n, d = W.shape[0], exp.model.num_params
    return (
        rj.theory.dsgd_noise_average_variance(eta, sigma, n, d),
        rj.theory.dsgd_noise_consensus_distance(W, eta, sigma, d, order="atc"),
    )


def _sizes(topology: str, ns) -> list[int]:
    if topology == "torus":  # square tori; a 2 x 2 torus is a 4-cycle with doubled edges
        return sorted({m * m for m in range(3, 9) if m * m in ns or (m * m >= min(ns) and m * m <= max(ns))})
    if topology == "star":
        return [n for n in ns if n >= 3]
    return list(ns)


def run(out: Path, ns, seeds: int, burn_in: int, rounds: int, batch: int, topologies=TOPOLOGIES) -> list[dict]:
    rows = []
    for topo in topologies:
        for n in _sizes(topo, ns):
            t0 = time.perf_counter()
            # Seeds differ across n (node i's key does not depend on n, so shared seeds would share
            # the first nodes' noise); the same across graphs: x_bar's path does not depend on W.
            m = measure(config(n, topo), 1000 * n + np.arange(seeds), burn_in, rounds, batch)
            th_avg, th_cons = theory(m["exp"], ETA, SIGMA)
            a, k = summarize(m["avg"][0]), summarize(m["cons"][0])
            rows.append(
                {
                    "topology": topo,
                    "n": n,
                    "eta": ETA,
                    "sigma": SIGMA,
                    "d": DIM,
                    "theory_avg": th_avg,
                    "avg_mean": a["mean"],
                    "avg_se": a["se"],
                    "avg_min": a["min"],
                    "avg_max": a["max"],
                    "theory_cons": th_cons,
                    "cons_mean": k["mean"],
                    "cons_se": k["se"],
                    "cons_min": k["min"],
                    "cons_max": k["max"],
                    "seeds": seeds,
                    "rounds": rounds,
                    "burn_in": burn_in,
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(
                f"{topo:9s} n={n:3d}  E|xbar-b|^2 {a['mean']:.4g} ± {a['se']:.2g} (theory {th_avg:.4g})  "
                f"consensus {k['mean']:.4g} ± {k['se']:.2g} (theory {th_cons:.4g})  {rows[-1]['seconds']:.1f}s",
                flush=True,
            )
    return rows


def plot(df, path: Path) -> None:
    """Both stationary quantities against n: closed forms as lines, measurements as points with
    min-max bars over seeds. The complete graph's consensus distance is 0 (W = J) and left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = dict(zip(TOPOLOGIES, ("C0", "C1", "C2", "C3")))
    grid = np.linspace(df.n.min(), df.n.max(), 200)
    theory_avg = [rj.theory.dsgd_noise_average_variance(ETA, SIGMA, n, DIM) for n in grid]
    axes[0].plot(grid, theory_avg, "k-", lw=1.2, label="theory ησ²d / (n(2 − η)), every W")
    for i, (topo, g) in enumerate(df.groupby("topology", sort=False)):
        col = colors.get(topo, "C4")
        shift = 1.0 + 0.025 * (i - 1.5)  # x̄'s path does not depend on W: side by side, not on top
        for ax, q in zip(axes, ("avg", "cons")):
            if q == "cons":
                if (g.theory_cons < 1e-12).all():
                    continue
                ax.plot(g.n, g.theory_cons, "-", color=col, lw=1.2, label=f"{topo}: spectral formula")
            lo, hi = g[f"{q}_mean"] - g[f"{q}_min"], g[f"{q}_max"] - g[f"{q}_mean"]
            x = g.n * (shift if q == "avg" else 1.0)
            ax.errorbar(
                x, g[f"{q}_mean"], yerr=[lo, hi], fmt="o", ms=4, color=col, capsize=3, label=f"{topo}: measured"
            )
    axes[0].set_title(f"variance of the network average (η = {ETA}, σ = {SIGMA}, d = {DIM})")
    axes[0].set_ylabel("stationary E‖x̄ − b‖²")
    axes[1].set_title("consensus distance (complete graph: 0, W = J)")
    axes[1].set_ylabel("stationary (1/n) E‖X − 1x̄ᵀ‖²")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes n")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    seeds = int(df.seeds.iloc[0])
    fig.suptitle(f"ATC D-SGD on identical quadratics: mean and min–max over {seeds} seeds; lines: closed forms")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(folder: Path) -> str:
    """One row per n: the average's variance (the same on every graph: same seeds, and x_bar's
    path does not depend on W) and each graph's consensus distance, theory against measurement
    with z = (measured - theory) / standard error."""
    import pandas as pd

    df = pd.read_csv(Path(folder) / "speedup.csv")
    graphs = [t for t in TOPOLOGIES if t in set(df.topology) and (df[df.topology == t].theory_cons > 1e-12).any()]

    def cell(theory, mean, lo, hi, se):
        return f"{_results.fmt(theory)} → {_results.fmt_band(mean, lo, hi)} ({(mean - theory) / se:+.1f})"

    rows = []
    for n, g in df.groupby("n", sort=True):
        a = g.iloc[0]
        row = [n, cell(a.theory_avg, a.avg_mean, a.avg_min, a.avg_max, a.avg_se), f"{n * a.avg_mean:.3f}"]
        for t in graphs:
            r = g[g.topology == t]
            row.append(
                cell(*r[["theory_cons", "cons_mean", "cons_min", "cons_max", "cons_se"]].iloc[0]) if len(r) else "–"
            )
        row.append(int(a.seeds))
        rows.append(row)
    header = [
        "n",
        "E‖x̄−b‖²: theory → measured (z)",
        f"n · measured (theory {DIM * ETA * SIGMA**2 / (2 - ETA):.3f})",
        *[f"consensus, {t}" for t in graphs],
        "seeds",
    ]
    return _results.markdown_table(header, rows)


TABLES = {"speedup": _table}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/linear_speedup")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import pandas as pd

    out = _results.out_dir(args.out)
    opts = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    df = pd.DataFrame(run(out, **opts))
    df.to_csv(out / "speedup.csv", index=False)
    plot(df, out / "speedup.png")
    summary = {
        "seconds": time.perf_counter() - t0,
        "quick": args.quick,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
    }
    summary.setdefault("topologies", list(TOPOLOGIES))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out} in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
