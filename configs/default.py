"""Default experiment: D-SGD on digits over a 16-node ring, 3 of whose nodes are Byzantine.

The config ships with the package as ``redeem_jax/configs/default.py`` (run it by name:
``python -m redeem_jax --config default``); this file keeps the checkout's path working.
"""

from redeem_jax.configs.default import get_config  # noqa: F401
