"""Privacy: DP-SGD inside the round, accounting through dp-accounting, exact network DP for
gossip, secure aggregation (simulated), and the attacks and audits that test them."""

from redeem_jax.privacy import accounting, attacks, audit, central, dp_sgd, network_dp, reconstruction, secure_agg
from redeem_jax.privacy.accounting import epsilon, noise_multiplier_for

__all__ = ["accounting", "attacks", "audit", "central", "dp_sgd", "network_dp", "reconstruction", "secure_agg", "epsilon", "noise_multiplier_for"]
