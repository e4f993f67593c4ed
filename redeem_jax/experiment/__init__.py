"""The experiment layer, the only reader of configs: ``config`` (schema, validation),
``build`` (names → mechanisms, once), ``loop`` (the one host loop), ``run`` and ``sweep``."""

from redeem_jax.experiment import build, config, loop, run, sweep  # noqa: F401
