"""DP-SGD at every node: D-SGD on digits over a 16-node ring, each node's data protected.

The config ships with the package as ``redeem_jax/configs/dp.py`` (run it by name:
``python -m redeem_jax --config dp``); this file keeps the checkout's path working.
"""

from redeem_jax.configs.dp import get_config  # noqa: F401
