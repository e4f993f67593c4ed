"""Robust aggregation rules against ByzFL's, and every node of a graph aggregating at once.

(1) One rule on n = 64 vectors of d = 100,000 floats, f = 16 (Gaussian rows), jitted, after
warm-up, against ByzFL's NumPy and torch backends (single-threaded torch) on the same rows, and
against the machine's memory copy of the same bytes. Where ByzFL's defaults differ from ours
the rule runs with ByzFL's settings too (geometric median: ByzFL's 3 Weiszfeld steps from 0,
ν = 0.1, ``start="zero"``; centered clipping: one step, τ = 100, from 0), so the comparison is like for like.
(2) All 64 nodes of a random 8-regular graph aggregating their neighbourhood (own row first,
9 rows of d = 100,000) in one call of ``rj.aggregators.neighbourhood``, against a Python loop
of ByzFL NumPy calls (NNM then TrMean for the composition), and a memory copy of the rows
timed the same way: the ceiling of any rule that reads and writes them once.
Every figure is a ratio measured in this process, calls interleaved: median [min, max].
Each timed sample is 3 back-to-back calls of one contender. ByzFL's Clipping and ARC
overwrite their input rows: they get a fresh copy per call, made before the timing, and so
does ours, donated to the jitted rule (it may then write its output in place).

Run:  python benchmarks/robust_rules.py [--d 100000 --n 64 --f 16 --repeats 5] [--md out.md] [--tables hood]
      (ByzFL and torch: see benchmarks/_peers.py; without them only our times are printed)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redeem_jax as rj  # noqa: E402

import _peers  # noqa: E402
from _machine import cpu_name  # noqa: E402

IN_PLACE = ("Clipping", "ARC")  # ByzFL pre-aggregators that overwrite their input rows
INNER = 3  # back-to-back calls per timed sample (see _peers.interleaved)


def _ours(name: str, f: int, **options):
    rule = rj.aggregators.get(name, **options)
    return jax.jit(lambda x: rule(x, f))


def rule_table(n: int, d: int, f: int, repeats: int, only: str = ""):
    byzfl = _peers.byzfl_or_none()
    torch = _peers.torch_or_none() if byzfl else None
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    xj = jnp.asarray(x)
    xt = torch.tensor(x) if torch is not None else None
    copy = jax.jit(lambda a: a + 1.0)
    # (our rule, its options, ByzFL class name, ByzFL options, a label)
    cases = [
        ("mean", {}, "Average", {}, "mean"),
        ("median", {}, "Median", {}, "coordinate-wise median"),
        ("trimmed_mean", {}, "TrMean", {"f": f}, "trimmed mean"),
        ("meamed", {}, "Meamed", {"f": f}, "MeaMed"),
        ("krum", {}, "Krum", {"f": f}, "Krum"),
        ("multi_krum", {}, "MultiKrum", {"f": f}, "Multi-Krum"),
        (
            "geometric_median",
            {"max_iter": 3, "nu": 0.1, "start": "zero"},
            "GeometricMedian",
            {"nu": 0.1, "T": 3},
            "geometric median (3 steps from 0, ByzFL's)",
        ),
        ("geometric_median", {}, None, {}, "geometric median (converged, ours)"),
        (
            "centered_clipping",
            {"tau": 100.0, "iterations": 1, "start": jnp.zeros(d)},
            "CenteredClipping",
            {"tau": 100.0, "L": 1},
            "centered clipping (1 step, τ = 100)",
        ),
        ("monna", {}, "MoNNA", {"f": f}, "MoNNA"),
        ("nnm", {}, "NNM", {"f": f}, "NNM (pre-aggregation, n rows out)"),
        ("nnm+trimmed_mean", {}, None, {}, "NNM ∘ trimmed mean"),
        ("clip", {"tau": 1.0}, "Clipping", {"c": 1.0}, "static clipping"),
        ("arc", {}, "ARC", {"f": f}, "ARC"),
        ("caf", {}, "CAF", {"f": f}, "CAF"),
    ]
    rows = []
    for name, opts, peer, peer_opts, label in cases:
        if only and only not in label:
            continue
        fns = {"copy": lambda: copy(xj), "ours": (lambda fn=_ours(name, f, **opts): fn(xj))}  # noqa: B008 (bound now)
        if peer in IN_PLACE:
            # ByzFL overwrites its input; ours may too: the jitted rule donates a fresh copy.
            donated = jax.jit(lambda a, name=name, opts=opts: rj.aggregators.get(name, **opts)(a, f), donate_argnums=0)
            pool_j = [jnp.array(x) for _ in range((repeats + 1) * INNER)]
            fns["ours"] = lambda fn=donated, pool=pool_j: fn(pool.pop())
        if byzfl is not None and peer is not None:
            if peer == "CenteredClipping":  # stateful: one instance per backend (its state takes its type)
                agg_np, agg_t = getattr(byzfl, peer)(**peer_opts), getattr(byzfl, peer)(**peer_opts)
            else:
                agg_np = agg_t = getattr(byzfl, peer)(**peer_opts)
            if peer in IN_PLACE:
                # ByzFL clips its input rows in place: every call gets a fresh copy, made before
                # the timing (reusing one array, later calls would find nothing left to clip).
                pool_np = [x.copy() for _ in range((repeats + 1) * INNER)]
                pool_t = [xt.clone() for _ in range((repeats + 1) * INNER)]
                fns["byzfl numpy"] = lambda agg=agg_np, pool=pool_np: agg(pool.pop())
                fns["byzfl torch"] = lambda agg=agg_t, pool=pool_t: agg(pool.pop())
            else:
                fns["byzfl numpy"] = lambda agg=agg_np: agg(x)
                fns["byzfl torch"] = lambda agg=agg_t: agg(xt)
        ts = _peers.interleaved(fns, repeats=repeats, inner=INNER)
        row = {
            "rule": label,
            "ours_ms": 1e3 * _peers.spread(ts["ours"])[1],
            "vs_copy": float(np.median(np.asarray(ts["ours"]) / np.asarray(ts["copy"]))),
        }
        for k in ("byzfl numpy", "byzfl torch"):
            if k in ts:
                row[k] = (1e3 * _peers.spread(ts[k])[1], _peers.ratio_cell(ts[k], ts["ours"]))
        rows.append(row)
        peers = "  ".join(f"{k} {v[0]:8.2f} ms ({v[1]})" for k, v in row.items() if k.startswith("byzfl"))
        print(f"{label:40s} ours {row['ours_ms']:8.2f} ms = {row['vs_copy']:5.2f} copies   {peers}", flush=True)
    return rows


def neighbourhood_table(n: int, d: int, f: int, degree: int, repeats: int):
    byzfl = _peers.byzfl_or_none()
    topo = rj.topology.random_regular(n, degree, seed=0)
    nbr = np.concatenate([np.arange(n)[:, None], topo.neighbors], axis=1)  # own row first
    x = np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)
    xj = jnp.asarray(x)
    b = 2  # what each neighbourhood of degree + 1 rows tolerates
    gm = {"max_iter": 3, "nu": 0.1, "start": "zero"}  # ByzFL's geometric median: 3 Weiszfeld steps from 0, nu = 0.1
    rows = []
    mean_loop = None
    for name, opts, peers in [
        ("mean", {}, [("Average", {})]),
        ("median", {}, [("Median", {})]),
        ("trimmed_mean", {}, [("TrMean", {"f": b})]),
        ("krum", {}, [("Krum", {"f": b})]),
        ("multi_krum", {}, [("MultiKrum", {"f": b})]),
        ("geometric_median", gm, [("GeometricMedian", {"nu": 0.1, "T": 3})]),
        ("nnm+trimmed_mean", {}, [("NNM", {"f": b}), ("TrMean", {"f": b})]),
    ]:
        ours = jax.jit(lambda a, name=name, opts=opts: rj.aggregators.neighbourhood(name, a, topo.neighbors, b, **opts))
        fns = {"ours": lambda ours=ours: ours(xj)}
        if byzfl is not None:
            chain = [getattr(byzfl, p)(**o) for p, o in peers]

            def loop(chain=chain):
                out = []
                for i in nbr:
                    v = x[i]
                    for agg in chain:
                        v = agg(v)
                    out.append(v)
                return out

            fns["byzfl loop"] = loop
            mean_loop = loop if name == "mean" else mean_loop
        ts = _peers.interleaved(fns, repeats=repeats, inner=INNER)
        label = name + (" (3 steps from 0, ByzFL's)" if name == "geometric_median" else "")
        row = {"rule": label, "ours_ms": 1e3 * _peers.spread(ts["ours"])[1]}
        if "byzfl loop" in ts:
            row["byzfl loop"] = (
                1e3 * _peers.spread(ts["byzfl loop"])[1],
                _peers.ratio_cell(ts["byzfl loop"], ts["ours"]),
            )
        rows.append(row)
        extra = (
            f"  ByzFL NumPy loop {row['byzfl loop'][0]:8.2f} ms ({row['byzfl loop'][1]})" if "byzfl loop" in row else ""
        )
        print(f"{n} nodes x {degree + 1} rows, {label:36s} ours {row['ours_ms']:8.2f} ms{extra}", flush=True)
    if byzfl is not None:
        # The ceiling of any one-pass rule against the mean's loop: a copy of the same bytes (x + 1, a fresh output as the
        # rules write), timed in the same place, right after the loop. A loop of ByzFL calls
        # leaves the rows cold; a copy then pays the same resumption the mean does.
        copy = jax.jit(lambda a: a + 1.0)
        ts = _peers.interleaved({"copy": lambda: copy(xj), "byzfl loop": mean_loop}, repeats, inner=INNER)
        rows.append(
            {
                "rule": "memory copy of the rows (x + 1)",
                "ours_ms": 1e3 * _peers.spread(ts["copy"])[1],
                "byzfl loop": (
                    1e3 * _peers.spread(ts["byzfl loop"])[1],
                    _peers.ratio_cell(ts["byzfl loop"], ts["copy"]),
                ),
            }
        )
        print(
            f"{n} nodes x {degree + 1} rows, {'a memory copy of the rows (x + 1)':36s} {rows[-1]['ours_ms']:8.2f} ms  "
            f"ByzFL NumPy loop {rows[-1]['byzfl loop'][0]:8.2f} ms ({rows[-1]['byzfl loop'][1]}): "
            "the most a one-pass mean can reach",
            flush=True,
        )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--f", type=int, default=16)
    ap.add_argument("--degree", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--md", default="")
    ap.add_argument("--tables", default="rules,hood", help="which tables: rules, hood or both")
    ap.add_argument("--only", default="", help="only the rules whose label contains this (first table)")
    args = ap.parse_args(argv)
    print(
        f"# {cpu_name()}, {jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}, "
        f"{_peers.load_average()}; machine: {_peers.machine_rates()}"
    )
    tables = set(args.tables.split(","))
    rules = rule_table(args.n, args.d, args.f, args.repeats, args.only) if "rules" in tables else []
    hood = neighbourhood_table(args.n, args.d, args.f, args.degree, args.repeats) if "hood" in tables else []
    if args.md:
        extra = "".join(
            f" --{k} {getattr(args, k)!r}" for k in ("tables", "only") if getattr(args, k) != ap.get_default(k)
        )
        lines = [
            f"Command: `python benchmarks/robust_rules.py --n {args.n} --d {args.d} --f {args.f}{extra}`  ",
            f"Machine: {cpu_name()}, jax {jax.__version__}, {_peers.load_average()}",
        ]
        if rules:
            lines += [
                "",
                "| rule | ours (ms) | ours / memory copy | ByzFL NumPy (ms) | ours faster by | ByzFL torch (ms) | "
                "ours faster by |",
                "|---|---|---|---|---|---|---|",
            ]
        for r in rules:
            npy, trc = r.get("byzfl numpy", ("–", "–")), r.get("byzfl torch", ("–", "–"))
            fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else v  # noqa: E731
            lines.append(
                f"| {r['rule']} | {r['ours_ms']:.2f} | {r['vs_copy']:.2f} | {fmt(npy[0])} | {npy[1]} | "
                f"{fmt(trc[0])} | {trc[1]} |"
            )
        if hood:
            lines += [
                "",
                f"All {args.n} nodes of a random {args.degree}-regular graph, each aggregating its "
                f"{args.degree + 1} rows (f = 2), d = {args.d}:",
                "",
                "| rule | ours, one `neighbourhood` call (ms) | ByzFL NumPy, loop over nodes (ms) | ours faster by |",
                "|---|---|---|---|",
            ]
        for r in hood:
            loop = r.get("byzfl loop", ("–", "–"))
            lines.append(
                f"| {r['rule']} | {r['ours_ms']:.2f} | "
                f"{loop[0] if isinstance(loop[0], str) else f'{loop[0]:.2f}'} | {loop[1]} |"
            )
        Path(args.md).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
