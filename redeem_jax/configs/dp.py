"""DP-SGD at every node: D-SGD on digits over a 16-node ring, each node's data protected.

Every node clips each example's gradient to norm 1 and adds Gaussian noise calibrated so
that, after 300 rounds with Poisson sampling at rate 0.2, every node's own data is
(ε = 4, δ = 1e-5)-DP against anyone who sees its messages (RDP accounting through
dp-accounting).

Run:      python -m redeem_jax --config dp --workdir runs/dp
Expected: about 0.82 test accuracy (0.97 without DP) at ε = 4.00, σ = 4.15, in about 10 s on
          2 CPU cores; metrics.jsonl has an "epsilon" column (ε spent so far).
"""

from redeem_jax.config import base_config


def get_config():
    c = base_config()
    c.num_nodes = 16
    c.topology.name = "ring"
    c.data.name = "digits"
    c.data.batch_size = 16
    c.model.name = "mlp"
    c.model.hidden = (64,)
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.02
    c.num_rounds = 300
    c.eval_every = 10
    c.checkpoint_every = 100
    c.privacy.mode = "dp_sgd"
    c.privacy.clip_norm = 1.0
    c.privacy.target_epsilon = 4.0
    c.privacy.delta = 1e-5
    c.privacy.sampling = "poisson"
    c.privacy.sample_rate = 0.2
    return c
