"""A small, fast experiment config shared by the runner-level tests."""

import redeem_jax as rj

SMALL = {
    "num_nodes": 8, "data.name": "digits", "data.batch_size": 8, "model.hidden": (16,),
    "optimizer.name": "momentum", "optimizer.learning_rate": 0.05, "num_rounds": 25, "eval_every": 10,
    "checkpoint_every": 0, "progress": False, "plots": False,
}


def small_config(**overrides):
    """Digits on 8 nodes of a ring, 25 rounds, no checkpoints or plots; dotted keys override."""
    c = rj.config.base_config()
    for k, v in {**SMALL, **overrides}.items():
        rj.config.set_field(c, k, v)
    return c
