"""redeem_jax: resilient, decentralized and privacy-preserving machine learning in JAX."""
__version__ = "0.1.0"
