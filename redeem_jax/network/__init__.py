"""The network: topologies (this round's edges), gossip, compressors, sharding."""

from redeem_jax._lazy import lazy_package as _lazy_package

_SUB = {
    k: f"redeem_jax.network.{k}"
    for k in ("compress", "directed", "dynamic", "gossip", "random_graphs", "sharding", "topology", "unreliable")
}
__getattr__, __dir__ = _lazy_package(__name__, _SUB, globals())
__all__ = sorted(_SUB)
