"""Breakdown of robust gossip on the two-worlds graph (Gaucher, Dieuleveut & Hendrikx 2025).

Honest graph: ``rj.topology.two_worlds(2m)``, two cliques of m nodes (intra weight a = 1/(2m))
joined by a perfect matching of weight c. Every honest node has one Byzantine neighbour of weight
b, the swept parameter; the self weight is 1 − (m − 1)a − c − b. The honest Laplacian has
algebraic connectivity μ_min = 2c (spectrum derived in ``two_worlds``'s docstring), and the
paper's impossibility bound is b* = μ_min/2 = c: at b = c a Byzantine neighbour mirroring the
cross neighbour (sending 2xᵢ − x_cross) makes the two worlds indistinguishable to every node,
so no rule can bring them to the honest average.

The task is robust average consensus (the paper's summation problem): x_i(0) = ±e₁ (by world)
+ N(0, 0.3²I), d = 4, T rounds of one rule at every honest node, b tolerated Byzantine
neighbour (count 1, as the library's rules take it). Attacks: ``mirror`` (above),
``mirror_0.9`` (xᵢ − 0.9(x_cross − xᵢ): a shade closer than the cross neighbour, so a rule that
cuts the farthest input cuts the honest one), ``dissensus`` (He, Karimireddy & Jaggi 2022, ε = 1.5) and ``spectral`` (Gaucher et al. 2025:
push along the honest Fiedler vector, ε = 1). Error: E_T = mean_i ‖x_i(T) − x̄_H(0)‖² /
mean_i ‖x_i(0) − x̄_H(0)‖², the honest nodes' squared distance to the value they must agree on,
relative to the start. **Breakdown point**: the smallest swept b at which E_T ≥ 1/2 (or the run
diverged) under the worst of the four attacks. Why 1/2: with the worlds kept apart and each
clique mixed internally E_T stays at 1/(1 + 0.3²·4) = 0.735, while any b below a rule's
breakdown gives E_T far below 1/2 after T = 40/μ_min rounds (40 mixing times of the slowest
attack-free mode), so the threshold separates the two regimes and is insensitive to its
exact value. It is measured per seed; the table gives mean [min, max] over seeds in units of b*.

Rules: plain gossip (reference), ClippedGossip, CS+ (η = 1/λ_max(I − W) of the full graph with
its Byzantine edges, per b), IOS, BRIDGE (coordinate-wise trimmed mean of the neighbourhood,
f = 1) and NNA (nearest-neighbour averaging in the paper's F-RG form: drop the farthest
neighbours of total weight δᵢ, gossip over the rest). b, the CS+ step, the attack and the seed
are vmapped (one compile per rule).

    python experiments/breakdown.py --out docs/results/breakdown   # 80 s wall (22 s CPU), 2 cores shared by ~8 jobs
    python experiments/breakdown.py --quick --out /tmp/breakdown        # seconds

Writes DIR/error.csv (rule, attack, b: E_T over seeds), DIR/breakdown.csv (rule: breakdown
point over seeds), DIR/breakdown.png, DIR/summary.json.
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
from redeem_jax.byzantine import rules as R  # noqa: E402

RULES = ("gossip", "clipped_gossip", "cs_plus", "ios", "bridge", "nna")
LABELS = {
    "gossip": "plain gossip",
    "clipped_gossip": "ClippedGossip",
    "cs_plus": "CS+",
    "ios": "IOS",
    "bridge": "BRIDGE (trimmed mean)",
    "nna": "NNA",
}
ATTACKS = ("mirror", "mirror_0.9", "dissensus", "spectral")
THRESHOLD = 0.5
SIGMA, D = 0.3, 4


def layout(m: int):
    """Honest neighbour indices ``[2m, m]`` of two_worlds(2m): m − 1 intra slots, then the cross one."""
    topo = rj.topology.two_worlds(2 * m)
    A = np.asarray(topo.adjacency, bool)
    n = 2 * m
    cross = (np.arange(n) + m) % n
    intra = np.array([[j for j in np.flatnonzero(A[i]) if j != cross[i]] for i in range(n)])
    assert intra.shape == (n, m - 1)
    return np.concatenate([intra, cross[:, None]], axis=1), cross


def honest_laplacian(m: int, a: float, c: float) -> np.ndarray:
    """Weighted Laplacian of the honest two-worlds graph (intra a, cross c)."""
    A = np.asarray(rj.topology.two_worlds(2 * m).adjacency, float)
    n = 2 * m
    cross = (np.arange(n) + m) % n
    W = a * A
    W[np.arange(n), cross] = c
    return np.diag(W.sum(1)) - W


def cs_plus_step(m: int, a: float, c: float, b: float) -> float:
    """η = 1/λ_max(I − W) of the full graph: honest two_worlds plus one Byzantine node per honest
    node, joined by an edge of weight b (the step CS+ uses, ``rules.laplacian_step``)."""
    n = 2 * m
    L = np.zeros((2 * n, 2 * n))
    L[:n, :n] = honest_laplacian(m, a, c)
    i = np.arange(n)
    L[i, i] += b
    L[i + n, i + n] += b
    L[i, i + n] = L[i + n, i] = -b
    return 1.0 / np.linalg.eigvalsh(L)[-1]


def clipped_gossip_w(x_i, messages, weights, mask, delta):
    """ClippedGossip (He, Karimireddy & Jaggi 2022, Alg. 1, practical radius) with the Byzantine
    weight δᵢ given, as in Gaucher et al.'s weighted setting: keep the closest neighbours of weight
    Σⱼ Wᵢⱼ − δᵢ unclipped, clip the rest to the farthest kept distance. ``rules.clipped_gossip``
    computes δᵢ from a neighbour count instead (equal when δᵢ is the largest weight: tested)."""
    diff, dist, ok = R._distances(x_i, messages, mask)
    w = jnp.where(mask, weights, 0.0)
    order = jnp.argsort(dist)
    cum = jnp.cumsum(w[order])
    kept = (cum <= (jnp.sum(w) - delta) * (1 + 1e-6)) & jnp.isfinite(dist[order])
    tau = jnp.max(jnp.where(kept, dist[order], 0.0))
    return x_i + R._clip_sum(diff, dist, w, ok, tau)


def cs_plus_w(x_i, messages, weights, mask, delta, step):
    """CS+ (Gaucher, Dieuleveut & Hendrikx 2025) with the Byzantine weight δᵢ given: clip the
    farthest neighbours of total weight 2δᵢ, step η (``rules.cs_plus`` with a count-based δᵢ)."""
    diff, dist, ok = R._distances(x_i, messages, mask)
    w = jnp.where(mask, weights, 0.0)
    order = jnp.argsort(-jnp.where(mask, dist, -1.0))
    cum = jnp.cumsum(w[order])
    clipped = (cum <= 2.0 * delta * (1 + 1e-6)) & mask[order]
    tau = jnp.max(jnp.where(~clipped & mask[order], dist[order], 0.0))
    tau = jnp.where(jnp.isfinite(tau), tau, 0.0)
    return x_i + step * R._clip_sum(diff, dist, w, ok, tau)


def nna_w(x_i, messages, weights, mask, delta):
    """NNA in F-RG form (Farhadkhani et al. 2023 as written by Gaucher et al. 2025): xᵢ + Σ_kept
    Wᵢⱼ(xⱼ − xᵢ), the farthest neighbours of total weight δᵢ removed."""
    diff, dist, ok = R._distances(x_i, messages, mask)
    w = jnp.where(mask, weights, 0.0)
    order = jnp.argsort(-jnp.where(mask, dist, -1.0))
    cum = jnp.cumsum(w[order])
    cut_sorted = (cum <= delta * (1 + 1e-6)) & mask[order]
    cut = jnp.zeros_like(mask).at[order].set(cut_sorted)
    keep = ok & ~cut
    return x_i + jnp.sum(jnp.where(keep, w, 0.0)[:, None] * diff, axis=0)


def make_run(rule: str, m: int, a: float, c: float, rounds: int):
    """``run(b, step, attack, key) -> E_T`` for one rule, jitted; vmap it over its arguments."""
    nbr, cross = layout(m)
    n = 2 * m
    nbr, cross = jnp.asarray(nbr), jnp.asarray(cross)
    side = jnp.where(jnp.arange(n) < m, 1.0, -1.0)
    u = side / np.sqrt(n)  # unit Fiedler vector of the honest Laplacian (μ_min = 2c < ma)
    v = jnp.ones(D) / np.sqrt(D)
    trimmed = rj.aggregators.get("trimmed_mean")

    def run(b, step, attack, key):
        e1 = jnp.zeros(D).at[0].set(1.0)
        x0 = side[:, None] * e1 + SIGMA * jax.random.normal(key, (n, D))
        target = x0.mean(0)
        w_h = jnp.concatenate([jnp.full((m - 1,), a), jnp.array([c])])
        weights = jnp.broadcast_to(jnp.concatenate([w_h, b[None]]), (n, m + 1))
        mask = jnp.broadcast_to(jnp.concatenate([jnp.ones(m, bool), (b > 0)[None]]), (n, m + 1))
        self_w = 1.0 - jnp.sum(weights, axis=1)
        safe_b = jnp.where(b > 0, b, 1.0)

        def byzantine(x, honest):
            H = jnp.sum(w_h[None, :, None] * (honest - x[:, None]), axis=1)
            msgs = jnp.stack(
                [
                    2 * x - x[cross],  # mirror: the cross neighbour reflected through x_i
                    x - 0.9 * (x[cross] - x),  # shrunk mirror: never the farthest, so IOS cuts the cross edge
                    x - 1.5 * H / safe_b,  # dissensus, ε = 1.5
                    x + (u / safe_b)[:, None] * v,  # spectral, ε = 1
                ]
            )
            return msgs[attack]

        def node(xi, msg, wi, si, mi):
            if rule == "gossip":
                return xi + jnp.sum(jnp.where(mi, wi, 0.0)[:, None] * (msg - xi), axis=0)
            if rule == "clipped_gossip":
                return clipped_gossip_w(xi, msg, wi, mi, b)
            if rule == "cs_plus":
                return cs_plus_w(xi, msg, wi, mi, b, step)
            if rule == "ios":
                return R.ios(xi, msg, wi, si, mi, 1)
            if rule == "bridge":
                stack = jnp.concatenate([xi[None], msg])
                return trimmed(stack, 1, mask=jnp.concatenate([jnp.ones(1, bool), mi]))
            if rule == "nna":
                return nna_w(xi, msg, wi, mi, b)
            raise ValueError(rule)

        def one_round(x, _):
            honest = x[nbr]
            msgs = jnp.concatenate([honest, byzantine(x, honest)[:, None]], axis=1)
            return jax.vmap(node)(x, msgs, weights, self_w, mask), None

        xT, _ = jax.lax.scan(one_round, x0, None, length=rounds)
        err = jnp.mean(jnp.sum((xT - target) ** 2, -1)) / jnp.mean(jnp.sum((x0 - target) ** 2, -1))
        return jnp.where(jnp.isfinite(err), err, jnp.inf)

    return jax.jit(jax.vmap(jax.vmap(jax.vmap(run, (None, None, None, 0)), (None, None, 0, None)), (0, 0, None, None)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/breakdown")
    ap.add_argument("--m", type=int, default=8, help="nodes per world")
    ap.add_argument("--cross", type=float, default=0.05, help="cross-edge weight c (b* = c)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="m = 4, c = 0.1, 2 seeds, 6 values of b, 3 rules")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m, c, seeds = args.m, args.cross, args.seeds
    ratios = np.array([0.0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0])
    rules = RULES
    if args.quick:  # the two rules the acceptance test compares, and plain gossip as the reference
        m, c, seeds, rules = 4, 0.1, 2, ("gossip", "clipped_gossip", "cs_plus")
        ratios = np.array([0.0, 0.5, 0.9, 1.0, 1.5, 3.0])
    a = 1.0 / (2 * m)
    mu_min = float(np.linalg.eigvalsh(honest_laplacian(m, a, c))[1])
    bstar = mu_min / 2
    rounds = int(round(40 / mu_min))
    bs = ratios * c
    assert (m - 1) * a + c + bs.max() <= 1, "self weight must stay >= 0"
    steps = np.array([cs_plus_step(m, a, c, b) for b in bs])
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    t0 = time.perf_counter()
    rows = []
    for rule in rules:
        E = np.asarray(
            make_run(rule, m, a, c, rounds)(
                jnp.asarray(bs, jnp.float32), jnp.asarray(steps, jnp.float32), jnp.arange(len(ATTACKS)), keys
            )
        )  # [b, attack, seed]
        for ib, b in enumerate(bs):
            for ia, att in enumerate(ATTACKS):
                for s in range(seeds):
                    rows.append(dict(rule=rule, attack=att, b=b, b_over_bstar=b / bstar, seed=s, error=E[ib, ia, s]))
        print(f"{rule:15s} worst E_T per b/b*: " + " ".join(f"{e:.2g}" for e in E.max(axis=(1, 2))), flush=True)
    import pandas as pd
    from _results import over_seeds

    df = pd.DataFrame(rows)
    err = over_seeds(df, ["rule", "attack", "b", "b_over_bstar"], ["error"])
    err.to_csv(out / "error.csv", index=False)
    bd = breakdown_points(df)
    summ = over_seeds(bd, ["rule"], ["breakdown_over_bstar"])
    summ["worst_attack"] = [worst_attack(df, r) for r in summ.rule]
    summ.to_csv(out / "breakdown.csv", index=False)
    info = dict(m=m, a=a, c=c, mu_min=mu_min, bstar=bstar, rounds=rounds, seeds=seeds, threshold=THRESHOLD)
    info.update(quick=bool(args.quick), seconds=time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(info, indent=1))
    plot(err, summ, info, out / "breakdown.png")
    print(summ.to_string(index=False))
    print(f"wrote {out}/error.csv, breakdown.csv, breakdown.png, summary.json ({info['seconds']:.0f} s)")
    return 0


def breakdown_points(df):
    """Per (rule, seed): the smallest swept b > 0 (in units of b*) whose worst-attack E_T ≥
    THRESHOLD or is non-finite (inf when no swept b breaks the rule). b = 0 (no Byzantine edge,
    the rule still tolerating one) is left out: it is where a count-based rule's own trimming
    cuts the single cross edge, which the figure shows at x = 0."""
    import pandas as pd

    df = df[df.b_over_bstar > 0]
    worst = df.groupby(["rule", "seed", "b_over_bstar"], sort=False)["error"].max().reset_index()
    out = []
    for (rule, seed), g in worst.groupby(["rule", "seed"], sort=False):
        broken = g[~(g.error < THRESHOLD)].b_over_bstar
        out.append(dict(rule=rule, seed=seed, breakdown_over_bstar=broken.min() if len(broken) else np.inf))
    return pd.DataFrame(out)


def worst_attack(df, rule):
    """The attack that first breaks ``rule`` (largest E_T at its smallest broken b, seed 0)."""
    g = df[(df.rule == rule) & (df.seed == 0) & (df.b_over_bstar > 0)]
    bad = g[~(g.error < THRESHOLD)]
    if not len(bad):
        return "none"
    first = bad[bad.b_over_bstar == bad.b_over_bstar.min()]
    return ", ".join(sorted(first.attack.unique()))


def plot(err, summ, info, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ATTACKS) + 1, figsize=(5 * (len(ATTACKS) + 1), 4.2))
    for ax, att in zip(axes, ATTACKS):
        for i, rule in enumerate(RULES):
            g = err[(err.rule == rule) & (err.attack == att)].sort_values("b")
            if not len(g):
                continue
            x = g.b_over_bstar.to_numpy()
            fin = np.isfinite(g.error_max.to_numpy())
            ax.plot(x[fin], g.error_mean[fin], "o-", ms=3, color=f"C{i}", label=LABELS[rule])
            ax.fill_between(x[fin], g.error_min[fin], g.error_max[fin], color=f"C{i}", alpha=0.2)
            if (~fin).any():  # diverged runs: marked, never drawn as a value
                ax.plot(x[~fin], np.full((~fin).sum(), 1e3), "x", color=f"C{i}", ms=8)
        ax.axvline(1.0, color="k", ls="--", lw=1, label="bound b* = μ_min/2")
        ax.axhline(THRESHOLD, color="gray", ls=":", lw=1, label="breakdown threshold")
        ax.set_yscale("log")
        ax.set_ylim(1e-8, 2e3)
        ax.set(
            title=f"attack: {att} (× at top: diverged)",
            xlabel="Byzantine weight b / b*",
            ylabel="relative honest error E_T (unitless)",
        )
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for i, rule in enumerate(summ.rule):
        r = summ[summ.rule == rule].iloc[0]
        ci = RULES.index(rule)
        lo, mean, hi = r.breakdown_over_bstar_min, r.breakdown_over_bstar_mean, r.breakdown_over_bstar_max
        ax.errorbar([i], [mean], yerr=[[mean - lo], [hi - mean]], fmt="o", color=f"C{ci}", capsize=4)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="bound b* = μ_min/2")
    ax.set_xticks(range(len(summ)), [LABELS[r] for r in summ.rule], rotation=30, ha="right", fontsize=8)
    ax.set(title="measured breakdown (worst attack; mean, min–max)", ylabel="breakdown b / b* (unitless)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(
        f"Robust gossip on two_worlds: 2×{info['m']} honest nodes, c = {info['c']}, μ_min = {info['mu_min']:.3g}, "
        f"T = {info['rounds']} rounds, {info['seeds']} seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _breakdown_table(folder: Path) -> str:
    import pandas as pd
    from _results import fmt, fmt_band, markdown_table

    s = pd.read_csv(folder / "breakdown.csv")
    info = json.loads((folder / "summary.json").read_text())
    err = pd.read_csv(folder / "error.csv")
    first = err[err.b_over_bstar > 0].b_over_bstar.min()
    rows = []
    for _, r in s.iterrows():
        band = fmt_band(r.breakdown_over_bstar_mean, r.breakdown_over_bstar_min, r.breakdown_over_bstar_max)
        if r.breakdown_over_bstar_max <= first * (1 + 1e-9):  # broken at the first swept b > 0
            band = f"≤ {fmt(first)} (first swept b)"
        if not np.isfinite(r.breakdown_over_bstar_max):
            band = f"> {fmt(s.breakdown_over_bstar_max[np.isfinite(s.breakdown_over_bstar_max)].max())} (not reached)"
        bval = fmt(r.breakdown_over_bstar_mean * info["bstar"])
        if band.startswith("≤"):
            bval = f"≤ {fmt(first * info['bstar'])}"
        at2 = err[(err.rule == r.rule) & (np.abs(err.b_over_bstar - 2) < 1e-6)]
        worst2 = fmt_band(at2.error_mean.max(), at2.error_min.max(), at2.error_max.max()) if len(at2) else "–"
        rows.append([LABELS[r.rule], band, bval, r.worst_attack, worst2, r.seeds])
    header = ["rule", "breakdown b / b* (mean [min, max])", "breakdown b", "first broken by", "E_T at b = 2b*", "seeds"]
    return markdown_table(header, rows)


TABLES = {"breakdown": _breakdown_table}

if __name__ == "__main__":
    sys.exit(main())
