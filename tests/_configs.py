"""A small, fast experiment config shared by the runner-level tests, and the experiment loader."""

import importlib.util
import pathlib

import redeem_jax as rj

ROOT = pathlib.Path(__file__).resolve().parents[1]

SMALL = {
    "num_nodes": 8,
    "data.name": "digits",
    "data.batch_size": 8,
    "model.hidden": (16,),
    "optimizer.name": "momentum",
    "optimizer.learning_rate": 0.05,
    "num_rounds": 25,
    "eval_every": 10,
    "checkpoint_every": 0,
    "progress": False,
    "plots": False,
}


def small_config(**overrides):
    """Digits on 8 nodes of a ring, 25 rounds, no checkpoints or plots; dotted keys override."""
    c = rj.config.base_config()
    for k, v in {**SMALL, **overrides}.items():
        rj.config.set_field(c, k, v)
    return c


def load_experiment(name: str):
    """``experiments/<name>.py`` as a module (the experiments are scripts, not a package)."""
    # A private module name: "network_dp" would read as the library's own module.
    spec = importlib.util.spec_from_file_location(f"_experiment_{name}", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
