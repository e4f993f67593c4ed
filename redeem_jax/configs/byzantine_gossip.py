"""Robust gossip on a 4x4 torus with 3 Byzantine nodes: every decentralized rule, one attack.

Run:      python -m redeem_jax --config byzantine_gossip --workdir runs/byzantine_gossip/dissensus
          python -m redeem_jax --config byzantine_gossip --config.byzantine.attack=sign_flip \
              --workdir runs/byzantine_gossip/sign_flip
Expected: plain gossip ("mean") collapses under dissensus, sign flipping and ALIE with z = 5;
          ClippedGossip stays within a few points of the attack-free reference (~0.97).
          comparison.png / comparison.json in the workdir, one folder per rule.
"""

from redeem_jax.config import base_config


def get_config():
    c = base_config()
    c.num_nodes = 16
    c.topology.name = "torus"
    c.data.name = "digits"
    c.data.batch_size = 16
    c.model.hidden = (64,)
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    c.num_rounds = 200
    c.eval_every = 20
    c.checkpoint_every = 0
    c.byzantine.num = 3  # f = n/5 (rounded down)
    c.byzantine.placement = "random"
    c.byzantine.attack = "dissensus"
    c.compare.key = "aggregation.rule"
    c.compare.choices = ("mean", "clipped_gossip", "ios", "cs_plus", "trimmed_mean")
    c.compare.reference = "byzantine.num=0"
    return c
