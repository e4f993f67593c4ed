"""Privacy: in-round mechanisms (DP-SGD at every node, central DP-FedAvg, secure aggregation)
and offline analysis (accounting through dp-accounting, exact network DP of gossip, the
reconstruction attack, audits and inference attacks, in ``rj.privacy.analysis``).

``rj.privacy.accounting``, ``network_dp``, ``audit``, ``reconstruction`` and ``inference`` are
the analysis modules re-exported here. The inference attacks (gradient inversion, membership
inference) were ``rj.privacy.attacks``: renamed so as not to collide with ``rj.attacks``, the
Byzantine attacks."""

import sys as _sys

from redeem_jax.privacy import central, dp_sgd, secure_agg
from redeem_jax.privacy.analysis import accounting, audit, inference, network_dp, reconstruction
from redeem_jax.privacy.analysis.accounting import epsilon, noise_multiplier_for

# The analysis modules keep their import paths of the first layout (redeem_jax.privacy.accounting, ...).
for _m in (accounting, audit, network_dp, reconstruction):
    _sys.modules.setdefault(f"{__name__}.{_m.__name__.rsplit('.', 1)[-1]}", _m)

__all__ = ["accounting", "audit", "central", "dp_sgd", "inference", "network_dp", "reconstruction", "secure_agg",
           "epsilon", "noise_multiplier_for"]
