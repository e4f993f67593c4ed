"""What a swept graph parameter costs per round: a traced p, q or s against the same round with
the value built in as a constant.

    python benchmarks/dynamic_sweep.py            # N in {256, 4096}, ~1 min on 2 CPU cores

The round is the consensus part of D-SGD as ``benchmarks/dynamic_graphs.py`` runs it (20 rounds
of ``rj.round.make_step`` with the gossip channel in one ``lax.scan``, rows of d = 64 floats).
Contenders, timed interleaved in one process, ratio = constant time / traced time (>= 1: the
traced round is as fast):

* link failures p = 0.5 on a ring: ``p`` a float against ``p`` a ``core.hyper`` passed in ``hp``
  (what ``rj.sweep`` over ``topology.link_up`` runs);
* EL-Oracle s = 2: the static draw (K = 2) against a traced s = 2 padded to s_max = 4 and 8
  (what ``rj.sweep`` over ``topology.s`` with largest value s_max runs): the padded slots are
  gathered with weight 0, so the round costs about (s_max + 1) / (s + 1) of the static one.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import redeem_jax as rj  # noqa: E402
from redeem_jax.core import hyper  # noqa: E402
from redeem_jax.network import random_graphs, unreliable  # noqa: E402

from _machine import cpu_name  # noqa: E402
from _peers import interleaved, load_average, ratio_cell  # noqa: E402

D, ROUNDS = 64, 20


def gossip_only():
    # benchmarks/dynamic_graphs.py's consensus-only round
    def update(a, oracle, channels, ctx):
        return channels["model"](a, ctx), {}

    return rj.core.Algorithm(lambda x0, ctx: x0, update, lambda a: a, {"model": rj.core.Exchange()}, "gossip_only")


def rounds_fn(topology, n, hp):
    algo = gossip_only()
    oracle = rj.core.Oracle(lambda x: (), lambda x, s, ctx, data: (jnp.zeros(x.shape[0]), jnp.zeros_like(x), s))
    channels = {"model": rj.channels.gossip(topology, method="sparse")}
    x0 = jax.random.normal(jax.random.PRNGKey(1), (n, D))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(0), topology=topology, hp=hp)
    step = rj.round.make_step(algo, oracle, channels, topology=topology)
    data = jnp.zeros((n, 1))
    hp = {k: jnp.float32(v) for k, v in hp.items()}
    run = jax.jit(lambda s, h: rj.round.scan_rounds(step, s, data, h, ROUNDS, ROUNDS)[0].algorithm)
    return lambda: run(state, hp)


def main():
    print(f"# {cpu_name()}, {load_average()}; d = {D}, {ROUNDS} rounds per call")
    print("| N | link failures p = 0.5, traced p | EL-Oracle s = 2, traced, s_max = 4 | s_max = 8 |")
    print("|---|---|---|---|")
    for n in (256, 4096):
        ring = rj.topology.ring(n)
        fns = {
            "fail": rounds_fn(unreliable.link_failures(ring, 0.5), n, {}),
            "fail_traced": rounds_fn(
                unreliable.link_failures(ring, hyper("topology.link_up", 0.9)), n, {"topology.link_up": 0.5}
            ),
            "el": rounds_fn(random_graphs.el_oracle(n, 2), n, {}),
            "el_4": rounds_fn(random_graphs.el_oracle(n, hyper("topology.s", 2), s_max=4), n, {"topology.s": 2}),
            "el_8": rounds_fn(random_graphs.el_oracle(n, hyper("topology.s", 2), s_max=8), n, {"topology.s": 2}),
        }
        t = interleaved(fns, repeats=7, warmup=1, inner=2)
        cells = [
            ratio_cell(t["fail"], t["fail_traced"]),
            ratio_cell(t["el"], t["el_4"]),
            ratio_cell(t["el"], t["el_8"]),
        ]
        print(f"| {n} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
