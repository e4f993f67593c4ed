"""redeem_jax: resilient, decentralized and privacy-preserving machine learning in JAX.

A whole network of N nodes is a handful of arrays with a leading node axis; one round of the
whole network is one jitted pure function (see DESIGN.md).
"""

from redeem_jax import (aggregators, algorithms, attacks, byzantine, config, data, distributed, gossip, models,
                        optim, plotting, privacy, sharding, theory, topology)
from redeem_jax.runner import RunResult, build, run
from redeem_jax.sweep import sweep  # the function; the module is redeem_jax.sweep (python -m redeem_jax.sweep)

__version__ = "0.1.0"

__all__ = ["aggregators", "algorithms", "attacks", "byzantine", "config", "data", "distributed", "gossip", "models",
           "optim", "plotting", "privacy", "sharding", "theory", "topology",
           "build", "run", "RunResult", "sweep"]
