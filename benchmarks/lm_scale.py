"""Language-model scale on this machine: tokens/s per node, achieved FLOP/s against the matmul
peak measured in the same run, and the largest N × d each memory knob lets the machine hold.

1. Peak: a jitted float32 matmul (sgemm) of ``--gemm`` × ``--gemm``, 2n³ FLOPs per call, best of 5.
2. Throughput: D-SGD (ring, SGD) on the byte-level ``text`` corpus split by source, N = 8 nodes,
   transformers of ~1M and ~10M parameters and ``--largest`` (the largest size whose state and
   compiled temporaries fit the memory budget); one jitted round timed over ``--rounds`` rounds
   (median of 3). Tokens per node per round = batch × seq_len; model FLOPs per token ≈ 6·d
   (forward 2d, backward 4d; Kaplan et al. 2020) + 12·layers·seq_len·d_model (attention scores).
3. Capacity: for each knob (none, ``model.remat``, ``optimizer.grad_accum = 4``,
   ``model.dtype = bfloat16``) the bytes of one node: its share of the state
   (``rj.memory_report``, from shapes) plus the compiled round's temporaries per node
   (``jax.jit(step).lower(...).compile().memory_analysis()``, at N = 8); the largest N for each
   model is the budget divided by that. ``--verify`` allocates the state of the largest N that
   fits ``--verify-gb`` for real and compares the process's resident-set growth with the
   prediction (a small budget: this machine is shared).

Run:  python benchmarks/lm_scale.py [--rounds 5 --gemm 2048 --verify --verify-gb 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

import redeem_jax as rj

SIZES = {  # name: (d_model, num_layers, num_heads)
    "tiny": (32, 1, 2),  # a smoke test of the script
    "1M": (256, 1, 4),
    "10M": (512, 3, 8),
    "30M": (768, 4, 12),
    "90M": (1024, 7, 16),
    "110M": (1152, 7, 16),  # about the largest whose N = 8 state and round fit this machine (21 GiB free)
}
KNOBS = {
    "none": {},
    "remat": {"model.remat": True},
    "grad_accum=4": {"optimizer.grad_accum": 4},
    "bfloat16": {"model.dtype": "bfloat16"},
}


def config(d_model, layers, heads, nodes=8, seq_len=64, batch=8, partition="by_source", **over):
    c = rj.config.base_config()
    fields = {
        "num_nodes": nodes,
        "data.name": "text",
        "data.partition": partition,  # by_source needs nodes <= 39 documents
        "data.seq_len": seq_len,
        "data.batch_size": batch,
        "model.name": "transformer",
        "model.d_model": d_model,
        "model.num_layers": layers,
        "model.num_heads": heads,
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.1,
        "progress": False,
        "plots": False,
        "checkpoint_every": 0,
        **over,
    }
    for k, v in fields.items():
        rj.config.set_field(c, k, v)
    return c


def matmul_peak(n: int) -> float:
    """FLOP/s of a jitted float32 n × n matmul (best of 5 calls after a warm-up)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def round_time(exp, rounds: int) -> float:
    """Median seconds of one jitted round (3 timings of ``rounds`` rounds each)."""
    step = jax.jit(exp.step, donate_argnums=(0,))
    hp, data = exp.hp_values(), exp.node_data
    state = exp.init_state()
    state, _ = step(state, data, hp)
    jax.block_until_ready(state)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(rounds):
            state, _ = step(state, data, hp)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t) / rounds)
    return float(np.median(times))


def per_node_bytes(exp) -> tuple[float, float]:
    """(state bytes per node from shapes, compiled temporaries per node of one round)."""
    rep = rj.memory_report(exp)
    state = jax.eval_shape(exp.init_state)
    hp = exp.hp_values()
    compiled = jax.jit(exp.step).lower(state, exp.node_data, hp).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    return rep["per_node"]["total"], temp / exp.config.num_nodes


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gemm", type=int, default=2048)
    ap.add_argument("--sizes", default="1M,10M", help="comma-separated keys of SIZES to time")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--verify-gb", type=float, default=2.0)
    ap.add_argument("--json", default="", help="write the results to this file")
    ap.add_argument("--batch", type=int, default=8, help="windows per node and local step")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--capacity-only", action="store_true", help="skip the timings")
    args = ap.parse_args(argv)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {jax.devices()[0].platform}"}
    load = os.getloadavg()[0]
    print(f"# {out['machine']}, load {load:.1f}, jax {jax.__version__}")
    shape = {"batch": args.batch, "seq_len": args.seq_len}
    print(f"# batch {args.batch} windows of {args.seq_len} bytes per node and step, N = 8, D-SGD on a ring, SGD")
    out["throughput"] = {}
    for name in [] if args.capacity_only else args.sizes.split(","):
        if "matmul_peak_flops" not in out:
            peak = out["matmul_peak_flops"] = matmul_peak(args.gemm)
            print(f"matmul peak (sgemm {args.gemm}^3): {peak / 1e9:.1f} GFLOP/s")
            print("\n| model | d | tokens/s per node | achieved GFLOP/s | of peak |")
            print("|---|---:|---:|---:|---:|")
        dm, layers, heads = SIZES[name]
        exp = rj.build(config(dm, layers, heads, **shape))
        c, d = exp.config, exp.model.num_params
        t = round_time(exp, args.rounds)
        tokens = c.data.batch_size * c.data.seq_len  # per node per round
        flops = c.num_nodes * tokens * (6 * d + 12 * layers * c.data.seq_len * dm)
        out["throughput"][name] = {"d": d, "round_s": t, "tokens_per_s_per_node": tokens / t, "flops": flops / t}
        print(f"| {name} | {d:,} | {tokens / t:,.0f} | {flops / t / 1e9:.2f} | {flops / t / peak:.1%} |")

    budget = available_bytes()
    out["available_bytes"] = budget
    print(
        f"\nlargest N per model and knob for the {budget / 2**30:.1f} GiB available now (N = budget / bytes per node)"
    )
    print("| model | knob | state / node | round temporaries / node | largest N | largest d at N = 8 |")
    print("|---|---|---:|---:|---:|---:|")
    out["capacity"] = {}
    for name in args.sizes.split(","):
        dm, layers, heads = SIZES[name]
        for knob, over in KNOBS.items():
            exp = rj.build(config(dm, layers, heads, **shape, **over))
            state, temp = per_node_bytes(exp)
            n_max = int(budget // (state + temp))
            # Bytes per parameter per node (state and activations both grow ~linearly in d at a
            # fixed depth/width ratio): the largest d eight nodes hold.
            d_max = int(budget / 8 / ((state + temp) / exp.model.num_params))
            out["capacity"][f"{name}/{knob}"] = {
                "state": state,
                "temp": temp,
                "largest_n": n_max,
                "largest_d_n8": d_max,
            }
            print(
                f"| {name} | {knob} | {state / 2**20:.1f} MiB | {temp / 2**20:.1f} MiB | {n_max:,} | {d_max / 1e6:,.0f}M |"
            )

    if args.verify:
        dm, layers, heads = SIZES[args.sizes.split(",")[-1]]
        exp = rj.build(config(dm, layers, heads))
        per = rj.memory_report(exp)["per_node"]
        state_per_node = per["total"] - per["messages"]  # the state and data, without in-flight messages
        n = 8 * max(1, int(args.verify_gb * 2**30 // (state_per_node * 8)))
        big = rj.build(config(dm, layers, heads, nodes=n, partition="iid"))
        predicted = rj.memory_report(big)["bytes"]
        live = lambda: sum(a.nbytes for a in jax.live_arrays())  # noqa: E731
        before, before_rss = live(), rss_bytes()
        state = big.init_state()
        jax.block_until_ready(state)
        grown, grown_rss = live() - before, rss_bytes() - before_rss
        want = predicted["total"] - predicted["messages"] - predicted["node_data"]
        out["verify"] = {"nodes": n, "predicted_state_bytes": want, "live_growth": grown, "rss_growth": grown_rss}
        print(
            f"\nverify: N = {n} nodes of d = {big.model.num_params:,}: predicted state {want / 2**20:.0f} MiB; "
            f"allocated: live device buffers grew {grown / 2**20:.0f} MiB ({grown / want:.3f}x), resident set "
            f"{grown_rss / 2**20:.0f} MiB (freed pages are reused: a lower bound); peak RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
