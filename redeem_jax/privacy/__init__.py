"""Privacy: in-round mechanisms (DP-SGD at every node, central DP-FedAvg, secure aggregation)
and offline analysis (accounting through dp-accounting, exact network DP of gossip, the
reconstruction attack, audits and inference attacks, in ``rj.privacy.analysis``).

``rj.privacy.accounting``, ``network_dp``, ``audit``, ``reconstruction`` and ``inference`` are
the analysis modules re-exported here. The inference attacks (gradient inversion, membership
inference) were ``rj.privacy.attacks``: renamed so as not to collide with ``rj.attacks``, the
Byzantine attacks. Everything is imported on first use (dp-accounting alone takes 0.8 s)."""

from redeem_jax._lazy import lazy_package as _lazy_package

_ANALYSIS = ("accounting", "audit", "inference", "network_dp", "reconstruction")
_SUB = {
    **{k: f"redeem_jax.privacy.{k}" for k in ("central", "dp_sgd", "secure_agg", "analysis")},
    **{k: f"redeem_jax.privacy.analysis.{k}" for k in _ANALYSIS},
    "epsilon": "redeem_jax.privacy.analysis.accounting:epsilon",
    "noise_multiplier_for": "redeem_jax.privacy.analysis.accounting:noise_multiplier_for",
}
__getattr__, __dir__ = _lazy_package(__name__, _SUB, globals())
__all__ = sorted(_SUB)
