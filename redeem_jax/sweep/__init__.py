"""``rj.sweep`` and ``python -m redeem_jax.sweep``: see :mod:`redeem_jax.experiment.sweep`.

This module is also what ``rj.sweep`` names once it has been imported, so it is callable:
``rj.sweep(config, axes)`` runs :func:`redeem_jax.experiment.sweep.sweep`."""

import sys as _sys
import types as _types

from redeem_jax.experiment.sweep import *  # noqa: F401,F403
from redeem_jax.experiment.sweep import __all__, final, grid, plot_sweep, sweep, vmapped_axes  # noqa: F401


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return sweep(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
