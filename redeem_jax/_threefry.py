"""Threefry-2x32 on CPU as straight-line code: the same bits, an order of magnitude faster.

JAX lowers its default PRNG hash, Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror & Shaw
2011, "Parallel random numbers: as easy as 1, 2, 3", Sec. 3.2), on CPU as a 5-iteration while
loop (to keep programs small); every iteration reads and writes the whole counter array, so a
draw of 8·10⁶ uniforms took 58-76 ms on the development machine. Written out as the 20 rounds
it fuses into one elementwise pass: 6 ms for the same bits. Every round of a large network
draws that many numbers (per-node minibatch scores, DP noise on [N, d], random-k masks), so
:func:`install` registers this lowering for ``threefry2x32`` on the CPU platform through JAX's
public ``jax.interpreters.mlir.register_lowering``.

The bits are those of JAX's own lowering (tests check known-answer vectors of the paper and
equality with ``jax.random`` draws): no result changes. It applies to every program compiled in
this process after ``import redeem_jax``; ``REDEEM_JAX_THREEFRY=jax`` in the environment keeps
JAX's lowering.
"""

from __future__ import annotations

import os

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_MATERIALIZE_MIN = 4096  # draws of at least this many words get their own fused pass
_PARITY = 0x1BD11BDA

installed = False


def _rotl(v, r: int):
    import numpy as np

    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(k1, k2, x1, x2):
    """Threefry-2x32, 20 rounds (Salmon et al. 2011, Sec. 3.2; the key schedule injects
    (k1, k2, k1 ^ k2 ^ 0x1BD11BDA) every 4 rounds): ``(x1, x2) -> (y1, y2)``, uint32, elementwise
    with broadcasting."""
    import numpy as np  # here, not at import: ``import redeem_jax`` loads no numpy

    ks = (k1, k2, k1 ^ k2 ^ np.uint32(_PARITY))
    x1 = x1 + ks[0]
    x2 = x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = _rotl(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def install() -> bool:
    """Register :func:`threefry2x32` as the CPU lowering of JAX's ``threefry2x32`` primitive
    (once; not with ``REDEEM_JAX_THREEFRY=jax``). Returns whether it is installed."""
    global installed
    if installed:
        return True
    if os.environ.get("REDEEM_JAX_THREEFRY", "").strip().lower() in ("jax", "0", "off", "rolled"):
        return False
    try:
        import numpy as np
        from jax import lax
        from jax.extend.random import threefry2x32_p
        from jax.interpreters import mlir
    except ImportError:  # an older or newer JAX without these public names: keep its lowering
        return False

    def unrolled(k1, k2, x1, x2):
        y1, y2 = threefry2x32(k1, k2, x1, x2)
        if y1.size >= _MATERIALIZE_MIN:
            # The 20 rounds fused into a concatenation (JAX stacks the two words of split keys)
            # run as scalar code, 30x slower (226 ms for 10⁶ node keys): compute them in a loop
            # fusion of their own, as the operand of a conditional that XLA must materialize.
            # (A uint32 converted to float is always finite, which XLA does not fold away; the
            # other branch, never taken, differs so that the two are not merged.)
            first = lax.convert_element_type(y1.reshape(-1)[0], np.float32)
            y1, y2 = lax.cond(lax.is_finite(first), lambda t: t, lambda t: (t[0] ^ np.uint32(1), t[1]), (y1, y2))
        return [y1, y2]

    mlir.register_lowering(threefry2x32_p, mlir.lower_fun(unrolled, multiple_results=True), platform="cpu")
    installed = True
    return True
