"""A config made to be swept: D-SGD on digits over a 16-node exponential graph, 100 rounds.

The config ships with the package as ``redeem_jax/configs/sweep.py`` (run it by name:
``python -m redeem_jax --config sweep``); this file keeps the checkout's path working.
"""

from redeem_jax.configs.sweep import get_config  # noqa: F401
