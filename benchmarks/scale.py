"""Million-node networks: rounds per second, bytes moved per round and peak memory.

    python benchmarks/scale.py                     # N = 10^4, 10^5, 10^6 (~1.5 min on 2 CPU cores)
    python benchmarks/scale.py --quick             # N = 10^4, 10^5 (~30 s)
    python benchmarks/scale.py --sizes 10000,1000000 --topology torus --task logistic
    python benchmarks/scale.py --md /tmp/scale.md  # also write the markdown table
    python benchmarks/scale.py --sizes 1000000 --floor  # also the same round written by hand

For each N, a fresh subprocess (so that peak memory, ``ru_maxrss``, is that N's
alone) builds a D-SGD experiment through ``rj.build`` (synthetic linear
regression, ``--dim`` features, ``--examples`` examples per node, minibatch
``--batch``, one SGD step then one sparse gossip step on a degree <= 8 graph,
Lian et al. 2017), then times ``--rounds`` rounds in one jitted ``lax.scan``
(state donated; steady state = median of several calls after a warm-up call,
each ended by ``block_until_ready``) and one call of the runner's evaluation.

Bytes per round is the least traffic a round must move (float32 = 4 bytes):
read and write the parameters ``2·N·d``, gather ``N·K·d`` neighbour rows, read
the edge arrays (neighbour id + weight per slot, self weight), read the
minibatch ``N·B·(d + 1)`` and the shard sizes, read and write the optimizer
state. Baseline: a jitted, donated ``y = x + 1`` over a ``--copy-mib`` float32
array (reads and writes twice that), i.e. the machine's attainable memory
bandwidth, timed in each worker between its round calls (round, copy, round,
copy, ...); "of copy" is achieved GB/s / copy GB/s of each pair, min / median /
max over the ``--reps`` pairs. The header's 1 GiB figure is a separate process's.

Memory: "peak RSS" is the worker's high-water resident set (``VmHWM``; in
parentheses, the high-water mark right after ``rj.build``), "RSS after rounds"
what stays resident once the rounds ran (jax runtime and the host copy of the
dataset included), "arrays/node" the arrays a round works on per node: state
(params + optimizer), node data (``[N, m, d]`` features, ``[N, m]`` targets,
sizes) and edge arrays (neighbour ids, weights, self weight).

"compile (closure)" is the same scan compiled the way ``round_fn(state)``
closes over the node data, which XLA then embeds as a constant.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from _machine import cpu_name  # benchmarks/ is the script directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _mem_total_gib() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def copy_bandwidth(gib: float = 1.0, reps: int = 5) -> float:
    """GB/s of a jitted ``x + 1`` over a ``gib`` GiB float32 array (2·size bytes moved)."""
    import jax
    import jax.numpy as jnp

    n = int(gib * 2**30 / 4)
    x = jnp.zeros((n,), jnp.float32)
    # Donated, as the round's state is: a fresh 1 GiB output every call would
    # measure page faults (~1.4 GB/s here), not memory bandwidth.
    f = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    x = f(x)
    x.block_until_ready()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x = f(x)
        x.block_until_ready()
        ts.append(time.perf_counter() - t0)
    return 2 * x.nbytes / float(np.median(ts)) / 1e9


def _status_bytes(field: str) -> int:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """High-water resident set of this process: ``VmHWM`` (reset by exec, unlike
    ``ru_maxrss``, which a child inherits from its parent on Linux)."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _nbytes(tree) -> int:
    import jax

    return int(sum(np.asarray(a).nbytes if not hasattr(a, "nbytes") else a.nbytes for a in jax.tree.leaves(tree)))


def worker(n: int, args) -> dict:
    """One N: build, compile, time rounds and evaluation; returns a JSON-able row."""
    import jax
    import jax.numpy as jnp

    import redeem_jax as rj
    from redeem_jax import config as rj_config

    c = rj_config.base_config()
    c.num_nodes = n
    c.topology.name = args.topology
    c.topology.k = args.degree
    c.data.name = c.model.name = args.task
    c.data.dim = args.dim
    # test_fraction 0.2: 1.25·N·m examples leave exactly m train examples per node.
    c.data.num_examples = int(round(n * args.examples / 0.8))
    c.data.batch_size = args.batch
    c.optimizer.learning_rate = 0.05
    c.progress = c.plots = False
    c.checkpoint_every = 0

    t0 = time.perf_counter()
    exp = rj.build(c)
    build_s = time.perf_counter() - t0
    peak_build = peak_rss_bytes()  # host-side synthetic data generation dominates this
    topo = exp.topology
    state = exp.init_state()
    jax.block_until_ready(state)
    state_bytes = _nbytes(state.algorithm) + _nbytes(state.channels)
    data_bytes = _nbytes(exp.node_data)
    edge_bytes = topo.neighbors.nbytes + topo.weights.nbytes + topo.self_weight.nbytes

    rounds = args.rounds

    hp = exp.hp_values()

    def many(s, data):
        return jax.lax.scan(lambda s, _: exp.step(s, data, hp), s, None, length=rounds)

    # Node data as an argument of the step, not a constant embedded in the program.
    data = exp.node_data
    t0 = time.perf_counter()
    run = jax.jit(many, donate_argnums=0).lower(state, data).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = run(state, data)  # warm-up call: these are the first `rounds` rounds
    jax.block_until_ready(state)
    ts = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        state, metrics = run(state, data)
        jax.block_until_ready(state)
        ts.append(time.perf_counter() - t0)
    round_s = float(np.median(ts)) / rounds
    loss = float(np.asarray(metrics["train_loss"])[-1])
    cons = float(rj.metrics.consensus_distance(exp.models(state), jnp.asarray(exp.honest)))

    honest = jnp.asarray(exp.honest)
    exp.evaluate(exp.models(state), honest)  # compile
    t0 = time.perf_counter()
    jax.block_until_ready(exp.evaluate(exp.models(state), honest))
    eval_s = time.perf_counter() - t0

    peak = peak_rss_bytes()
    rss_rounds = _status_bytes("VmRSS")  # resident after rounds and evaluation (host dataset included)

    # The copy baseline in this process, interleaved with round calls (round, copy, round, copy,
    # ...), after the peaks were read: a loaded machine slows both alike within a pair.
    cx = jnp.zeros((int(args.copy_mib * 2**20 / 4),), jnp.float32)
    cf = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    cx = cf(cx)
    cx.block_until_ready()
    prev = None
    if args.previous_sampler:
        # The minibatch oracle as it was before issue 11: per-node keys, m_max uniform scores and
        # the smallest B by a sorting network (rj.data.sample_batch); same model, same gossip.
        from redeem_jax import round as rj_round
        from redeem_jax.local import oracles

        def per_node(key, node_x, node_y, size):
            return rj.data.sample_batch(key, node_x, node_y, size, args.batch)

        old_oracle = oracles._oracle(lambda ctx: (per_node, oracles.gradient_fn(exp.model)))
        old_step = rj_round.make_step(exp.algorithm, old_oracle, exp.channels, topology=topo, honest=exp.honest)

        def many_prev(s, data):
            return jax.lax.scan(lambda s, _: old_step(s, data, hp), s, None, length=rounds)

        prev = jax.jit(many_prev, donate_argnums=0).lower(state, data).compile()
        prev_state = jax.tree.map(lambda a: jnp.array(a, copy=True), state)
        prev_state, _ = prev(prev_state, data)

    floor = None
    if args.floor:
        floor, floor_state = _hand_written_round(exp, topo, args, rounds)
        floor_state, _ = floor(floor_state, data)

    def timed(fn, s):
        t0 = time.perf_counter()
        s, _ = fn(s, data)
        jax.block_until_ready(s)
        return s, (time.perf_counter() - t0) / rounds

    def copy_gbs():
        nonlocal cx
        t0 = time.perf_counter()
        cx = cf(cx)
        cx.block_until_ready()
        return 2 * cx.nbytes / (time.perf_counter() - t0) / 1e9

    # Contenders timed after the library's round, each call followed by its own copy.
    others = {}
    if prev is not None:
        others["previous_sampler"] = [prev, prev_state, []]
    if floor is not None:
        others["floor"] = [floor, floor_state, []]
    pairs = []
    for _ in range(args.reps):
        state, t_round = timed(run, state)
        pairs.append((t_round, copy_gbs()))
        for o in others.values():
            o[1], t_other = timed(o[0], o[1])
            o[2].append((t_other, copy_gbs()))
    del cx
    # For comparison: the round closing over the node data (a constant of the program).
    t0 = time.perf_counter()
    jax.jit(lambda s: jax.lax.scan(lambda s, _: exp.round_fn(s, hp), s, None, length=rounds)).lower(state).compile()
    compile_closure_s = time.perf_counter() - t0

    d, K, B = int(exp.models(state).shape[1]), topo.K, min(args.batch, int(exp.node_data.x.shape[1]))
    f32 = 4
    traffic = {
        "params": 2 * n * d * f32,
        "gather": n * K * d * f32,
        "edges": edge_bytes,
        "batch": n * B * (d + 1) * f32 + n * 4,
        "opt": 2 * (_nbytes(state.algorithm) - _nbytes(exp.models(state))),  # optimizer state: read and written
    }
    bpr = int(sum(traffic.values()))
    ratios = [bpr / t / 1e9 / g for t, g in pairs]
    extra = {}
    for key, (_, _, other_pairs) in others.items():
        r = [bpr / t / 1e9 / g for t, g in other_pairs]
        extra[key] = dict(
            round_s=[t for t, _ in other_pairs], of_copy=dict(min=min(r), median=float(np.median(r)), max=max(r))
        )
    return dict(
        **extra,
        copy_gbs_interleaved=[g for _, g in pairs],
        round_s_interleaved=[t for t, _ in pairs],
        of_copy=dict(min=min(ratios), median=float(np.median(ratios)), max=max(ratios)),
        n=n,
        K=K,
        d=d,
        m=int(exp.node_data.x.shape[1]),
        B=B,
        build_s=build_s,
        compile_s=compile_s,
        round_s=round_s,
        rounds_per_s=1.0 / round_s,
        node_rounds_per_s=n / round_s,
        eval_s=eval_s,
        bytes_per_round=int(sum(traffic.values())),
        traffic=traffic,
        state_bytes_per_node=state_bytes / n,
        data_bytes_per_node=data_bytes / n,
        edge_bytes_per_node=edge_bytes / n,
        peak_rss_bytes=peak,
        peak_build_bytes=peak_build,
        rss_rounds_bytes=rss_rounds,
        compile_closure_s=compile_closure_s,
        rounds_done=int(state.round),
        train_loss=loss,
        consensus_distance=cons,
    )


def _hand_written_round(exp, topo, args, rounds):
    """The same round written by hand, as a JAX user would without the library: the floor the
    issue-11 target is measured against. Per node: B of the m examples drawn with replacement
    (``randint``, less work than the library's draw without replacement), the least-squares
    gradient of a linear model through two batched ``einsum`` s, one SGD step, then the gossip
    step ``w_i <- s_i w_i + sum_k W_ik w_nbr(i,k)`` (Lian et al. 2017) over the same edge arrays.
    No metrics, no Byzantine or channel logic. Returns the compiled ``lax.scan`` of ``rounds``
    rounds (state donated) and its initial state."""
    import jax
    import jax.numpy as jnp

    n, m, d = exp.node_data.x.shape
    B = min(args.batch, m)
    nbr = jnp.asarray(topo.neighbors, jnp.int32)
    wts = jnp.asarray(topo.weights, jnp.float32)
    self_w = jnp.asarray(topo.self_weight, jnp.float32)
    lr = 0.05

    def mix(v):  # v: [N, ...]
        out = self_w.reshape((n,) + (1,) * (v.ndim - 1)) * v
        for k in range(nbr.shape[1]):
            out = out + wts[:, k].reshape((n,) + (1,) * (v.ndim - 1)) * v[nbr[:, k]]
        return out

    def many(s, data):
        y = data.y.reshape(n, m)

        def one(carry, _):
            (w, b), key = carry
            key, sub = jax.random.split(key)
            i = jax.random.randint(sub, (n, B), 0, m)
            xb = jnp.take_along_axis(data.x, i[:, :, None], axis=1)
            yb = jnp.take_along_axis(y, i, axis=1)
            r = jnp.einsum("nbd,nd->nb", xb, w) + b[:, None] - yb
            gw = jnp.einsum("nbd,nb->nd", xb, r) * (2.0 / B)
            gb = jnp.sum(r, axis=1) * (2.0 / B)
            return ((mix(w - lr * gw), mix(b - lr * gb)), key), None

        out, _ = jax.lax.scan(one, s, None, length=rounds)
        return out, None

    s0 = ((jnp.zeros((n, d), jnp.float32), jnp.zeros((n,), jnp.float32)), jax.random.key(1))
    return jax.jit(many, donate_argnums=0).lower(s0, exp.node_data).compile(), s0


def _fmt_bytes(b: float) -> str:
    for unit, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= s:
            return f"{b / s:.2f} {unit}"
    return f"{b:.0f} B"


def table(rows, copy_gbs: float) -> str:
    """The markdown table; "of copy" is min / median / max over the interleaved (round, copy) pairs."""
    head = (
        "| N | K | build | compile (closure) | rounds/s | node-rounds/s | bytes/round | GB/s (of copy: min / median / max) "
        "| evaluate | peak RSS (at build) | RSS after rounds | arrays/node |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        gbs = r["bytes_per_round"] / r["round_s"] / 1e9
        per_node = r["state_bytes_per_node"] + r["data_bytes_per_node"] + r["edge_bytes_per_node"]
        lines.append(
            f"| {r['n']:,} | {r['K']} | {r['build_s']:.1f} s | {r['compile_s']:.1f} s ({r['compile_closure_s']:.1f} s) | {r['rounds_per_s']:.2f} "
            f"| {r['node_rounds_per_s']:,.0f} | {_fmt_bytes(r['bytes_per_round'])} "
            f"| {gbs:.2f} ({r['of_copy']['min']:.1%} / {r['of_copy']['median']:.1%} / {r['of_copy']['max']:.1%}) | {r['eval_s']:.2f} s | {_fmt_bytes(r['peak_rss_bytes'])} ({_fmt_bytes(r['peak_build_bytes'])}) "
            f"| {_fmt_bytes(r['rss_rounds_bytes'])} ({r['rss_rounds_bytes'] / r['n']:,.0f} B/node) | {per_node:.0f} B |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N in {1e4, 1e5} only")
    p.add_argument("--sizes", default="", help="comma-separated N (overrides --quick)")
    p.add_argument(
        "--topology",
        default="ring",
        help="a degree <= 8 family: ring, torus (N a perfect square), random_regular (networkx: minutes at 10^6)",
    )
    p.add_argument("--degree", type=int, default=4, help="random_regular degree")
    p.add_argument("--task", default="linear", choices=("linear", "logistic"))
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--examples", type=int, default=8, help="train examples per node")
    p.add_argument("--batch", type=int, default=4, help="minibatch per node")
    p.add_argument("--rounds", type=int, default=10, help="rounds per timed lax.scan call")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--copy-mib",
        type=float,
        default=512.0,
        help="size of the x + 1 copy baseline timed between round calls in each worker",
    )
    p.add_argument(
        "--previous-sampler",
        action="store_true",
        help="also time the minibatch sampler used before issue 11 (per-node keys), interleaved",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="also time the same round written by hand in JAX (linear task), interleaved",
    )
    p.add_argument("--md", default="", help="write the markdown table here")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.floor and args.task != "linear":
        p.error("--floor: the hand-written round is written for --task linear")

    if args.worker == -1:
        import jax

        print(
            "ROW " + json.dumps(dict(copy_gbs=copy_bandwidth(), jax=jax.__version__, backend=jax.default_backend())),
            flush=True,
        )
        return
    if args.worker:
        print("ROW " + json.dumps(worker(args.worker, args)), flush=True)
        return

    sizes = (
        [int(float(s)) for s in args.sizes.split(",")]
        if args.sizes
        else [10**4, 10**5]
        if args.quick
        else [10**4, 10**5, 10**6]
    )
    forwarded = [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in ("topology", "degree", "task", "dim", "examples", "batch", "rounds", "reps", "copy_mib")
    ]
    forwarded += ["--previous-sampler"] if args.previous_sampler else []
    forwarded += ["--floor"] if args.floor else []

    def sub(n: int) -> dict:
        # Every measurement in its own process: peaks and allocator state don't mix,
        # and this parent never imports jax.
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n)] + forwarded
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise SystemExit(f"N={n}: worker failed (exit {out.returncode})")
        return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("ROW "))[4:])

    base = sub(-1)
    copy_gbs = base["copy_gbs"]
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, {_mem_total_gib():.1f} GiB RAM, "
        f"jax {base['jax']} ({base['backend']})"
    )
    print(f"baseline: jitted, donated x + 1 over 1 GiB float32 -> {copy_gbs:.1f} GB/s")
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        row = sub(n)
        rows.append(row)
        oc = row["of_copy"]
        ours = np.array(row["round_s_interleaved"]) * 1e3
        for key, label, ours_label in (
            ("previous_sampler", "previous sampler", "this sampler"),
            ("floor", "hand-written JAX round", "the library's round"),
        ):
            if key in row:
                rs, oc_k = np.array(row[key]["round_s"]) * 1e3, row[key]["of_copy"]
                print(
                    f"N={n:,} {label}: {rs.min():.1f} / {np.median(rs):.1f} / {rs.max():.1f} ms/round, "
                    f"{oc_k['min']:.1%} / {oc_k['median']:.1%} / {oc_k['max']:.1%} of copy; {ours_label}: "
                    f"{ours.min():.1f} / {np.median(ours):.1f} / {ours.max():.1f} ms/round"
                )
        print(
            f"N={n:,}: {row['rounds_per_s']:.2f} rounds/s, {oc['min']:.1%} / {oc['median']:.1%} / {oc['max']:.1%} "
            f"of the interleaved copy (min / median / max), load {os.getloadavg()[0]:.1f}, "
            f"{row['rounds_done']} rounds done, "
            f"train loss {row['train_loss']:.4f}, peak RSS {_fmt_bytes(row['peak_rss_bytes'])} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    md = table(rows, copy_gbs)
    print()
    print(
        f"{args.topology}, {args.task}, d = {rows[0]['d']}, m = {args.examples} examples/node, "
        f"B = {args.batch}, {args.rounds} rounds per scan call; copy baseline {copy_gbs:.1f} GB/s"
    )
    print(md)
    if args.md:
        with open(args.md, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
