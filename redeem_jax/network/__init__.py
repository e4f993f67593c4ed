"""The network: topologies (this round's edges), gossip, compressors, sharding."""

from redeem_jax.network import compress, gossip, sharding, topology  # noqa: F401
