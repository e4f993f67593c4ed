"""A round on a graph drawn every round against the same round on a static graph of the same degree.

    python benchmarks/dynamic_graphs.py            # N in {256, 4096, 65536}, ~2 min on 2 CPU cores
    python benchmarks/dynamic_graphs.py --quick    # N in {256, 4096}

The round is the consensus part of D-SGD as the library runs it (``rj.round.make_step`` with the
gossip channel, 20 rounds in one ``lax.scan``) on rows of d floats: the harshest setting for a
random graph, since no gradient work hides the cost of drawing it. Contenders, timed
interleaved in one process (``_peers.interleaved``), ratio = static time / drawn time (>= 1:
the drawn graph is as fast):

* EL-Oracle with s = 7 (de Vos et al. 2023; a fresh 7-in/7-out graph every round) against the
  static random 7-regular... circulant of the same in-degree (offsets 1..7, gathered path);
* link failures with p = 0.5 on that circulant (policy "self") against the circulant itself.

The issue's target: the drawn round within 1.5x of the static one (ratio >= 0.67).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax.network import random_graphs, unreliable  # noqa: E402

from _machine import cpu_name  # noqa: E402
from _peers import interleaved, load_average, ratio_cell  # noqa: E402

D, ROUNDS, S = 64, 20, 7


def gossip_only():
    def update(a, oracle, channels, ctx):
        return channels["model"](a, ctx), {}

    return rj.core.Algorithm(lambda x0, ctx: x0, update, lambda a: a, {"model": rj.core.Exchange()}, "gossip_only")


def rounds_fn(topology, n):
    algo = gossip_only()
    oracle = rj.core.Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
    channels = {"model": rj.channels.gossip(topology, method="sparse")}
    x0 = jax.random.normal(jax.random.PRNGKey(1), (n, D))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), topology=topology)
    step = rj.round.make_step(algo, oracle, channels, topology=topology)
    data = jnp.zeros((n, 1))
    run = jax.jit(lambda s: rj.round.scan_rounds(step, s, data, {}, ROUNDS, ROUNDS)[0].algorithm)
    return lambda: run(state)


def circulant(n, s):
    """A static in-degree-s graph on the gathered path: i receives from i+1, ..., i+s (mod n),
    weights 1/(s+1) (doubly stochastic: each column has s + 1 entries too). Sparse: O(n s)."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(n), s + 1)
    cols = (rows + np.tile(np.arange(s + 1), n)) % n
    W = sp.csr_matrix((np.full(rows.size, 1.0 / (s + 1)), (rows, cols)), shape=(n, n))
    return rj.topology.from_mixing_matrices([W], name=f"circulant{s}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = (256, 4096) if args.quick else (256, 4096, 65536)
    print(f"# {cpu_name()}, {load_average()}; d = {D}, {ROUNDS} rounds per call")
    print("| N | EL-Oracle s=7 (random circulant) | EL-Oracle s=7 (relabelled) | link failures p=0.5 |")
    print("|---|---|---|---|")
    for n in sizes:
        static = circulant(n, S)
        fns = {"static": rounds_fn(static, n),
               "el": rounds_fn(random_graphs.el_oracle(n, S, relabel=False), n),
               "el_relabel": rounds_fn(random_graphs.el_oracle(n, S), n),
               "fail": rounds_fn(unreliable.link_failures(static, 0.5), n)}
        t = interleaved(fns, repeats=7, warmup=1, inner=2)
        cells = " | ".join(ratio_cell(t["static"], t[k]) for k in ("el", "el_relabel", "fail"))
        print(f"| {n} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
