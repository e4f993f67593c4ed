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

Upper bounds: ``rj.theory.kappa_bound`` (Allouah et al. 2023, Table 1 / Prop. 2–3 as recorded in
the field notes: trimmed mean 6f(n−f)/(n−2f)², median / geometric median 4((n−f)/(n−2f))², Krum
6(n−f)/(n−2f), NNM∘F 8f/(n−f)(κ_F + 1)); MeaMed and centered clipping have none recorded.

    python experiments/kappa.py --out docs/results/kappa     # 1094 s wall (240 s CPU), 2 cores shared by ~8 jobs
    python experiments/kappa.py --quick --out /tmp/kappa     # seconds

Writes DIR/kappa.csv (rule, f: construction, adversarial mean/min/max over seeds, bounds),
DIR/kappa.png (one panel per rule, log scale) and DIR/summary.json.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/kappa")
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--d", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--fs", default="2,5", help="comma-separated f values (each (rule, f) is one compile)")
    ap.add_argument("--quick", action="store_true", help="2 rules, n = 9, f in {1, 2}, 2 seeds, short searches")
    args = ap.parse_args(argv)
    rules = args.rules.split(",")
    n, seeds = args.n, args.seeds
    fs = [int(v) for v in args.fs.split(",")]
    trials, steps, restarts = 4, 60, 4
    if args.quick:
        rules, n, fs, seeds, trials, steps, restarts = ["trimmed_mean", "nnm+krum"], 9, [1, 2], 2, 2, 15, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    for rule in rules:
        for f in fs:
            try:
                rj.aggregators.check_preconditions(rule, n, f)
            except ValueError:
                continue  # e.g. Krum needs n >= 2f + 3
            cons = construction(rule, n, f, args.d)
            full = full_search(rule, n, f, args.d, seeds, restarts, steps)
            bound = rj.theory.kappa_bound(rule, n, f)
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
                        upper_bound=np.nan if bound is None else float(bound),
                    )
                )
            adv = [r["adversarial"] for r in rows[-seeds:]]
            ub = "—" if bound is None else f"{bound:.3g}"
            print(
                f"{rule:18s} f={f}  f/(n-2f) {rows[-1]['lower_bound']:.3g}  construction {cons:.3g}  "
                f"adversarial {np.mean(adv):.3g} [{min(adv):.3g}, {max(adv):.3g}]  bound {ub}",
                flush=True,
            )
    import pandas as pd
    from _results import over_seeds

    df = pd.DataFrame(rows)
    df.to_csv(out / "kappa_seeds.csv", index=False)
    agg = over_seeds(
        df,
        ["rule", "n", "f", "construction", "lower_bound", "upper_bound"],
        ["adversarial", "search_all_rows"],
    )
    agg.to_csv(out / "kappa.csv", index=False)
    info = dict(n=n, d=args.d, seeds=seeds, trials=trials, steps=steps, restarts=restarts, quick=bool(args.quick))
    info["seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(info, indent=1))
    _plot(agg, rules, n, seeds, out / "kappa.png")
    print(f"wrote {out}/kappa.csv, kappa_seeds.csv, kappa.png, summary.json ({info['seconds']:.0f} s)")
    return agg


def _plot(agg, rules, n, seeds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(rules))
    rows = -(-len(rules) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.5 * rows), squeeze=False)
    for ax, rule in zip(axes.ravel(), rules):
        g = agg[agg.rule == rule].sort_values("f")
        if not len(g):
            ax.set_visible(False)
            continue
        x = g.f.to_numpy() / n
        ax.semilogy(x, g.adversarial_mean, "o-", color="C0", label=f"adversarial search (mean, {seeds} seeds)")
        ax.fill_between(x, g.adversarial_min, g.adversarial_max, color="C0", alpha=0.25)
        ax.semilogy(x, g.construction, "s", mfc="none", color="C2", label="construction")
        ax.semilogy(x, g.lower_bound, "--", color="k", label="f/(n−2f) (every rule)")
        if np.isfinite(g.upper_bound).all():
            ax.semilogy(x, g.upper_bound, "-", color="C3", label="proven upper bound")
        ax.set(title=rule, xlabel="Byzantine fraction f / n", ylabel="κ (unitless)")
        ax.grid(alpha=0.3, which="both")
    for ax in axes.ravel()[len(rules) :]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"(f, κ)-robustness, n = {n}, d = 5: measured lower estimates against the bounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _kappa_table(folder: Path) -> str:
    import pandas as pd
    from _results import fmt, fmt_band, markdown_table

    g = pd.read_csv(folder / "kappa.csv")
    rows = [
        [
            r.rule,
            r.f,
            fmt(r.lower_bound),
            fmt(r.construction),
            fmt_band(r.adversarial_mean, r.adversarial_min, r.adversarial_max),
            "none recorded" if not np.isfinite(r.upper_bound) else fmt(r.upper_bound),
            r.seeds,
        ]
        for r in g.itertuples()
    ]
    header = ["rule", "f", "f/(n−2f)", "construction", "adversarial (mean [min, max])", "proven bound", "seeds"]
    return markdown_table(header, rows)


TABLES = {"kappa": _kappa_table}

if __name__ == "__main__":
    main()
