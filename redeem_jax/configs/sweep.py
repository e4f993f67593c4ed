"""A config made to be swept: D-SGD on digits over a 16-node exponential graph, 100 rounds.

Run:      python -m redeem_jax.sweep --config sweep \
              --sweep.seed=0,1,2,3,4,5,6,7 --sweep.optimizer.learning_rate=0.01,0.03,0.1,0.3
          (32 runs, one compiled program; outputs in runs/sweep_sweep/)
Also:     --sweep.topology.name=ring,exponential (a shape-changing axis: one program each),
          --config.privacy.mode=dp_sgd --sweep.privacy.target_epsilon=1,2,4,8.
"""

from redeem_jax.config import base_config


def get_config():
    c = base_config()
    c.num_nodes = 16
    c.topology.name = "exponential"
    c.data.name = "digits"
    c.data.batch_size = 16
    c.model.name = "mlp"
    c.model.hidden = (32,)
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    c.num_rounds = 100
    c.eval_every = 20
    c.checkpoint_every = 20
    return c
