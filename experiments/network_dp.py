"""Network-DP leakage against graph distance: exact linear-view accounting vs Muffliato's per-step formula.

For a ring, a torus and an Erdős–Rényi graph, and three gossip regimes
(:mod:`redeem_jax.privacy.network_dp`):

* ``once``:        noise drawn once, then gossiped (Muffliato; Cyffers, Even, Bellet & Pierre 2022),
* ``fresh``:       fresh noise every round, private value injected once,
* ``fresh_every``: fresh noise and the private value re-contributed every round (DP-D-SGD-like),

computes the exact pairwise leakage ``a_u^T (N N^T)^+ a_u`` (Cyffers & Bellet 2022; 1.0 = local DP)
and the per-message formula of Muffliato (messages treated as independent Gaussian mechanisms),
averaged over ordered pairs at each hop distance. With noise once the formula *underestimates*
the exact leakage (16-cycle, T = 5, distance 3: 0.208 vs an exact 1.0, i.e. exact reconstruction);
with fresh noise the amplification by distance is real (16-cycle, T = 20, value every step:
0.60, 0.24, 0.099, 0.038 of local DP at distances 1-4).

Beside them (issue 16), the **reconstruction attack** of El Mrini, Cyffers & Bellet (2024;
``rj.privacy.reconstruction``) on the same graphs with noise once, T = 5: for every observer v
alone and every node u, the attack's success (R² of its least-squares reconstruction over 400
independent private values, noiseless run) beside the exact leakage and the per-step formula, on
a 16-ring, a 4x4 torus and 5 draws each of Erdős–Rényi (n = 20, p = 0.2), random geometric
(n = 20, r = 0.35) and random 3-regular graphs (n = 20). Message windows: the exact leakage and
the attack both use v's whole view of rounds 0..T-1 jointly (its in-neighbours' messages and its
own, one shared noise draw); the formula sums one independent Gaussian mechanism per message of
an in-neighbour per round over the same rounds. The attack's expected success is u's leverage in
v's knowledge matrix, which with noise once is exactly the leakage: it is 1 exactly where the
leakage is 1 and below 1 elsewhere (checked on every pair), and its mean is within 5 standard
errors of the leakage on every other pair (worst 3.1 in the full run).

    python experiments/network_dp.py --out docs/results/network_dp   # 94 s wall, 31 s CPU at load ~12
    python experiments/network_dp.py --quick --out /tmp/network_dp   # ~9 s CPU
    python experiments/network_dp.py --skip-attack ...               # the leakage part only

Writes ``DIR/network_dp.json`` (per topology and regime: leakage by distance for both methods,
the fraction of pairs the formula underestimates, epsilon at sigma/Delta = SIGMA, delta = DELTA)
and ``DIR/network_dp.png``; ``reconstruction.csv`` (one row per family, graph draw and distance:
mean, min and max over the ordered pairs of exact leakage, attack success and formula, and the
fractions of pairs reconstructed exactly and underestimated by the formula), ``reconstruction.json``
(checks) and ``reconstruction.png``. ``TABLES``: ``leakage`` and ``reconstruction``.
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

from redeem_jax import topology  # noqa: E402
from redeem_jax.privacy import network_dp as nd  # noqa: E402

REGIMES = {  # name -> (noise, value, label)
    "once": ("once", "once", "noise once (Muffliato)"),
    "fresh": ("fresh", "once", "fresh noise, value once"),
    "fresh_every": ("fresh", "every_step", "fresh noise, value every step"),
}
SIGMA = 4.0  # sigma / Delta for the epsilon column
DELTA = 1e-5


def _topologies(quick: bool):
    if quick:
        return {
            "ring": topology.ring(16),
            "torus": topology.torus(4),
            "erdos_renyi": topology.erdos_renyi(12, 0.3, seed=0),
        }
    return {
        "ring": topology.ring(16),
        "torus": topology.torus(6),
        "erdos_renyi": topology.erdos_renyi(32, 0.12, seed=0),
    }


def _steps(regime: str, quick: bool) -> int:
    # T = 5 with noise once reproduces the FIELD_NOTES counterexample; T = 20 the fresh-noise numbers
    return 5 if regime == "once" else (12 if quick else 20)


def run(quick: bool = False) -> dict:
    results, meta = {}, {}
    for tname, top in _topologies(quick).items():
        D = nd.graph_distances(top)
        results[tname] = {}
        meta[tname] = dict(n=top.n, name=top.name, diameter=int(np.max(D[np.isfinite(D)])))
        for reg, (noise, value, _) in REGIMES.items():
            T = _steps(reg, quick)
            W = nd.mixing_sequence(top, T)
            exact = nd.leakage_matrix(W, noise=noise, value=value)
            formula = nd.muffliato_per_step(W, noise=noise, value=value)
            under = nd.underestimated_pairs(exact, formula)
            off = ~np.eye(top.n, dtype=bool)
            K = T if value == "every_step" else 1
            by_d = nd._by_distance(exact, D)
            # epsilon is monotone in leakage: the worst pair at each distance is the guarantee
            eps_by_d = {
                str(k): nd.gaussian_epsilon(math.sqrt(K * v["max"]) / SIGMA, DELTA, "analytic") for k, v in by_d.items()
            }
            results[tname][reg] = dict(
                T=T,
                noise=noise,
                value=value,
                exact={str(k): v for k, v in by_d.items()},
                muffliato={str(k): v for k, v in nd._by_distance(formula, D).items()},
                underestimated_fraction=float(np.mean(under[off])),
                epsilon_exact_worst=eps_by_d,
                epsilon_local_dp=nd.gaussian_epsilon(math.sqrt(K) / SIGMA, DELTA, "analytic"),
            )
    r = results["ring"]
    checks = {
        "ring_once_d3_exact_is_1": abs(r["once"]["exact"]["3"]["mean"] - 1.0) < 1e-9,
        "ring_once_d3_formula_0.208": abs(r["once"]["muffliato"]["3"]["mean"] - 0.208) < 5e-4,
        "exact_in_unit_interval": all(
            0.0 <= s["min"] and s["max"] <= 1.0
            for t in results.values()
            for g in t.values()
            for s in g["exact"].values()
        ),
        "fresh_decreasing_with_distance": all(
            all(a >= b - 1e-12 for a, b in zip(m, m[1:]))
            for t in results.values()
            for reg in ("fresh", "fresh_every")
            for m in [[t[reg]["exact"][k]["mean"] for k in sorted(t[reg]["exact"], key=int)][1:]]
        ),
    }
    if not quick:
        got = [r["fresh_every"]["exact"][str(d)]["mean"] for d in (1, 2, 3, 4)]
        checks["ring_fresh_T20_field_notes"] = bool(np.allclose(got, [0.60, 0.24, 0.099, 0.038], atol=5e-3))
    checks = {k: bool(v) for k, v in checks.items()}
    checks["all_passed"] = all(checks.values())
    return dict(results=results, topologies=meta, sigma_over_delta=SIGMA, delta=DELTA, quick=quick, checks=checks)


def plot(res: dict, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tnames = list(res["results"])
    fig, axes = plt.subplots(len(REGIMES), len(tnames), figsize=(4.2 * len(tnames), 3.3 * len(REGIMES)), squeeze=False)
    for i, (reg, (_, _, label)) in enumerate(REGIMES.items()):
        for j, tn in enumerate(tnames):
            ax = axes[i, j]
            g = res["results"][tn][reg]
            for key, style, lab in (
                ("exact", "o-", "exact (linear view)"),
                ("muffliato", "s--", "Muffliato per-step formula"),
            ):
                ds = sorted(g[key], key=int)
                x = np.array([int(d) for d in ds])
                m = np.array([g[key][d]["mean"] for d in ds])
                lo = np.array([g[key][d]["min"] for d in ds])
                hi = np.array([g[key][d]["max"] for d in ds])
                ax.plot(x, m, style, label=lab, ms=4)
                ax.fill_between(x, lo, hi, alpha=0.15)
            ax.axhline(1.0, color="k", lw=0.8, ls=":", label="local DP")
            if reg != "once":
                ax.set_yscale("log")
                ax.set_ylim(1e-4, 10)
            else:
                ax.set_ylim(-0.05, 3.2)
            meta = res["topologies"][tn]
            ax.set_title(
                f"{tn} (n={meta['n']}), {label}, T={g['T']}\n"
                f"formula < exact on {100 * g['underestimated_fraction']:.0f}% of pairs",
                fontsize=9,
            )
            ax.set_xlabel("graph distance u -> v")
            if j == 0:
                ax.set_ylabel("leakage (1 = local DP)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- reconstruction attack
RECON_T = 5  # rounds in the message window (noise once: the FIELD_NOTES counterexample's T)
RECON_COLUMNS = 400  # independent private values per node (columns of z): the Monte Carlo draws
RECON_SEED = 0
IDENT_TOL = 1e-6  # exact leakage within this of 1: full local DP (reconstruction's leverage tolerance)


def _recon_graphs(quick: bool) -> dict:
    """Deterministic families once, random families over several draws (seeds 100 apart: the
    constructors resample ``seed, seed + 1, ...`` until connected, so nearby seeds could coincide)."""
    draws = (0, 100, 200) if quick else (0, 100, 200, 300, 400)
    if quick:
        return {"ring": [topology.ring(10)], "erdos_renyi": [topology.erdos_renyi(10, 0.3, seed=s) for s in draws]}
    return {
        "ring": [topology.ring(16)],
        "torus": [topology.torus(4)],
        "erdos_renyi": [topology.erdos_renyi(20, 0.2, seed=s) for s in draws],
        "random_geometric": [topology.random_geometric(20, 0.35, seed=s) for s in draws],
        "random_regular": [topology.random_regular(20, 3, seed=s) for s in draws],
    }


def reconstruction_pairs(W: np.ndarray, columns: int = RECON_COLUMNS, seed: int = RECON_SEED) -> dict:
    """Per ordered pair ``[u, v]`` (v the curious observer, alone): the exact leakage
    (:func:`nd.leakage_matrix`, noise once), Muffliato's per-step formula
    (:func:`nd.muffliato_per_step`) and the empirical success of the reconstruction attack of
    El Mrini, Cyffers & Bellet (2024, Sec. 3; ``rj.privacy.reconstruction``) with its standard error.

    Success is the attack's R²: ``1 - sum_c (z_hat_uc - z_uc)^2 / sum_c z_uc^2`` over ``columns``
    independent N(0, 1) private values, from a noiseless gossip run (the attack inverts the public
    linear map; with noise drawn once it returns ``z_u + eta_u`` where it succeeds). Its
    expectation is the leverage ``(A_U^+ A_U)_uu`` of u in v's knowledge matrix, and with noise
    once (``N = A``) that is exactly the leakage ``a_u^T (N N^T)^+ a_u``; it is 1 (up to float64)
    exactly for the nodes the attack identifies and below 1 for every other node.

    Message windows: all three read rounds ``0..T-1`` of ``W [T, n, n]``. The exact leakage and
    the attack use v's whole view jointly (the messages of its in-neighbours and its own, every
    round, one noise draw shared by all); the formula sums one independent Gaussian mechanism per
    message of an in-neighbour ``w != v`` per round (composition over the same window).
    """
    from redeem_jax.privacy import reconstruction as rc

    n = W.shape[1]
    exact = nd.leakage_matrix(W, noise="once")
    formula = nd.muffliato_per_step(W, noise="once")
    z = np.random.default_rng(seed).standard_normal((n, columns))
    z2 = z**2
    success, se, ident = np.ones((n, n)), np.zeros((n, n)), np.ones((n, n), bool)
    for v in range(n):  # one attack per observer: host-side float64 solves, small n
        z_hat, idv = rc.reconstruct(W, [v], rc.simulate_gossip(W, z, [v]))
        e2 = (z_hat - z) ** 2
        success[:, v] = 1.0 - e2.sum(1) / z2.sum(1)
        # ratio estimator: numerator sum_c (z^2 - e^2), denominator sum_c z^2 (E z^2 = 1)
        se[:, v] = (z2 - e2).std(1, ddof=1) / math.sqrt(columns) / z2.mean(1)
        ident[:, v] = idv
    return dict(exact=exact, formula=formula, success=success, se=se, identified=ident)


def reconstruction(quick: bool = False) -> tuple[list[dict], dict]:
    """Rows per (family, draw, distance) over the ordered pairs at that hop distance, and checks."""
    rows, worst_z, agree, strict = [], 0.0, True, True
    for fam, tops in _recon_graphs(quick).items():
        for draw, top in enumerate(tops):
            W = nd.mixing_sequence(top, RECON_T)
            r = reconstruction_pairs(W)
            D = nd.graph_distances(top)
            off = ~np.eye(top.n, dtype=bool)
            full = r["exact"] >= 1.0 - IDENT_TOL
            agree &= bool(np.array_equal(r["identified"][off], full[off]))
            agree &= bool(np.all(np.abs(r["success"][full & off] - 1.0) < 1e-9))
            strict &= bool(np.all(r["success"][~full & off] < 1.0 - 1e-9))
            hidden = ~full & off
            gap = np.abs(r["success"] - r["exact"])
            # nothing arrived (leverage 0): the attack returns 0 for every draw, no spread
            agree &= bool(np.all(gap[hidden & (r["se"] < 1e-12)] < 1e-9))
            spread = hidden & (r["se"] >= 1e-12)  # below: float64 roundoff of an exact 0
            if spread.any():
                worst_z = max(worst_z, float(np.max(gap[spread] / r["se"][spread])))
            for d in np.unique(D[off & np.isfinite(D)]):
                m = off & (D == d)
                row = dict(
                    family=fam,
                    n=top.n,
                    draw=draw,
                    graph_seed=int(top.params.get("seed", -1)) if top.params else -1,
                    T=RECON_T,
                    distance=int(d),
                    pairs=int(m.sum()),
                )
                for key in ("exact", "success", "formula"):
                    row[f"{key}_mean"] = float(r[key][m].mean())
                    row[f"{key}_min"] = float(r[key][m].min())
                    row[f"{key}_max"] = float(r[key][m].max())
                row["full_leakage_fraction"] = float(full[m].mean())
                row["reconstructed_fraction"] = float(r["identified"][m].mean())
                row["formula_below_exact_fraction"] = float(nd.underestimated_pairs(r["exact"], r["formula"])[m].mean())
                rows.append(row)
    checks = {
        "attack_exact_iff_leakage_1": agree,
        "attack_below_1_elsewhere": strict,
        "attack_mean_within_5se_of_leakage": worst_z < 5.0,
    }
    return rows, {"checks": checks, "worst_z": worst_z, "T": RECON_T, "columns": RECON_COLUMNS}


def plot_reconstruction(df, path: str) -> None:
    """Exact leakage, attack success and formula against distance, one panel per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(dict.fromkeys(df.family))
    fig, axes = plt.subplots(1, len(fams), figsize=(3.9 * len(fams), 3.6), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        g = df[df.family == fam].groupby("distance")
        draws = int(df[df.family == fam].draw.nunique())
        x = np.array(sorted(g.groups))
        for key, style, lab in (
            ("exact", "o-", "exact leakage (joint view)"),
            ("success", "x", "attack success (R², noiseless run)"),
            ("formula", "s--", "Muffliato per-step formula"),
        ):
            m = g[f"{key}_mean"].mean().reindex(x).to_numpy()
            lo = g[f"{key}_mean"].min().reindex(x).to_numpy()
            hi = g[f"{key}_mean"].max().reindex(x).to_numpy()
            if key == "success":
                ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt=style, ms=7, capsize=3, label=lab, color="C3")
            else:
                ax.plot(x, m, style, ms=4, label=lab)
                ax.fill_between(x, lo, hi, alpha=0.15)
        ax.axhline(1.0, color="k", lw=0.8, ls=":", label="local DP (exact reconstruction)")
        n = int(df[df.family == fam].n.iloc[0])
        ax.set_title(
            f"{fam} (n = {n}), noise once, T = {RECON_T}\nmean over pairs; band: {draws} graph draw(s)", fontsize=9
        )
        ax.set_xlabel("graph distance u → v (hops)")
        ax.set_ylim(-0.05, 3.2)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("leakage u → v (1 = local DP)")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reconstruction_table(folder) -> str:
    import pandas as pd

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _results

    df = pd.read_csv(os.path.join(folder, "reconstruction.csv"))
    df = df[df.distance <= df["T"]]  # farther, nothing has arrived within T rounds: all three are 0
    vals = ["exact_mean", "success_mean", "formula_mean", "reconstructed_fraction", "formula_below_exact_fraction"]
    t = _results.over_seeds(df, ["family", "n", "distance"], vals, seed="draw")
    rows = [
        (
            r.family,
            r.n,
            r.distance,
            _results.fmt_band(r.exact_mean_mean, r.exact_mean_min, r.exact_mean_max),
            _results.fmt_band(
                *(0.0 if abs(v) < 1e-12 else v for v in (r.success_mean_mean, r.success_mean_min, r.success_mean_max))
            ),
            _results.fmt_band(r.formula_mean_mean, r.formula_mean_min, r.formula_mean_max),
            _results.fmt_band(
                100 * r.reconstructed_fraction_mean,
                100 * r.reconstructed_fraction_min,
                100 * r.reconstructed_fraction_max,
            ),
            _results.fmt_band(
                100 * r.formula_below_exact_fraction_mean,
                100 * r.formula_below_exact_fraction_min,
                100 * r.formula_below_exact_fraction_max,
            ),
            r.seeds,
        )
        for r in t.itertuples()
    ]
    return _results.markdown_table(
        (
            "graph",
            "n",
            "distance",
            "exact leakage",
            "attack success (R²)",
            "per-step formula",
            "% pairs reconstructed exactly",
            "% pairs formula < exact",
            "graph draws",
        ),
        rows,
    )


def _leakage_table(folder) -> str:
    """Per graph and regime: the exact leakage and the per-step formula at distances 1-4 (mean over
    the ordered pairs at that distance) and the share of pairs where the formula is below the exact."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _results

    with open(os.path.join(folder, "network_dp.json")) as f:
        res = json.load(f)
    rows = []
    for tn, regs in res["results"].items():
        meta = res["topologies"][tn]
        for reg, g in regs.items():

            def at(key, g=g):
                return " / ".join(
                    _results.fmt(g[key][str(d)]["mean"]) if str(d) in g[key] else "–" for d in (1, 2, 3, 4)
                )

            rows.append(
                (
                    f"{tn} (n = {meta['n']})",
                    REGIMES[reg][2],
                    g["T"],
                    at("exact"),
                    at("muffliato"),
                    f"{100 * g['underestimated_fraction']:.0f}",
                )
            )
    return _results.markdown_table(
        (
            "graph",
            "regime",
            "T",
            "exact leakage, distance 1 / 2 / 3 / 4",
            "per-step formula, distance 1 / 2 / 3 / 4",
            "% pairs formula < exact",
        ),
        rows,
    )


TABLES = {"leakage": _leakage_table, "reconstruction": _reconstruction_table}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/network_dp")
    ap.add_argument("--quick", action="store_true", help="small graphs, fewer fresh-noise rounds")
    ap.add_argument("--skip-attack", action="store_true", help="only the leakage part (no reconstruction attack)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    res = run(quick=args.quick)
    res["seconds"] = time.time() - t0
    with open(os.path.join(args.out, "network_dp.json"), "w") as f:
        json.dump(res, f, indent=1)
    plot(res, os.path.join(args.out, "network_dp.png"))
    r = res["results"]["ring"]
    print(
        f"ring n=16 noise once T=5, distance 3: exact {r['once']['exact']['3']['mean']:.3f}, "
        f"formula {r['once']['muffliato']['3']['mean']:.3f}"
    )
    means = ", ".join(f"{r['fresh_every']['exact'][str(d)]['mean']:.3f}" for d in (1, 2, 3, 4))
    print(f"ring fresh-every-step T={r['fresh_every']['T']}, distances 1-4: {means}")
    for tn, t in res["results"].items():
        print(tn, {reg: f"{100 * g['underestimated_fraction']:.0f}% underestimated" for reg, g in t.items()})
    print("checks:", res["checks"], f"({res['seconds']:.1f} s)")
    if not args.skip_attack:
        import pandas as pd

        t1 = time.time()
        rows, meta = reconstruction(quick=args.quick)
        df = pd.DataFrame(rows)
        df.to_csv(os.path.join(args.out, "reconstruction.csv"), index=False)
        plot_reconstruction(df, os.path.join(args.out, "reconstruction.png"))
        meta["seconds"] = time.time() - t1
        with open(os.path.join(args.out, "reconstruction.json"), "w") as f:
            json.dump(meta, f, indent=1)
        res["reconstruction"] = meta
        print("reconstruction attack:", meta["checks"], f"worst |success - exact| = {meta['worst_z']:.2f} SE")
        if not all(meta["checks"].values()):
            raise SystemExit("network_dp: a reconstruction check failed")
    if not res["checks"]["all_passed"]:
        raise SystemExit("network_dp: a check failed")
    return res


if __name__ == "__main__":
    main()
