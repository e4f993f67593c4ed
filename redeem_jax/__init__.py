"""redeem_jax: resilient, decentralized and privacy-preserving machine learning in JAX.

A whole network of N nodes is a handful of arrays with a leading node axis; one round of the
whole network is one jitted pure function (DESIGN.md): an algorithm that calls a gradient
oracle and named channels, each an ``(init, update)`` pair (``rj.core``, ``rj.round``).

Layout: ``network/`` (topology, gossip, compress, sharding), ``local/`` (oracles, optim),
``privacy/`` (in-round mechanisms; ``privacy.analysis`` offline), ``byzantine/`` (placement,
attacks, aggregators, robust-gossip rules), ``channels``, ``algorithms/``, ``experiment/``
(config, build, loop, run, sweep). The stable public names ``rj.topology``, ``rj.gossip``,
``rj.aggregators``, ``rj.attacks``, ``rj.privacy``, ``rj.run``, ``rj.sweep`` re-export them.

Every submodule is imported on first use (PEP 562): ``import redeem_jax`` costs little more
than importing JAX, and a command pays only for what it touches (dp-accounting, pandas,
matplotlib, orbax, scipy's solvers are loaded by the functions that need them).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys as _sys

__version__ = "0.1.0"

# Two process-level performance settings, documented in docs/performance.md, each with an
# opt-out: freed host memory is kept for reuse, so that XLA's per-call temporaries do not
# page-fault afresh every round (``redeem_jax._memory``; ``REDEEM_JAX_MALLOC=0``), and JAX's
# Threefry hash is compiled on CPU as straight-line code, same bits, ~10x faster
# (``redeem_jax._threefry``; ``REDEEM_JAX_THREEFRY=jax``). The second needs JAX, which
# ``import redeem_jax`` does not load: it is installed by the modules that draw random numbers,
# and here if JAX is already loaded.
from redeem_jax import _memory, _threefry

_memory.tune()
if "jax" in _sys.modules:
    _threefry.install()

# public name -> module that defines it (a module itself, or "module:attribute")
_LAZY = {
    "core": "redeem_jax.core",
    "metrics": "redeem_jax.metrics",
    "round": "redeem_jax.round",
    "topology": "redeem_jax.network.topology",
    "gossip": "redeem_jax.network.gossip",
    "sharding": "redeem_jax.network.sharding",
    "compress": "redeem_jax.network.compress",
    "aggregators": "redeem_jax.byzantine.aggregators",
    "attacks": "redeem_jax.byzantine.attacks",
    "byzantine": "redeem_jax.byzantine",
    "optim": "redeem_jax.local.optim",
    "oracles": "redeem_jax.local.oracles",
    "channels": "redeem_jax.channels",
    "algorithms": "redeem_jax.algorithms",
    "config": "redeem_jax.experiment.config",
    "data": "redeem_jax.data",
    "distributed": "redeem_jax.distributed",
    "models": "redeem_jax.models",
    "plotting": "redeem_jax.plotting",
    "privacy": "redeem_jax.privacy",
    "theory": "redeem_jax.theory",
    "recommend": "redeem_jax.recommend",
    "detect": "redeem_jax.detect",
    "lora": "redeem_jax.lora",
    "experiment": "redeem_jax.experiment",
    "network": "redeem_jax.network",
    "local": "redeem_jax.local",
    "build": "redeem_jax.experiment.build:build",
    "Experiment": "redeem_jax.experiment.build:Experiment",
    "run": "redeem_jax.experiment.run:run",
    "RunResult": "redeem_jax.experiment.run:RunResult",
    "load_run": "redeem_jax.experiment.results:load_run",
    "configs": "redeem_jax.configs",
    "memory_report": "redeem_jax.experiment.memory:memory_report",
    "sweep": "redeem_jax.experiment.sweep:sweep",  # the function; the module is redeem_jax.sweep (the CLI)
}

# The first layout's module paths keep working (``from redeem_jax.topology import Topology``, ...):
# each is the real module, loaded when first used.
_ALIASES = {
    "topology": "redeem_jax.network.topology",
    "gossip": "redeem_jax.network.gossip",
    "sharding": "redeem_jax.network.sharding",
    "aggregators": "redeem_jax.byzantine.aggregators",
    "attacks": "redeem_jax.byzantine.attacks",
    "optim": "redeem_jax.local.optim",
    "config": "redeem_jax.experiment.config",
}


def _lazy_module(name: str):
    if name in _sys.modules:
        return _sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    _sys.modules[name] = module
    loader.exec_module(module)
    return module


for _old, _new in _ALIASES.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _lazy_module(_new))


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _threefry.install()
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr) if attr else importlib.import_module(module)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
