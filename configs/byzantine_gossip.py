"""Robust gossip on a 4x4 torus with 3 Byzantine nodes: every decentralized rule, one attack.

The config ships with the package as ``redeem_jax/configs/byzantine_gossip.py`` (run it by name:
``python -m redeem_jax --config byzantine_gossip``); this file keeps the checkout's path working.
"""

from redeem_jax.configs.byzantine_gossip import get_config  # noqa: F401
