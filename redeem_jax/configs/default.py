"""Default experiment: D-SGD on digits over a 16-node ring, 3 of whose nodes are Byzantine.

The three Byzantine nodes (ids 0, 1, 2: side by side, so that the 13 honest nodes stay one
connected path and every honest node keeps an honest neighbour; spread out, e.g. 0, 5, 10,
they would cut the ring into honest groups that reach each other only through attackers,
which the run warns about before it starts) run ALIE
(Baruch et al. 2019) with factor z = 5 on the models they gossip. Three runs share one plot:
plain gossip (aggregation.rule = "mean"), ClippedGossip (He, Karimireddy & Jaggi 2022), and
the same ring without attackers (the reference).

Run:      python -m redeem_jax --config default --workdir runs/default
          (or `make run`)
Expected: in about 30 s on 2 CPU cores: without attackers ~0.97 test accuracy; under attack
          plain gossip diverges (its loss becomes NaN) while ClippedGossip keeps ~0.97.
          runs/default/comparison.png, comparison.json, and one folder per run with
          metrics.jsonl, config.json, metrics.png, partition.png, checkpoints/.
"""

from redeem_jax.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.num_nodes = 16
    c.topology.name = "ring"
    c.data.name = "digits"
    c.data.partition = "iid"
    c.data.batch_size = 16
    c.model.name = "mlp"
    c.model.hidden = (64,)
    c.optimizer.name = "momentum"
    c.optimizer.learning_rate = 0.05
    c.optimizer.momentum = 0.9
    c.algorithm.name = "dsgd"
    c.algorithm.order = "atc"
    c.num_rounds = 300
    c.eval_every = 10
    c.checkpoint_every = 100

    c.byzantine.num = 3
    c.byzantine.placement = "given"
    c.byzantine.ids = (0, 1, 2)
    c.byzantine.attack = "alie"
    c.byzantine.strength = 5.0

    c.compare.key = "aggregation.rule"
    c.compare.choices = ("mean", "clipped_gossip")
    c.compare.reference = "byzantine.num=0"
    return c
