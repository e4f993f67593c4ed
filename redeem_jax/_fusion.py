"""Control over XLA's CPU fusion where it matters for speed: compute a value once, in a loop
fusion of its own.

XLA fuses elementwise producers into their consumers. Two consumers make that slow: one that
broadcasts the value (a sorting network's median fused into ``x - median`` is recomputed for
every row: 270 ms instead of 10 ms at n = 64, d = 1e5), and a concatenation, whose fused
emitter picks an operand per element and runs as scalar code (a sorting network of minibatch
indices fused into ``jnp.stack`` ran 28 ms instead of a few). ``optimization_barrier`` does not
stop either on CPU; the operand of a conditional is always materialized, and only one branch
runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _predicate(leaf):
    """A runtime-true predicate XLA cannot fold: ``v == v`` for floats (false only at NaN, where
    the other branch is the identity too), ``isfinite(float(v))`` for integers (always true)."""
    first = jnp.ravel(leaf)[0]
    if jnp.issubdtype(leaf.dtype, jnp.floating):
        return first == first
    return lax.is_finite(lax.convert_element_type(first, np.float32))


def _other(leaf):
    # The branch for a NaN first element: the identity again, written so that XLA does not merge
    # the two branches (x + 0 is not x for x = -0.0, so it is not simplified away).
    if jnp.issubdtype(leaf.dtype, jnp.floating):
        return leaf + jnp.zeros((), leaf.dtype)
    return leaf ^ jnp.ones((), leaf.dtype)  # never taken: integers always pass the predicate


@jax.custom_jvp
@jax.custom_batching.custom_vmap
def materialize(tree):
    """``tree`` unchanged, each leaf computed into a buffer of its own before any consumer reads
    it (the operand of a conditional). Under ``vmap`` the batching rule materializes the whole
    batched leaves with an unbatched predicate (a batched one would turn the conditional into a
    ``select`` XLA fuses away); the JVP is the identity."""
    leaves = jax.tree.leaves(tree)
    big = [v for v in leaves if v.size]
    if not big:
        return tree
    return lax.cond(_predicate(big[0]), lambda t: t, lambda t: jax.tree.map(_other, t), tree)


@materialize.def_vmap
def _materialize_vmap(axis_size, in_batched, tree):
    return materialize(tree), in_batched[0]


@materialize.defjvp
def _materialize_jvp(primals, tangents):
    return materialize(primals[0]), tangents[0]
