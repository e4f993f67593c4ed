"""Cost of one gossip step against a memory copy of the same array, measured in one run.

    python benchmarks/gossip_cost.py                 # ~1.5 min on 2 CPU cores
    python benchmarks/gossip_cost.py --quick         # n <= 4096, a few seconds
    python benchmarks/gossip_cost.py --md /tmp/gossip.md

For each topology (ring: K = 2; static exponential graph, Ying et al. 2021:
K = ceil(log2 n)) and n in {256, ..., 65536} at d = 1000 float32, times one
``gossip.mix`` (the D-SGD consensus step, Lian et al. 2017) per method:

* ``sparse``: generic neighbour-list gossip (one row gather per neighbour
  slot, fused accumulation): O(n K d);
* ``roll``: circulant fast path, ``c_0 x + sum_s c_s roll(x, s)``;
* ``gather+combine``: the engine's form, ``combine(x, gather(x))`` (Byzantine
  edges are overwritten in the ``[n, K, d]`` messages in between; under jit
  XLA fuses the gather into the per-slot accumulation);
* ``dense``: ``W @ x`` with a constant ``W`` (only for n <= 8192).

Baseline ("copy"): a jitted elementwise ``y = x + 1`` on the same ``[n, d]``
float32 array, i.e. it reads n·d and writes n·d floats (8·n·d bytes). Ratios
are ``time(method) / time(copy)``; "GB/s" is 8·n·d bytes / time for every row
(copy-equivalent bandwidth: the least traffic any gossip step must move).
Each timing: compile + one warm-up call, then the median of several calls,
each ended by ``block_until_ready``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from _machine import cpu_name  # benchmarks/ is the script directory

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from redeem_jax import gossip, topology  # noqa: E402

D = 1000
DENSE_MAX_N = 8192


def timeit(f, x, reps: int) -> float:
    f(x).block_until_ready()  # compile
    f(x).block_until_ready()  # warm caches / allocator
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def run(sizes, families=("ring", "exponential")):
    rows = []
    for n in sizes:
        reps = 9 if n <= 4096 else 5
        x = jnp.asarray(np.random.default_rng(0).normal(size=(n, D)), jnp.float32)
        nbytes = 8 * n * D
        copy = timeit(jax.jit(lambda x: x + 1.0), x, reps)
        for fam in families:
            topo = topology.get(fam, n)
            r = dict(topology=fam, n=n, K=topo.K, copy=copy, copy_gbs=nbytes / copy / 1e9)
            r["sparse"] = timeit(jax.jit(lambda x: gossip.mix(topo, x, method="sparse")), x, reps)
            r["roll"] = timeit(jax.jit(lambda x: gossip.mix(topo, x, method="roll")), x, reps)

            def gc(x):
                _, w, sw, _ = topo.edge_arrays()
                return gossip.combine(x, gossip.gather(topo, x), w, sw)

            r["gather_combine"] = timeit(jax.jit(gc), x, reps)
            if n <= DENSE_MAX_N:
                r["dense"] = timeit(jax.jit(lambda x: gossip.mix(topo, x, method="dense")), x, 3 if n > 1024 else reps)
            else:
                r["dense"] = f"skipped: W would be {4 * n * n / 1e9:.1f} GB"
            for m in ("sparse", "roll", "gather_combine", "dense"):
                if isinstance(r[m], float):
                    r[m + "_ratio"] = r[m] / copy
                    r[m + "_gbs"] = nbytes / r[m] / 1e9
            rows.append(r)
            print(_line(r), flush=True)
    return rows


def _cell(r, m):
    v = r[m]
    if not isinstance(v, float):
        return v
    return f"{v * 1e3:.2f} ms ({r[m + '_ratio']:.2f}x, {r[m + '_gbs']:.1f} GB/s)"


def _line(r):
    return (
        f"{r['topology']:<12} n={r['n']:<6} K={r['K']:<3} copy {r['copy'] * 1e3:8.2f} ms "
        f"({r['copy_gbs']:5.1f} GB/s) | "
        + " | ".join(f"{m}: {_cell(r, m)}" for m in ("sparse", "roll", "gather_combine", "dense"))
    )


def markdown(rows, argv, total_s):
    env = (
        f"{cpu_name()}, {os.cpu_count()} cores visible, jax {jax.__version__} "
        f"({jax.default_backend()}), d = {D}, float32"
    )
    out = [
        "# Gossip cost (benchmarks/gossip_cost.py)",
        "",
        f"Command: `python benchmarks/gossip_cost.py{(' ' + ' '.join(argv)) if argv else ''}` "
        f"(whole run {total_s:.0f} s).",
        "",
        f"Machine: {env}.",
        "",
        "Baseline **copy** = jitted elementwise `y = x + 1` on the same `[n, d]` float32 array "
        "(reads n·d, writes n·d floats = 8·n·d bytes). Each cell: median time of one gossip "
        "step `gossip.mix`, its ratio to the copy measured in the same run, and "
        "copy-equivalent bandwidth 8·n·d bytes / time. Methods: **sparse** (generic "
        "neighbour lists, one fused row-gather per slot), **roll** (circulant fast path), "
        "**gather+combine** (the engine's `combine(x, gather(x))`; XLA fuses the "
        "`[n, K, d]` gather into the accumulation), **dense** (`W @ x`, only n <= 8192).",
        "",
        "| topology | n | K | copy | sparse | roll | gather+combine | dense |",
        "|---|---:|---:|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['topology']} | {r['n']} | {r['K']} | {r['copy'] * 1e3:.2f} ms "
            f"({r['copy_gbs']:.1f} GB/s) | "
            + " | ".join(_cell(r, m) for m in ("sparse", "roll", "gather_combine", "dense"))
            + " |"
        )
    out += ["", "Summary (this run):", ""]
    for fam in sorted({r["topology"] for r in rows}):
        rs = [r for r in rows if r["topology"] == fam]
        worst = max(rs, key=lambda r: r["sparse_ratio"])
        out.append(
            f"- {fam}: sparse gossip / copy between "
            f"{min(r['sparse_ratio'] for r in rs):.2f}x and {worst['sparse_ratio']:.2f}x "
            f"(worst at n = {worst['n']}); roll / copy up to "
            f"{max(r['roll_ratio'] for r in rs):.2f}x."
        )
    unfused = [
        r for r in rows if isinstance(r["gather_combine"], float) and r["gather_combine_ratio"] > 2 * r["sparse_ratio"]
    ]
    out += [
        "- Why: a gossip step must at least read x and write y (the copy's traffic). A ring's "
        "two neighbour rows are adjacent to row i and come from cache, so it runs at copy "
        "speed. The exponential graph reads K + 1 row streams per output row: where x fits "
        "in cache (n <= 4096, <= 16 MB) those reads cost up to ~3x the copy; at n >= 16384 "
        "both are DRAM-bound and this VM's copy is itself slowed by page faults on fresh "
        "output buffers (high system time), which hides part of the extra reads.",
        '- `roll` (opt-in `method="roll"`) matches sparse on the ring and is several '
        "times slower on the exponential graph (XLA materialises each far roll), so `auto` "
        "never picks it. Dense `W @ x` is compute-bound on CPU (2·n²·d flops): 10-400x "
        "slower than sparse on these sparse graphs.",
    ]
    if unfused:
        out.append(
            "- gather+combine: XLA fused the gather into the accumulation (≈ sparse) "
            "except at "
            + ", ".join(
                f"{r['topology']} n = {r['n']} (K = {r['K']}: materialised "
                f"{4 * r['n'] * r['K'] * D / 2**30:.1f} GiB of messages, "
                f"{r['gather_combine_ratio']:.1f}x)"
                for r in unfused
            )
            + ". Plain gossip should call `mix`; robust aggregation needs the "
            "[n, K, d] messages anyway."
        )
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description="gossip step cost vs a memory copy")
    p.add_argument("--quick", action="store_true", help="n <= 4096 only")
    p.add_argument("--md", default=None, help="also write a markdown table to this path")
    args = p.parse_args(argv)
    sizes = [256, 1024, 4096] if args.quick else [256, 1024, 4096, 16384, 65536]
    t0 = time.perf_counter()
    rows = run(sizes)
    total = time.perf_counter() - t0
    print(f"total {total:.1f} s; ratio = time / time(copy: jitted x + 1, 8·n·d bytes)")
    if args.md:
        argv_used = sys.argv[1:] if argv is None else list(argv)
        with open(args.md, "w") as f:
            f.write(markdown(rows, argv_used, total))
        print(f"wrote {args.md}")
    return rows


if __name__ == "__main__":
    main()
