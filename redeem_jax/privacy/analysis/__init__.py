"""Offline privacy analysis: accounting (dp-accounting), exact network DP of gossip, the
gossip reconstruction attack, canary audits and inference attacks (gradient inversion, membership).

Nothing here runs inside the round; the in-round mechanisms are ``rj.privacy.dp_sgd``,
``rj.privacy.central`` and ``rj.privacy.secure_agg``."""

from redeem_jax._lazy import lazy_package as _lazy_package

_SUB = {
    k: f"redeem_jax.privacy.analysis.{k}" for k in ("accounting", "audit", "inference", "network_dp", "reconstruction")
}
__getattr__, __dir__ = _lazy_package(__name__, _SUB, globals())
__all__ = sorted(_SUB)
