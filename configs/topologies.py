"""Topology families compared: D-SGD on digits with Dirichlet(0.3) label skew, 16 nodes.

The config ships with the package as ``redeem_jax/configs/topologies.py`` (run it by name:
``python -m redeem_jax --config topologies``); this file keeps the checkout's path working.
"""

from redeem_jax.configs.topologies import get_config  # noqa: F401
