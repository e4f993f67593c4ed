"""Cost of differential privacy in the round: a DP-SGD round over a non-private round.

Digits MLP (64 hidden), 64 nodes on a ring, 64 examples per node and batch, 1 local step. The
DP round computes per-example gradients (a vmap over examples inside the vmap over nodes),
clips each, sums and adds Gaussian noise; the baseline takes the gradient of the mean loss.
Both run as jitted rounds in a lax.scan, measured in the same process. Target: ≤ 3×.

Run:  python benchmarks/dp_overhead.py [--nodes 64 --examples 64 --rounds 50]
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


def _time_round(oracle, model, topo, nd, rounds: int) -> float:
    """Seconds per D-SGD round (ATC, SGD 0.05, gossip) with ``oracle``, rounds in a lax.scan."""
    opt = rj.optim.local_optimizer("sgd", 0.05)
    algo = rj.algorithms.dsgd.dsgd(opt)
    channels = {"model": rj.channels.gossip(topo)}
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    x0 = jnp.broadcast_to(model.init(jax.random.PRNGKey(0)), (topo.n, model.num_params))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(1), topology=topo)
    run = jax.jit(lambda s: jax.lax.scan(lambda s, _: step(s, nd, {}), s, None, length=rounds))
    out, _ = run(state)
    jax.block_until_ready(out)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        out, _ = run(state)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t) / rounds)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--microbatch", type=int, default=0)
    args = ap.parse_args(argv)
    ds = rj.data.load("digits")
    rng = np.random.default_rng(0)
    parts = [rng.choice(ds.x_train.shape[0], args.examples, replace=False) for _ in range(args.nodes)]
    nd = rj.data.stack_parts(ds.x_train, ds.y_train, parts)
    model = rj.models.get("mlp", ds.input_shape, ds.num_classes, hidden=(64,))
    topo = rj.topology.ring(args.nodes)
    plain = _time_round(rj.oracles.minibatch(model, args.examples), model, topo, nd, args.rounds)
    times = {}
    for method in ("ghost", "vmap"):
        oracle = rj.oracles.dp_sgd(
            model,
            args.examples,
            clip_norm=1.0,
            noise_multiplier=1.0,
            expected_batch_size=float(args.examples),
            microbatch=args.microbatch,
            clipping=method,
        )
        times[method] = _time_round(oracle, model, topo, nd, args.rounds)
    print(
        f"Command: python benchmarks/dp_overhead.py --nodes {args.nodes} --examples {args.examples} "
        f"--rounds {args.rounds} --microbatch {args.microbatch}"
    )
    print(f"Machine: {platform.machine()}, {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(
        f"| round | ms per round | ratio |\n|---|---|---|\n| non-private | {1e3 * plain:.2f} | 1.00x |\n"
        f"| DP-SGD, ghost clipping (default for dense models) | {1e3 * times['ghost']:.2f} | "
        f"**{times['ghost'] / plain:.2f}x** |\n"
        f"| DP-SGD, explicit per-example gradients (vmap) | {1e3 * times['vmap']:.2f} | "
        f"{times['vmap'] / plain:.2f}x |"
    )
    return times["ghost"] / plain


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
