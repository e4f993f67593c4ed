"""Topology families compared: D-SGD on digits with Dirichlet(0.3) label skew, 16 nodes.

Run:      python -m redeem_jax --config topologies --workdir runs/topologies
Expected: one folder per family and runs/topologies/comparison.png. Better-connected graphs
          (complete, exponential, hypercube) keep the nodes closer (smaller consensus
          distance) and reach a given accuracy sooner than the ring and path.
"""

from redeem_jax.config import base_config


def get_config():
    c = base_config()
    c.num_nodes = 16
    c.data.name = "digits"
    c.data.partition = "dirichlet"
    c.data.alpha = 0.3
    c.data.batch_size = 16
    c.model.name = "mlp"
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    c.num_rounds = 200
    c.eval_every = 10
    c.checkpoint_every = 0
    c.compare.key = "topology.name"
    c.compare.choices = ("path", "ring", "torus", "hypercube", "exponential", "one_peer_exponential", "complete")
    return c
