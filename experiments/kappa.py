"""Measured (f, κ)-robustness of aggregation rules: the lower-bound construction against an
adversarial search, both against the proven bounds, as f/n grows.

κ of a rule F (Allouah et al. 2023, "Fixing by mixing", Def. 2) is the smallest constant with
‖F(x) − x̄_S‖² ≤ (κ/|S|) Σ_{i∈S} ‖xᵢ − x̄_S‖² for every input x and every honest set S of n − f
rows, so any input gives a lower estimate: the ratio it attains. Two estimates per (rule, f):

* **construction**: n − 2f rows at 0, f at +u, f at −u, with either f-block Byzantine: the rule
  cannot tell the labellings apart, so it attains ≥ f/(n − 2f) on one of them (the universal
  lower bound, ``rj.theory.kappa_lower_bound``). Deterministic.
* **adversarial**: per seed, gradient ascent through the jitted rule with random restarts over
  *all* n rows (honest rows included: κ is a sup over them too), started from the construction
  perturbed (either labelling) and from Gaussian honest rows with the best of the fixed attacks of
  ``rj.aggregators.empirical_kappa`` (ALIE, far points, sign flip, IPM, mimic); normalised
  gradient steps alternate with random ones (random only where reverse mode is refused, e.g. the
  geometric median's loop) and a step is kept only if the ratio grows. The reported value is the max over everything tried, so it is ≥ the
  construction by definition, and a value above a proven bound would refute the bound.

Upper bounds: every constant of ``rj.theory.kappa_bounds`` (one per source in
``rj.theory.KAPPA_SOURCES``), each its own column ``bound_<source>`` and its own line. Recorded:
Allouah et al. 2023 ("Fixing by Mixing", Table 1 and the NNM lemma; proven for n > 2f): trimmed
mean 6f(n−f)/(n−2f)², median / geometric median 4((n−f)/(n−2f))², Krum 6(n−f)/(n−2f), NNM∘F
8f/(n−f)(κ_F + 1). Bareilles, Bouaziz, Fageot & El Mhamdi 2026 (arXiv:2602.03899) state a tighter
Krum bound whose constant could not be read from here: named, not drawn. No second published
constant was found for the other rules; MeaMed and centered clipping have none recorded.
``upper_bound`` is the tightest proven one.

    python experiments/kappa.py --out docs/results/kappa     # n = 15, f = 1..6, 3 seeds, 48 compiles
    python experiments/kappa.py --quick --out /tmp/kappa     # trimmed mean and Krum, n = 9, f ∈ {1, 2}
    python experiments/kappa.py --from-seeds --out DIR       # rebuild kappa.csv / kappa.png from kappa_seeds.csv

Measured on the 2 shared cores: the full run took 1351 s wall, 696 s of CPU (load 3–10);
--quick 32–35 s of CPU (1–3 min wall at load ~10).

Writes DIR/kappa_seeds.csv (per seed), DIR/kappa.csv (rule, f: construction, adversarial
mean/min/max over seeds, the lower bound, one column per upper bound), DIR/kappa.png (one panel
per rule, log scale: bounds as lines, estimates as points with min–max bars) and DIR/summary.json.
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

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax.byzantine import aggregators as A  # noqa: E402

RULES = (
    "trimmed_mean",
    "median",
    "geometric_median",
    "krum",
    "nnm+trimmed_mean",
    "nnm+krum",
    "meamed",
    "centered_clipping",
)


def construction(rule: str, n: int, f: int, d: int) -> float:
    """The ratio the rule attains on the f/(n − 2f) construction (worse labelling)."""
    fn = rj.aggregators.get(rule)
    u = jnp.zeros((d,)).at[0].set(1.0)
    x = jnp.concatenate([jnp.zeros((n - 2 * f, d)), jnp.broadcast_to(u, (f, d)), jnp.broadcast_to(-u, (f, d))])
    out = fn(x, f)
    r1 = A.kappa_ratio(out, x[: n - f])
    r2 = A.kappa_ratio(out, jnp.concatenate([x[: n - 2 * f], x[n - f :]]))
    return float(jnp.maximum(r1, r2))


def full_search(rule: str, n: int, f: int, d: int, seeds: int, restarts: int, steps: int):
    """Per seed: the best ratio of gradient ascent over all n rows (rows 0..n−f−1 honest),
    ``restarts`` starts (half from the perturbed construction, half from Gaussian honest rows with
    the best fixed attack), accept-if-better steps of adaptive size. One compile, vmapped."""
    fn = rj.aggregators.get(rule)
    h = n - f

    def ratio(x):
        return A.kappa_ratio(fn(x, f), x[:h])

    grad = jax.grad(ratio)
    try:  # reverse mode through a while_loop (the geometric median's Weiszfeld) is refused
        jax.eval_shape(grad, jnp.zeros((n, d)))
        has_grad = True
    except Exception:  # noqa: BLE001
        has_grad = False
    u = jnp.zeros((d,)).at[0].set(1.0)
    cons = jnp.concatenate([jnp.zeros((n - 2 * f, d)), jnp.broadcast_to(u, (f, d)), jnp.broadcast_to(-u, (f, d))])

    def start(k, i):
        k1, k2, k3 = jax.random.split(k, 3)
        # The construction with the f/(n−2f) block either side honest, perturbed off its ties.
        flip = jnp.concatenate([cons[: n - 2 * f], cons[n - f :], cons[n - 2 * f : n - f]])
        c0 = jnp.where(i % 4 == 0, cons, flip) + 0.05 * jax.random.normal(k1, (n, d))
        honest = jax.random.normal(k2, (h, d))
        atk = A._fixed_attacks(honest, f, k3)
        rs = jax.vmap(lambda b: ratio(jnp.concatenate([honest, b])))(atk)
        g0 = jnp.concatenate([honest, atk[jnp.argmax(jnp.where(jnp.isfinite(rs), rs, -1.0))]])
        return jnp.where(i % 2 == 0, c0, g0)

    def climb(k, i):
        x0 = start(k, i)

        def body(t, carry):
            x, best, step, kk = carry
            kk, kn = jax.random.split(kk)
            noise = jax.random.normal(kn, x.shape)
            g = grad(x) if has_grad else noise
            gn = jnp.linalg.norm(g)
            use = jnp.isfinite(gn) & (gn > 0) & (t % 3 != 2)
            dirn = jnp.where(use, g / jnp.where(use, gn, 1.0), noise / jnp.linalg.norm(noise))
            scale = jnp.sqrt(jnp.mean(jnp.sum((x[:h] - x[:h].mean(0)) ** 2, 1))) + 1e-12
            cand = x + step * scale * dirn
            r = ratio(cand)
            acc = jnp.isfinite(r) & (r > best)
            return (
                jnp.where(acc, cand, x),
                jnp.where(acc, r, best),
                jnp.where(acc, step * 1.5, jnp.maximum(step * 0.6, 1e-4)),
                kk,
            )

        r0 = ratio(x0)
        init = (x0, jnp.where(jnp.isfinite(r0), r0, 0.0), jnp.asarray(0.3), jax.random.fold_in(k, 7))
        return jax.lax.fori_loop(0, steps, body, init)[1]

    def per_seed(k):
        ks = jax.random.split(k, restarts)
        return jnp.max(jax.vmap(climb)(ks, jnp.arange(restarts)))

    keys = jax.vmap(lambda s: jax.random.PRNGKey(1000 + s))(jnp.arange(seeds))
    return np.asarray(jax.jit(jax.vmap(per_seed))(keys))


def f_grid(n: int) -> list[int]:
    """Every f ≥ 1 with n − 2f ≥ 2 (at least two rows the construction leaves at 0)."""
    return [f for f in range(1, n) if n - 2 * f >= 2]


def bound_columns(rule: str, n: int, f: int) -> dict:
    """One column per recorded source (``bound_<source>``, NaN where it gives none) and
    ``upper_bound``: the tightest *proven* one (NaN if none)."""
    bounds = rj.theory.kappa_bounds(rule, n, f)
    cols = {f"bound_{k}": bounds.get(k, np.nan) for k in SOURCES}
    proven = [v for k, v in bounds.items() if rj.theory.KAPPA_SOURCES[k]["status"] == "proven"]
    cols["upper_bound"] = min(proven) if proven else np.nan
    return cols


# Sources with a checked constant for at least one rule: each is a column and a line.
SOURCES = tuple(k for k, v in rj.theory.KAPPA_SOURCES.items() if v["status"] != "not recorded")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/kappa")
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--d", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument(
        "--fs", default="all", help="comma-separated f values, or 'all': every f with n − 2f ≥ 2 (one compile each)"
    )
    ap.add_argument("--quick", action="store_true", help="2 rules, n = 9, f in {1, 2}, 2 seeds, short searches")
    ap.add_argument(
        "--from-seeds",
        action="store_true",
        help="no search: rebuild DIR/kappa.csv (bound columns from rj.theory) and kappa.png from DIR/kappa_seeds.csv",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.from_seeds:
        import pandas as pd

        df = pd.read_csv(out / "kappa_seeds.csv")
        info = json.loads((out / "summary.json").read_text())
        return summarise(df, out, list(dict.fromkeys(df.rule)), info["d"])
    rules = args.rules.split(",")
    n, seeds = args.n, args.seeds
    fs = f_grid(n) if args.fs == "all" else [int(v) for v in args.fs.split(",")]
    steps, restarts = 60, 4
    if args.quick:
        rules, n, fs, seeds, steps, restarts = ["trimmed_mean", "krum"], 9, [1, 2], 2, 15, 2
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    import pandas as pd

    rows = []
    for rule in rules:
        for f in fs:
            try:
                rj.aggregators.check_preconditions(rule, n, f)
            except ValueError:
                continue  # e.g. Krum needs n >= 2f + 3
            cons = construction(rule, n, f, args.d)
            full = full_search(rule, n, f, args.d, seeds, restarts, steps)
            bounds = bound_columns(rule, n, f)
            for s in range(seeds):
                adv = max(cons, float(full[s]) if np.isfinite(full[s]) else 0.0)
                rows.append(
                    dict(
                        rule=rule,
                        n=n,
                        f=f,
                        seed=s,
                        construction=cons,
                        search_all_rows=float(full[s]),
                        adversarial=adv,
                        lower_bound=rj.theory.kappa_lower_bound(n, f),
                        **bounds,
                    )
                )
            # Written after every (rule, f) so that an interrupted full run keeps what it measured.
            pd.DataFrame(rows).to_csv(out / "kappa_seeds.csv", index=False)
            adv = [r["adversarial"] for r in rows[-seeds:]]
            ub = "—" if not np.isfinite(bounds["upper_bound"]) else f"{bounds['upper_bound']:.3g}"
            print(
                f"{rule:18s} f={f}  f/(n-2f) {rows[-1]['lower_bound']:.3g}  construction {cons:.3g}  "
                f"adversarial {np.mean(adv):.3g} [{min(adv):.3g}, {max(adv):.3g}]  proven bound {ub}  "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    df = pd.DataFrame(rows)
    info = dict(n=n, d=args.d, seeds=seeds, fs=fs, steps=steps, restarts=restarts, quick=bool(args.quick))
    info["seconds"] = time.perf_counter() - t0
    info["cpu_seconds"] = time.process_time() - c0
    (out / "summary.json").write_text(json.dumps(info, indent=1))
    agg = summarise(df, out, rules, args.d)
    print(
        f"wrote {out}/kappa.csv, kappa_seeds.csv, kappa.png, summary.json "
        f"({info['seconds']:.0f} s wall, {info['cpu_seconds']:.0f} s CPU)"
    )
    return agg


def summarise(df, out: Path, rules, d: int):
    """Per-seed rows -> DIR/kappa_seeds.csv, DIR/kappa.csv (mean/min/max over seeds, one
    ``bound_<source>`` column per recorded source, recomputed from ``rj.theory``) and the figure."""
    import pandas as pd
    from _results import over_seeds

    bounds = pd.DataFrame([bound_columns(r.rule, r.n, r.f) for r in df.itertuples()], index=df.index)
    df = pd.concat([df.drop(columns=[c for c in df.columns if c in bounds.columns]), bounds], axis=1)
    df.to_csv(out / "kappa_seeds.csv", index=False)
    agg = over_seeds(
        df,
        ["rule", "n", "f", "construction", "lower_bound", *bounds.columns],
        ["adversarial", "search_all_rows"],
    )
    agg = agg.sort_values(["rule", "f"], key=lambda c: c.map(rules.index) if c.name == "rule" else c)
    agg.to_csv(out / "kappa.csv", index=False)
    _plot(agg, rules, int(df.n.iloc[0]), d, int(agg.seeds.max()), out / "kappa.png")
    return agg


def _plot(agg, rules, n, d, seeds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = [r for r in rules if (agg.rule == r).any()]
    cols = min(4, len(rules))
    nrows = -(-len(rules) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, rule in zip(axes.ravel(), rules):
        g = agg[agg.rule == rule].sort_values("f")
        x = g.f.to_numpy() / n
        # Theory as lines: the universal lower bound, then every recorded upper bound by source.
        xs = np.linspace(x.min(), x.max(), 200) if len(x) > 1 else x
        fs = xs * n
        ax.semilogy(xs, fs / (n - 2 * fs), "--", color="k", label="lower bound f/(n−2f) (every rule)")
        for j, k in enumerate(SOURCES):
            src = rj.theory.KAPPA_SOURCES[k]
            # The bounds are closed forms in f: drawn continuously between the run's integer f.
            b = np.array([rj.theory.kappa_bounds(rule, n, v).get(k, np.nan) for v in fs])
            if np.isfinite(b).any():
                ax.semilogy(xs, b, "-", color=f"C{3 + j}", label=f"{src['label']} upper bound ({src['status']})")
        ax.semilogy(x, g.construction, "s", mfc="none", ms=7, color="C2", label="construction")
        m = g.adversarial_mean.to_numpy()
        err = np.stack([m - g.adversarial_min.to_numpy(), g.adversarial_max.to_numpy() - m])
        ax.errorbar(
            x,
            m,
            yerr=err,
            fmt="o",
            ms=4,
            color="C0",
            capsize=3,
            label=f"adversarial search (mean, min–max over {seeds} seeds)",
        )
        ax.set(title=rule, xlabel="Byzantine fraction f / n", ylabel="κ (unitless)")
        ax.grid(alpha=0.3, which="both")
    for ax in axes.ravel()[len(rules) :]:
        ax.set_visible(False)
    handles = {}
    for ax in axes.ravel()[: len(rules)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(f"(f, κ)-robustness, n = {n}, d = {d}: measured lower estimates against the published bounds")
    fig.tight_layout(rect=(0, 0.07 if nrows > 1 else 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _kappa_table(folder: Path) -> str:
    import pandas as pd
    from _results import fmt, fmt_band, markdown_table

    g = pd.read_csv(folder / "kappa.csv")
    srcs = [c[len("bound_") :] for c in g.columns if c.startswith("bound_")]

    def bound(v):
        return "none recorded" if not np.isfinite(v) else fmt(v)

    rows = [
        [
            r.rule,
            r.f,
            fmt(r.lower_bound),
            fmt(r.construction),
            fmt_band(r.adversarial_mean, r.adversarial_min, r.adversarial_max),
            *[bound(getattr(r, f"bound_{k}")) for k in srcs],
            "–" if not np.isfinite(r.upper_bound) else fmt(r.adversarial_max / r.upper_bound),
            r.seeds,
        ]
        for r in g.itertuples()
    ]
    labels = [f"{rj.theory.KAPPA_SOURCES[k]['label']} ({rj.theory.KAPPA_SOURCES[k]['status']})" for k in srcs]
    header = [
        "rule",
        "f",
        "f/(n−2f)",
        "construction",
        "adversarial (mean [min, max])",
        *labels,
        "max adversarial / proven bound",
        "seeds",
    ]
    return markdown_table(header, rows)


TABLES = {"kappa": _kappa_table}

if __name__ == "__main__":
    main()
