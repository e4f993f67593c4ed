"""A million nodes: linear regression over a 10^6-node ring, sparse gossip, on one CPU.

The config ships with the package as ``redeem_jax/configs/million.py`` (run it by name:
``python -m redeem_jax --config million``); this file keeps the checkout's path working.
"""

from redeem_jax.configs.million import get_config  # noqa: F401
