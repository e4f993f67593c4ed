"""Offline privacy analysis: accounting (dp-accounting), exact network DP of gossip, the gossip
reconstruction attack, canary audits and inference attacks (gradient inversion, membership).

Nothing here runs inside the round; the in-round mechanisms are ``rj.privacy.dp_sgd``,
``rj.privacy.central`` and ``rj.privacy.secure_agg``."""

from redeem_jax.privacy.analysis import accounting, audit, inference, network_dp, reconstruction

__all__ = ["accounting", "audit", "inference", "network_dp", "reconstruction"]
