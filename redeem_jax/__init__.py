"""redeem_jax: resilient, decentralized and privacy-preserving machine learning in JAX.

A whole network of N nodes is a handful of arrays with a leading node axis; one round of the
whole network is one jitted pure function (DESIGN.md): an algorithm that calls a gradient
oracle and named channels, each an ``(init, update)`` pair (``rj.core``, ``rj.round``).

Layout: ``network/`` (topology, gossip, compress, sharding), ``local/`` (oracles, optim),
``privacy/`` (in-round mechanisms; ``privacy.analysis`` offline), ``byzantine/`` (placement,
attacks, aggregators, robust-gossip rules), ``channels``, ``algorithms/``, ``experiment/``
(config, build, loop, run, sweep). The stable public names ``rj.topology``, ``rj.gossip``,
``rj.aggregators``, ``rj.attacks``, ``rj.privacy``, ``rj.run``, ``rj.sweep`` re-export them.
"""

import sys as _sys

from redeem_jax import core, metrics, round  # noqa: A004  (the module of the one round)
from redeem_jax.network import compress, gossip, sharding, topology
from redeem_jax.byzantine import aggregators, attacks
from redeem_jax import byzantine
from redeem_jax.local import optim, oracles
from redeem_jax import channels, algorithms
from redeem_jax.experiment import config
from redeem_jax import data, distributed, models, plotting, privacy, theory
from redeem_jax.experiment.build import Experiment, build
from redeem_jax.experiment.run import RunResult, run
import redeem_jax.sweep  # noqa: E402,F401  the CLI module, imported first so that the name below stays the function
from redeem_jax.experiment.sweep import sweep  # the function; the module is redeem_jax.sweep (python -m redeem_jax.sweep)

# The first layout's module paths keep working (``from redeem_jax.topology import Topology``, ...).
for _old, _mod in {"topology": topology, "gossip": gossip, "sharding": sharding, "aggregators": aggregators,
                   "attacks": attacks, "optim": optim, "config": config}.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _mod)

__version__ = "0.1.0"

__all__ = ["aggregators", "algorithms", "attacks", "byzantine", "channels", "compress", "config", "core", "data",
           "distributed", "gossip", "metrics", "models", "optim", "oracles", "plotting", "privacy", "round",
           "sharding", "theory", "topology", "build", "run", "Experiment", "RunResult", "sweep"]
