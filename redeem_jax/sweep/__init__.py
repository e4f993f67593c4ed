"""``rj.sweep`` and ``python -m redeem_jax.sweep``: see :mod:`redeem_jax.experiment.sweep`."""

from redeem_jax.experiment.sweep import *  # noqa: F401,F403
from redeem_jax.experiment.sweep import __all__, final, grid, plot_sweep, sweep, vmapped_axes  # noqa: F401
