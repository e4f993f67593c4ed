"""The experiment layer, the only reader of configs: ``config`` (schema, validation),
``build`` (names → mechanisms, once), ``loop`` (the one host loop), ``run`` and ``sweep``."""

from redeem_jax._lazy import lazy_package as _lazy_package

_SUB = {k: f"redeem_jax.experiment.{k}" for k in ("build", "config", "loop", "run", "sweep")}
__getattr__, __dir__ = _lazy_package(__name__, _SUB, globals())
__all__ = sorted(_SUB)
