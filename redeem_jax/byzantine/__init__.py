"""Byzantine robustness: who is Byzantine (placement), what they send (attacks), how honest
nodes combine what they receive (aggregators, robust gossip rules).

``rj.byzantine.place``, ``byzantine_weight``, ``fiedler_vector``, ... are the placement helpers;
``rj.attacks`` and ``rj.aggregators`` are this package's ``attacks`` and ``aggregators``."""

from redeem_jax._lazy import lazy_package as _lazy_package

_PLACEMENT = (
    "place",
    "PLACEMENTS",
    "byzantine_weight",
    "honest_subgraph_weights",
    "honest_laplacian",
    "fiedler_vector",
)
_SUB = {
    **{k: f"redeem_jax.byzantine.{k}" for k in ("aggregators", "attacks", "placement", "rules")},
    **{k: f"redeem_jax.byzantine.placement:{k}" for k in _PLACEMENT},
}
__getattr__, __dir__ = _lazy_package(__name__, _SUB, globals())
__all__ = sorted(_SUB)
