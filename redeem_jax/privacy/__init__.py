"""Privacy: DP-SGD inside the round, accounting through dp-accounting, exact network DP for
gossip, and secure aggregation (simulated)."""

from redeem_jax.privacy import accounting, attacks, central, dp_sgd, network_dp, secure_agg
from redeem_jax.privacy.accounting import epsilon, noise_multiplier_for

__all__ = ["accounting", "attacks", "central", "dp_sgd", "network_dp", "secure_agg", "epsilon", "noise_multiplier_for"]
