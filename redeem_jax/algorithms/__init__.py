"""Learning algorithms as pure round functions over the whole network."""

from redeem_jax.algorithms import dsgd
from redeem_jax.algorithms.dsgd import NetworkState, init_state, make_round

__all__ = ["dsgd", "NetworkState", "init_state", "make_round"]
