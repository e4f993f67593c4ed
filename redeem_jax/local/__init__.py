"""What each node computes on its own: gradient oracles (minibatch, DP-SGD) and optimizers."""

from redeem_jax.local import optim, oracles  # noqa: F401
