"""What each node computes on its own: gradient oracles (minibatch, DP-SGD) and optimizers."""

from redeem_jax._lazy import lazy_package as _lazy_package

_SUB = {k: f"redeem_jax.local.{k}" for k in ("optim", "oracles")}
__getattr__, __dir__ = _lazy_package(__name__, _SUB, globals())
__all__ = sorted(_SUB)
