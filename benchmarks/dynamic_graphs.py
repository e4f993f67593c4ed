"""A round on a graph drawn every round against the same round on a static graph of the same degree.

    python benchmarks/dynamic_graphs.py            # N in {256, 4096, 65536}, ~3 min on 2 CPU cores
    python benchmarks/dynamic_graphs.py --quick    # N in {256, 4096}

The round is the consensus part of D-SGD as the library runs it (``rj.round.make_step`` with the
gossip channel, 20 rounds in one ``lax.scan``) on rows of d floats: the harshest setting for a
random graph, since no gradient work hides the cost of drawing it. Contenders, timed
interleaved in one process (``_peers.interleaved``), ratio = static time / drawn time (>= 1:
the drawn graph is as fast):

* EL-Oracle with s = 7 (de Vos et al. 2023; a fresh 7-in/7-out graph every round) against the
  static circulant of the same in-degree (offsets 1..7, gathered path): as a random circulant
  (``relabel=False``), relabelled by the default keyed swap-or-not permutation (O(n), no sort)
  and by a uniform permutation (``relabel="uniform"``, a sort per round);
* the keyed EL-Oracle also against a static graph whose rows are as scattered as its own: the
  circulant relabelled once by a fixed uniform permutation (same degree, same gathered path).
  At N = 65536 the rows no longer fit in cache and a scattered gather costs 2-4x a sequential
  one, for a static graph as much as for a drawn one: this column separates the cost of drawing
  from the cost of random access;
* link failures with p = 0.5 on that circulant (policy "self") against the circulant itself.

The issue's target: the drawn round within 1.5x of the static one (ratio >= 0.67).

``--workload dsgd`` times the whole D-SGD round a run executes instead (``rj.build`` of a config:
synthetic logistic-regression data of dimension 40, an MLP 40-32-2 of d = 1,378 parameters per node, a minibatch of 8 of each node's 10
examples, ATC gossip), with the same graphs, 5 rounds per call: there the gradient and the
gossip of d-float rows are the work, and the draw is the overhead a user pays.
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


def dsgd_rounds_fn(topology, n, rounds=5):
    """The whole D-SGD round of a run on ``topology`` (``rj.build``; 40-dimensional logistic data, MLP 40-32-2)."""
    c = rj.configs.get("default")
    c.num_nodes = n
    c.data.name, c.data.dim, c.model.name, c.model.hidden = "logistic", 40, "mlp", (32,)
    c.data.num_examples = int(round(n * 10 / 0.8))
    c.data.batch_size = 8
    c.data.partition = "iid"
    c.byzantine.num = 0
    c.compare.key = ""
    c.progress = c.plots = False
    c.checkpoint_every = 0
    exp = rj.build(c, topology=topology)
    hp, data = exp.hp_values(), exp.node_data
    run = jax.jit(lambda s, d: jax.lax.scan(lambda s, _: exp.step(s, d, hp), s, None, length=rounds)[0])
    state = exp.init_state()
    return lambda: run(state, data)


def circulant(n, s):
    """A static in-degree-s graph on the gathered path: i receives from i+1, ..., i+s (mod n),
    weights 1/(s+1) (doubly stochastic: each column has s + 1 entries too). Sparse: O(n s)."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(n), s + 1)
    cols = (rows + np.tile(np.arange(s + 1), n)) % n
    W = sp.csr_matrix((np.full(rows.size, 1.0 / (s + 1)), (rows, cols)), shape=(n, n))
    return rj.topology.from_mixing_matrices([W], name=f"circulant{s}")


def relabelled_circulant(n, s, seed=0):
    """The circulant above relabelled once by a fixed uniform permutation: a static s-regular
    digraph with scattered neighbours (what one EL-Oracle round looks like), gathered path."""
    import scipy.sparse as sp

    perm = np.random.default_rng(seed).permutation(n)
    pos = np.empty(n, np.int64)
    pos[perm] = np.arange(n)
    rows = np.repeat(np.arange(n), s + 1)
    cols = perm[(pos[rows] + np.tile(np.arange(s + 1), n)) % n]
    W = sp.csr_matrix((np.full(rows.size, 1.0 / (s + 1)), (rows, cols)), shape=(n, n))
    return rj.topology.from_mixing_matrices([W], name=f"relabelled_circulant{s}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--workload", choices=("gossip", "dsgd"), default="gossip")
    args = ap.parse_args()
    sizes = (256, 4096) if args.quick else (256, 4096, 65536)
    make = rounds_fn if args.workload == "gossip" else dsgd_rounds_fn
    what = f"gossip only, d = {D}, {ROUNDS} rounds" if args.workload == "gossip" else "D-SGD, MLP d = 1378, 5 rounds"
    print(f"# {cpu_name()}, {load_average()}; {what} per call")
    print(
        "| N | EL-Oracle s=7, random circulant | EL-Oracle s=7, keyed relabel (default) | keyed relabel vs "
        "static relabelled circulant | EL-Oracle s=7, uniform relabel | link failures p=0.5 |"
    )
    print("|---|---|---|---|---|---|")
    for n in sizes:
        static = circulant(n, S)
        fns = {
            "static": make(static, n),
            "static_scattered": make(relabelled_circulant(n, S), n),
            "el": make(random_graphs.el_oracle(n, S, relabel=False), n),
            "el_keyed": make(random_graphs.el_oracle(n, S), n),
            "el_uniform": make(random_graphs.el_oracle(n, S, relabel="uniform"), n),
            "fail": make(unreliable.link_failures(static, 0.5), n),
        }
        t = interleaved(fns, repeats=args.repeats, warmup=1, inner=2)
        cells = [
            ratio_cell(t["static"], t["el"]),
            ratio_cell(t["static"], t["el_keyed"]),
            ratio_cell(t["static_scattered"], t["el_keyed"]),
            ratio_cell(t["static"], t["el_uniform"]),
            ratio_cell(t["static"], t["fail"]),
        ]
        print(f"| {n} | {' | '.join(cells)} |", flush=True)
    print(f"# after: {load_average()}")


if __name__ == "__main__":
    main()
