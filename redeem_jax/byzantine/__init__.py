"""Byzantine robustness: who is Byzantine (placement), what they send (attacks), how honest
nodes combine what they receive (aggregators, robust gossip rules).

``rj.byzantine.place``, ``byzantine_weight``, ``fiedler_vector``, ... are the placement helpers;
``rj.attacks`` and ``rj.aggregators`` are this package's ``attacks`` and ``aggregators``."""

from redeem_jax.byzantine import aggregators, attacks, placement, rules
from redeem_jax.byzantine.placement import *  # noqa: F401,F403  (the first layout's rj.byzantine API)
from redeem_jax.byzantine.placement import __all__ as _placement_all

__all__ = ["aggregators", "attacks", "placement", "rules", *_placement_all]
