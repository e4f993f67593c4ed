"""Node-rounds per second: the vectorized round against a per-node Python loop.

The baseline is what peer frameworks (decentralizepy, gossipy, ByzFL's decentralized mode) do:
every node keeps its own model, one jitted single-node step (sample, gradient, SGD update) is
called in a Python loop over nodes, then every node averages its neighbours' rows, again node
by node. The vectorized round is redeem_jax's: all nodes in one XLA program, rounds in a scan.
Same model (digits MLP, 64 hidden), same data (32 digits examples per node), same batch (16),
same ring with Metropolis–Hastings weights.

Run:  python benchmarks/round_throughput.py [--sizes 16,256,4096] [--out /tmp/round.md]   (tables go to docs/performance.md)
      --legacy PATH also times the first engine's D-SGD round (``dsgd.make_round``, before the
      round protocol) from a copy of that package importable as ``redeem_jax_legacy`` under
      PATH, interleaved with the protocol's round in the same process (issue 10's check).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import redeem_jax as rj

BATCH, PER_NODE, HIDDEN, LR = 16, 32, (64,), 0.05


def _setup(n: int, seed: int = 0):
    ds = rj.data.load("digits")
    rng = np.random.default_rng(seed)
    # Each node draws its own 32 examples (overlaps allowed): digits has fewer than 4096·32 rows.
    parts = [rng.choice(ds.x_train.shape[0], PER_NODE, replace=False) for _ in range(n)]
    nd = rj.data.stack_parts(ds.x_train, ds.y_train, parts)
    model = rj.models.get("mlp", ds.input_shape, ds.num_classes, hidden=HIDDEN)
    opt = rj.optim.make_optimizer("sgd", LR)
    topo = rj.topology.ring(n)
    return ds, nd, model, opt, topo


def _protocol_round(n: int):
    """The round protocol's D-SGD: ATC, SGD, sparse gossip, minibatch oracle (rj.core / rj.round)."""
    _, nd, model, _, topo = _setup(n)
    opt = rj.optim.local_optimizer("sgd", rj.core.hyper("optimizer.learning_rate", LR))
    algo = rj.algorithms.dsgd.dsgd(opt, "atc", 1)
    oracle = rj.oracles.minibatch(model, BATCH)
    channels = {"model": rj.channels.gossip(topo, "sparse")}
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    x0 = jnp.broadcast_to(model.init(jax.random.PRNGKey(0)), (n, model.num_params))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(1), topology=topo)
    hp = {"optimizer.learning_rate": jnp.float32(LR)}
    return (lambda s: step(s, nd, hp)), state


def _legacy_round(n: int):
    """The first engine's round (``dsgd.make_round`` with ``gossip_communication``)."""
    import redeem_jax_legacy as legacy

    _, nd, model, _, topo = _setup(n)
    opt = legacy.optim.make_optimizer("sgd", LR)
    topo = legacy.topology.ring(n)
    dsgd = legacy.algorithms.dsgd
    round_fn = dsgd.make_round(model=model, optimizer=opt, node_data=nd, batch_size=BATCH,
                               communicate=dsgd.gossip_communication(topo, "sparse"))
    return round_fn, dsgd.init_state(model, opt, n, jax.random.PRNGKey(0))


def _timer(round_fn, state, rounds: int):
    run = jax.jit(lambda s: jax.lax.scan(lambda s, _: round_fn(s), s, None, length=rounds))
    state, _ = run(state)  # compile + warm up
    jax.block_until_ready(state)

    def once():
        nonlocal state
        t = time.perf_counter()
        state, _ = run(state)
        jax.block_until_ready(state)
        return (time.perf_counter() - t) / rounds
    return once


def vectorized(n: int, rounds: int, legacy: bool = False, repeats: int = 3) -> float | tuple[float, float]:
    """Seconds per round of the jitted, vmapped, scanned round (median of ``repeats``). With
    ``legacy``, also the first engine's round, the two timed alternately in this process."""
    new = _timer(*_protocol_round(n), rounds)
    if not legacy:
        return float(np.median([new() for _ in range(repeats)]))
    old = _timer(*_legacy_round(n), rounds)
    t_new, t_old = [], []
    for _ in range(repeats):
        t_new.append(new())
        t_old.append(old())
    return float(np.median(t_new)), float(np.median(t_old))


def per_node_loop(n: int, rounds: int) -> float:
    """Seconds per round when a jitted single-node step is called in a Python loop over nodes."""
    _, nd, model, opt, topo = _setup(n)
    grad_fn = rj.oracles.gradient_fn(model)

    @jax.jit
    def node_step(x, opt_state, node_x, node_y, size, key):
        xb, yb, mask = rj.data.sample_batch(key, node_x, node_y, size, BATCH)
        _, g = grad_fn(x, xb, yb, mask, key)
        upd, opt_state = opt.update(g, opt_state, x)
        return x + upd, opt_state

    @jax.jit
    def node_combine(own, received, w, self_w):
        return self_w * own + w @ received

    nbrs = np.asarray(topo.neighbors)
    wts = jnp.asarray(topo.weights)
    selfw = jnp.asarray(topo.self_weight)
    x0 = model.init(jax.random.PRNGKey(0))
    xs = [x0 for _ in range(n)]
    opts = [opt.init(x0) for _ in range(n)]
    node_x = [nd.x[i] for i in range(n)]
    node_y = [nd.y[i] for i in range(n)]
    sizes = [nd.sizes[i] for i in range(n)]
    key = jax.random.PRNGKey(1)

    def one_round(r):
        keys = jax.random.split(jax.random.fold_in(key, r), n)
        for i in range(n):
            xs[i], opts[i] = node_step(xs[i], opts[i], node_x[i], node_y[i], sizes[i], keys[i])
        new = [node_combine(xs[i], jnp.stack([xs[j] for j in nbrs[i]]), wts[i], selfw[i]) for i in range(n)]
        xs[:] = new
        jax.block_until_ready(xs[-1])

    one_round(0)  # compile
    times = []
    for r in range(1, rounds + 1):
        t = time.perf_counter()
        one_round(r)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,256,4096")
    ap.add_argument("--out", default="", help="write a markdown table here")
    ap.add_argument("--legacy", default="", help="a folder holding redeem_jax_legacy (the pre-protocol engine)")
    ap.add_argument("--no-loop", action="store_true", help="skip the per-node loop baseline")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.legacy:
        sys.path.insert(0, args.legacy)
        lines = ["| N | protocol round node-rounds/s | first engine's round node-rounds/s | protocol / first |",
                 "|---|---|---|---|"]
        print(f"{'N':>6} {'protocol':>14} {'first engine':>14} {'ratio':>7}   (node-rounds per second)")
        for n in sizes:
            v, old = vectorized(n, rounds=max(2, min(50, 20_000 // n)), legacy=True, repeats=7)
            print(f"{n:>6} {n / v:>14,.0f} {n / old:>14,.0f} {old / v:>6.3f}x", flush=True)
            lines.append(f"| {n} | {n / v:,.0f} | {n / old:,.0f} | **{old / v:.3f}** |")
    else:
        lines = ["| N | vectorized node-rounds/s | per-node loop node-rounds/s | speed-up |", "|---|---|---|---|"]
        print(f"{'N':>6} {'vectorized':>16} {'per-node loop':>16} {'speed-up':>9}   (node-rounds per second)")
        for n in sizes:
            v = vectorized(n, rounds=max(2, min(50, 20_000 // n)))
            if args.no_loop:
                print(f"{n:>6} {n / v:>16,.0f}", flush=True)
                continue
            b = per_node_loop(n, rounds=2 if n > 1000 else 3)
            print(f"{n:>6} {n / v:>16,.0f} {n / b:>16,.0f} {b / v:>8.1f}x", flush=True)
            lines.append(f"| {n} | {n / v:,.0f} | {n / b:,.0f} | **{b / v:.1f}x** |")
    flags = f" --legacy {args.legacy}" if args.legacy else ""
    header = (f"Command: `python benchmarks/round_throughput.py --sizes {args.sizes}{flags}`  \n"
              f"Machine: {platform.machine()}, {jax.device_count()} × {jax.devices()[0].device_kind}, "
              f"jax {jax.__version__}, Python {platform.python_version()}\n\n")
    if args.out:
        with open(args.out, "w") as f:
            f.write(header + "\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
