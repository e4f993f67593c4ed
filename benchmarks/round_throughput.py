"""Node-steps per second of a D-SGD round: redeem_jax against the peers' per-node loop and the floor.

Three contenders run the same math (MLP 784-128-10, SGD, a minibatch of 32 drawn per node from
its own 64 MNIST-shaped examples, then ATC gossip on a ring with weights 1/3), timed alternately
in this process (median [min, max] of the paired ratios):

* **PyTorch per-node loop** — what decentralizepy, gossipy and the paper codes do: one
  ``nn.Module`` and one ``torch.optim.SGD`` per node, a Python loop over nodes for the local
  step, then every node averages its neighbours' parameters. Single-threaded (faster than two
  threads for models this small on 2 cores; ``--torch-threads`` to change).
* **Hand-written vmap floor** — the shortest JAX round of the same math a researcher would write
  for this one experiment: per-node parameters as a pytree with a leading node axis, ``vmap`` of
  ``value_and_grad``, and ring gossip as two ``jnp.roll``. Any library round must approach it.
* **redeem_jax** — the round protocol's D-SGD (``rj.round.make_step``: minibatch oracle, local
  SGD, sparse gossip channel, its per-round metrics) in the default configuration. Its MLP row
  is the GEMM layout (``rj.models.get``: 101,770 parameters padded to 101,888, the first layer
  a GEMM on the row itself; docs/performance.md).

Each also prints its fraction of the machine's float32 GEMM rate (6·B·|θ| flops per node-step).

Run:  python benchmarks/round_throughput.py [--sizes 16,256,1024] [--rounds 10] [--out /tmp/round.md]
      (tables go to docs/performance.md; needs ``pip install .[bench]`` for the PyTorch loop)
      --legacy PATH also times the first engine's D-SGD round (before the round protocol) from a
      copy of that package importable as ``redeem_jax_legacy`` under PATH (issue 10's check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import redeem_jax as rj

import _peers
from _machine import cpu_name

D_IN, HIDDEN, CLASSES, BATCH, PER_NODE, LR = 784, 128, 10, 32, 64, 0.05
FLOPS_PER_NODE_STEP = 6 * BATCH * (D_IN * HIDDEN + HIDDEN * CLASSES)  # forward + backward GEMMs


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, PER_NODE, D_IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(n, PER_NODE)).astype(np.int32)
    return x, y


def _scanned(step, state, rounds: int):
    """A callable running ``rounds`` rounds of ``step`` in one jitted scan (state threaded through)."""
    run = jax.jit(lambda s: jax.lax.scan(lambda s, _: (step(s), None), s, None, length=rounds)[0], donate_argnums=0)
    box = [state]

    def once():
        box[0] = run(box[0])
        return box[0]

    return once


def library(n: int, rounds: int):
    """redeem_jax's protocol round (what ``rj.run`` builds for ``algorithm=dsgd``)."""
    x, y = _data(n)
    nd = rj.data.NodeData(jnp.asarray(x), jnp.asarray(y), jnp.full((n,), PER_NODE, jnp.int32))
    model = rj.models.get("mlp", (D_IN,), CLASSES, hidden=(HIDDEN,))
    topo = rj.topology.ring(n)
    opt = rj.optim.local_optimizer("sgd", rj.core.hyper("optimizer.learning_rate", LR))
    algo = rj.algorithms.dsgd.dsgd(opt, "atc", 1)
    oracle = rj.oracles.minibatch(model, BATCH)
    channels = {"model": rj.channels.gossip(topo, "sparse")}
    step = rj.round.make_step(algo, oracle, channels, topology=topo)
    x0 = jnp.broadcast_to(model.init(jax.random.PRNGKey(0)), (n, model.num_params))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(1), topology=topo)
    hp = {"optimizer.learning_rate": jnp.float32(LR)}
    return _scanned(lambda s: step(s, nd, hp)[0], state, rounds)


def floor(n: int, rounds: int):
    """The hand-written vmap + roll round."""
    x, y = (jnp.asarray(a) for a in _data(n))
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {
        "w1": jax.random.normal(k1, (n, D_IN, HIDDEN)) / np.sqrt(D_IN),
        "b1": jnp.zeros((n, HIDDEN)),
        "w2": jax.random.normal(k2, (n, HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros((n, CLASSES)),
    }

    def loss(p, xb, yb):
        h = jax.nn.relu(xb @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1))

    def node_step(p, key, xs, ys):
        idx = jax.random.randint(key, (BATCH,), 0, PER_NODE)
        g = jax.grad(loss)(p, xs[idx], ys[idx])
        return jax.tree.map(lambda a, b: a - LR * b, p, g)

    def step(state):
        p, key = state
        key, sub = jax.random.split(key)
        p = jax.vmap(node_step)(p, jax.random.split(sub, n), x, y)
        p = jax.tree.map(lambda a: (a + jnp.roll(a, 1, 0) + jnp.roll(a, -1, 0)) / 3.0, p)
        return p, key

    return _scanned(step, (params, jax.random.PRNGKey(1)), rounds)


def torch_loop(torch, n: int, rounds: int):
    """The per-node PyTorch loop (decentralizepy / gossipy style)."""
    x, y = _data(n)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).long()
    torch.manual_seed(0)
    models = [
        torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))
        for _ in range(n)
    ]
    opts = [torch.optim.SGD(m.parameters(), lr=LR) for m in models]
    params = [list(m.parameters()) for m in models]
    loss_fn = torch.nn.CrossEntropyLoss()

    def once():
        for _ in range(rounds):
            for i in range(n):
                idx = torch.randint(0, PER_NODE, (BATCH,))
                opts[i].zero_grad(set_to_none=True)
                loss_fn(models[i](xs[i, idx]), ys[i, idx]).backward()
                opts[i].step()
            with torch.no_grad():
                new = [
                    [(params[i][k] + params[i - 1][k] + params[(i + 1) % n][k]) / 3.0 for k in range(len(params[i]))]
                    for i in range(n)
                ]
                for i in range(n):
                    for k, t in enumerate(new[i]):
                        params[i][k].copy_(t)

    return once


def legacy_round(n: int, rounds: int):
    """The first engine's round (``dsgd.make_round``), on the same data and model."""
    import redeem_jax_legacy as legacy

    x, y = _data(n)
    nd = legacy.data.NodeData(jnp.asarray(x), jnp.asarray(y), jnp.full((n,), PER_NODE, jnp.int32))
    model = legacy.models.get("mlp", (D_IN,), CLASSES, hidden=(HIDDEN,))
    dsgd = legacy.algorithms.dsgd
    round_fn = dsgd.make_round(
        model=model,
        optimizer=legacy.optim.make_optimizer("sgd", LR),
        node_data=nd,
        batch_size=BATCH,
        communicate=dsgd.gossip_communication(legacy.topology.ring(n), "sparse"),
    )
    state = dsgd.init_state(model, legacy.optim.make_optimizer("sgd", LR), n, jax.random.PRNGKey(0))
    return _scanned(lambda s: round_fn(s)[0], state, rounds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,256,1024")
    ap.add_argument("--rounds", type=int, default=10, help="rounds per timed call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--legacy", default="", help="a folder holding redeem_jax_legacy (the pre-protocol engine)")
    ap.add_argument("--out", default="", help="write a markdown table here")
    args = ap.parse_args(argv)
    torch = _peers.torch_or_none()
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
    if args.legacy:
        sys.path.insert(0, args.legacy)
    rates = _peers.machine_rates()
    print(
        f"# {cpu_name()}, jax {jax.__version__}, {_peers.load_average()}; memory copy "
        f"{rates['copy_GBps']:.1f} GB/s, sgemm {rates['sgemm_GFLOPs']:.0f} GFLOP/s"
    )
    cols = (
        ["redeem_jax", "vmap floor"] + (["first engine"] if args.legacy else []) + (["PyTorch loop"] if torch else [])
    )
    lines = [
        "| N | " + " | ".join(f"{c} node-steps/s" for c in cols) + " | redeem_jax / PyTorch loop | "
        "redeem_jax / floor | redeem_jax % of sgemm |",
        "|" + "---|" * (len(cols) + 4),
    ]
    for n in (int(s) for s in args.sizes.split(",")):
        fns = {"redeem_jax": library(n, args.rounds), "vmap floor": floor(n, args.rounds)}
        if args.legacy:
            fns["first engine"] = legacy_round(n, args.rounds)
        if torch is not None:
            # The loop's rounds are ~100 ms each at N = 256: one round per call keeps repeats affordable.
            fns["PyTorch loop"] = torch_loop(torch, n, 1)
        scale = {k: (1 if k == "PyTorch loop" else args.rounds) for k in fns}
        times = _peers.interleaved(fns, repeats=args.repeats)
        per = {k: [t / scale[k] for t in ts] for k, ts in times.items()}
        rate = {k: n / _peers.spread(v)[1] for k, v in per.items()}
        sg = 100 * rate["redeem_jax"] * FLOPS_PER_NODE_STEP / (rates["sgemm_GFLOPs"] * 1e9)
        vs_torch = _peers.ratio_cell(per["PyTorch loop"], per["redeem_jax"]) if torch else "n/a"
        vs_floor = _peers.ratio_cell(per["vmap floor"], per["redeem_jax"])
        print(
            f"N={n:>5}  "
            + "  ".join(f"{k} {rate[k]:,.0f}/s" for k in fns)
            + f"   vs PyTorch {vs_torch}   vs floor {vs_floor}   {sg:.0f}% of sgemm",
            flush=True,
        )
        lines.append(
            f"| {n} | " + " | ".join(f"{rate[c]:,.0f}" for c in cols) + f" | **{vs_torch}** | {vs_floor} | {sg:.0f}% |"
        )
    header = (
        f"Command: `python benchmarks/round_throughput.py --sizes {args.sizes} --rounds {args.rounds}`  \n"
        f"Machine: {cpu_name()}, jax {jax.__version__}, torch {torch.__version__ if torch else 'absent'}, "
        f"{_peers.load_average()}; memory copy {rates['copy_GBps']:.1f} GB/s, sgemm "
        f"{rates['sgemm_GFLOPs']:.0f} GFLOP/s. Ratios: how many times faster redeem_jax is "
        f"(median [min, max] over {args.repeats} interleaved repeats; the floor ratio is < 1 when the "
        f"hand-written round is faster).\n\n"
    )
    if args.out:
        Path(args.out).write_text(header + "\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
