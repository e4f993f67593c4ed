"""A Byzantine-robust federated training step against ByzFL's own training loop.

ByzFL's benchmark setting: the MNIST MLP ``fc_mnist`` (784-100-10, 79,510 parameters), honest
clients with worker momentum 0.9 computing one minibatch gradient each, ALIE attackers,
NNM ∘ trimmed mean at the server, SGD on the server's model, the model sent back to every
client. ByzFL runs its own classes (``Client``, ``ByzantineClient``, ``Server``) in a Python loop
over clients, as its ``train.py`` does; redeem_jax runs ``rj.run``'s round (FedAvg through a
robust server channel, ALIE as its tamper stage) for all clients in one XLA program. Same
random data (MNIST-shaped), same batch. Figures: honest client-steps per second, the two
timed alternately in this process, median [min, max] of the ratio.

Run:  python benchmarks/federated_step.py [--sizes 10+3,48+16 --batch 32 --steps 20] [--md out.md]
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

D_IN, HIDDEN, CLASSES, LR, MOMENTUM = 784, 100, 10, 0.1, 0.9


def _data(n: int, per_client: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, per_client, D_IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(n, per_client)).astype(np.int32)
    return x, y


def ours(honest: int, byz: int, batch: int, steps: int, per_client: int):
    """``steps`` rounds of the protocol's robust FedAvg: a callable running them, and its setup."""
    n = honest + byz
    x, y = _data(n, per_client)
    nd = rj.data.NodeData(jnp.asarray(x), jnp.asarray(y), jnp.full((n,), per_client, jnp.int32))
    model = rj.models.get("mlp", (D_IN,), CLASSES, hidden=(HIDDEN,))
    assert model.num_live == 79_510  # flax parameters; the row has model.pad dead zeros more (models._mlp_gemm)
    byzantine = np.zeros(n, bool)
    byzantine[honest:] = True
    opt = rj.optim.local_optimizer(
        "momentum", rj.core.hyper("optimizer.learning_rate", LR), momentum=rj.core.hyper("optimizer.momentum", MOMENTUM)
    )
    algo = rj.algorithms.dsgd.fedavg(opt)
    oracle = rj.oracles.minibatch(model, batch)
    rule = rj.aggregators.get("nnm+trimmed_mean")
    attack = rj.channels.vector_tamper(rj.attacks.get("alie"), "alie")
    channels = {"model": rj.channels.server(rule=rule, f=byz, byzantine=byzantine, attack=attack)}
    step = rj.round.make_step(algo, oracle, channels, honest=~byzantine)
    x0 = jnp.broadcast_to(model.init(jax.random.PRNGKey(0)), (n, model.num_params))
    state = rj.round.init_state(algo, oracle, channels, x0, jax.random.PRNGKey(1), honest=~byzantine)
    hp = {"optimizer.learning_rate": jnp.float32(LR), "optimizer.momentum": jnp.float32(MOMENTUM)}
    run = jax.jit(lambda s: rj.round.scan_rounds(step, s, nd, hp, jnp.int32(10**9), steps)[0])
    box = {"state": state}

    def go():
        box["state"] = run(box["state"])
        return box["state"]

    return go


def byzfl_loop(byzfl, torch, honest: int, byz: int, batch: int, steps: int, per_client: int):
    """``steps`` iterations of ByzFL's DSGD training loop (its benchmark/train.py, unrolled here)."""
    n = honest + byz
    x, y = _data(n, per_client)
    loaders = [
        torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.tensor(x[i]), torch.tensor(y[i], dtype=torch.long)),
            batch_size=batch,
            shuffle=True,
        )
        for i in range(honest)
    ]
    common = {
        "model_name": "fc_mnist",
        "device": "cpu",
        "learning_rate": LR,
        "weight_decay": 0.0,
        "milestones": [10**9],
        "learning_rate_decay": 1.0,
        "optimizer_name": "SGD",
    }
    clients = [
        byzfl.Client(
            {
                **common,
                "loss_name": "NLLLoss",
                "LabelFlipping": False,
                "nb_labels": CLASSES,
                "momentum": MOMENTUM,
                "training_dataloader": loaders[i],
                "store_per_client_metrics": False,
            }
        )
        for i in range(honest)
    ]
    attacker = byzfl.ByzantineClient({"name": "ALittleIsEnough", "f": byz, "parameters": {"tau": 1.5}})
    test = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(1, D_IN), torch.zeros(1, dtype=torch.long))
    )
    server = byzfl.Server(
        {
            **common,
            "test_loader": test,
            "aggregator_info": {"name": "TrMean", "parameters": {"f": byz}},
            "pre_agg_list": [{"name": "NNM", "parameters": {"f": byz}}],
        }
    )

    def go():
        for _ in range(steps):
            for c in clients:
                c.compute_gradients()
            grads = [c.get_flat_gradients_with_momentum() for c in clients]
            server.update_model_with_gradients(grads + attacker.apply_attack(grads))
            state = server.get_dict_parameters()
            for c in clients:
                c.set_model_state(state)
        return None

    return go


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10+3,48+16", help="honest+Byzantine client counts")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--md", default="")
    args = ap.parse_args(argv)
    byzfl = _peers.byzfl_or_none()
    torch = _peers.torch_or_none() if byzfl else None
    print(f"# {cpu_name()}, jax {jax.__version__}, {_peers.load_average()}")
    lines = [
        "| honest + Byzantine | redeem_jax honest client-steps/s | ByzFL honest client-steps/s | "
        "redeem_jax faster by |",
        "|---|---|---|---|",
    ]
    for size in args.sizes.split(","):
        h, b = (int(v) for v in size.split("+"))
        fns = {"ours": ours(h, b, args.batch, args.steps, 4 * args.batch)}
        if byzfl is not None:
            fns["byzfl"] = byzfl_loop(byzfl, torch, h, b, args.batch, args.steps, 4 * args.batch)
        ts = _peers.interleaved(fns, repeats=args.repeats)
        rate = lambda k: h * args.steps / _peers.spread(ts[k])[1]  # noqa: E731
        cell = _peers.ratio_cell(ts["byzfl"], ts["ours"]) if "byzfl" in ts else "–"
        peer = f"{rate('byzfl'):,.0f}" if "byzfl" in ts else "–"
        print(f"{h}+{b}: redeem_jax {rate('ours'):,.0f} honest client-steps/s, ByzFL {peer}, ratio {cell}", flush=True)
        lines.append(f"| {h} + {b} | {rate('ours'):,.0f} | {peer} | **{cell}** |")
    if args.md:
        Path(args.md).write_text(
            f"Command: `python benchmarks/federated_step.py --sizes {args.sizes} --batch "
            f"{args.batch} --steps {args.steps}`  \nMachine: {cpu_name()}, jax {jax.__version__}, "
            f"{_peers.load_average()}\n\n" + "\n".join(lines) + "\n"
        )
        print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
