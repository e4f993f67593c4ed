"""A million nodes: linear regression over a 10^6-node ring, sparse gossip, on one CPU.

Every node holds 8 examples of a 10-dimensional least-squares problem and takes an SGD step
on 4 of them per round, then gossips with its two neighbours. About 420 bytes of arrays per
node (docs/performance.md, "Million-node networks"); the per-node test statistics are taken
over 1,000 evenly spaced nodes, because scoring 10^6 models costs more than the rounds.

Run:      python -m redeem_jax --config million --workdir runs/million
Expected: 10 rounds in about half a minute on 2 CPU cores, under 3 GiB peak memory.
"""

from redeem_jax.config import base_config


def get_config():
    c = base_config()
    c.num_nodes = 1_000_000
    c.topology.name = "ring"
    c.data.name = "linear"
    c.model.name = "linear"
    c.data.dim = 10
    c.data.num_examples = 10_000_000  # 8 train examples per node after the 20% test split
    c.data.batch_size = 4
    c.optimizer.learning_rate = 0.05
    c.num_rounds = 10
    c.eval_every = 10
    c.eval.max_nodes = 1000
    c.checkpoint_every = 0
    return c
