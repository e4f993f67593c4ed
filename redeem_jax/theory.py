"""Closed forms that experiments draw beside the measured curves.

Gossip: consensus rates of graph families. Byzantine robustness: the (f, κ)-robustness
coefficients of aggregation rules and the breakdown point under heterogeneity.

``rho = ||W - 11^T/n||_2`` is the per-step contraction of gossip on the
disagreement; the spectral gap is ``1 - rho`` (Koloskova et al. 2020 use
``p = 1 - rho^2``). The closed forms below are for Metropolis–Hastings weights
(Xiao & Boyd 2004), which on a ``k``-regular graph are ``1/(k+1)`` per edge,
and for the exponential graphs of Ying et al. (2021).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "rho_ring", "rho_torus", "rho_hypercube", "rho_exponential", "rho_complete",
    "spectral_gap", "consensus_bound", "one_peer_exact_rounds", "rho",
    "kappa_lower_bound", "kappa_bound", "breakdown_point", "robust_error_lower_bound",
]


def rho_ring(n: int) -> float:
    """Ring C_n with MH weights 1/3: ``rho = 1/3 + (2/3) cos(2 pi / n)`` for ``n >= 3``.

    W is circulant with eigenvalues ``1/3 + (2/3) cos(2 pi k / n)`` (Xiao & Boyd
    2004); the largest
    magnitude off ``k = 0`` is at ``k = 1``. ``n = 1, 2`` give exact averaging
    (``rho = 0``). n = 8, 16, 32: 0.804738, 0.949253, 0.987190.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"rho_ring: n must be >= 1, got {n}")
    if n <= 2:
        return 0.0
    return 1.0 / 3.0 + (2.0 / 3.0) * math.cos(2.0 * math.pi / n)


def rho_torus(m: int) -> float:
    """``m x m`` torus with MH weights 1/5: ``rho = 3/5 + (2/5) cos(2 pi / m)`` (``m >= 3``).

    W is a Kronecker sum of two ring Laplacians; eigenvalues
    ``1/5 + (2/5)(cos(2 pi a/m) + cos(2 pi b/m))`` (Xiao & Boyd 2004); the
    largest magnitude off ``(0, 0)`` is at ``(1, 0)`` (ties ``-3/5`` at m = 4).
    """
    m = int(m)
    if m < 3:
        raise ValueError(f"rho_torus: needs m >= 3, got {m}")
    return 3.0 / 5.0 + (2.0 / 5.0) * math.cos(2.0 * math.pi / m)


def rho_hypercube(k: int) -> float:
    """Hypercube of dimension ``k`` (``n = 2^k``) with MH weights ``1/(k+1)``: ``(k-1)/(k+1)``.

    Eigenvalues ``1 - 2j/(k+1)``, ``j = 0..k`` (Xiao & Boyd 2004); ``j = 1`` and
    ``j = k`` tie in magnitude. Note: takes the dimension, while
    ``topology.hypercube`` takes the node count.
    """
    k = int(k)
    if k < 0:
        raise ValueError(f"rho_hypercube: dimension must be >= 0, got {k}")
    if k == 0:
        return 0.0
    return (k - 1.0) / (k + 1.0)


def rho_exponential(n: int) -> float:
    """Static exponential graph, weights ``1/(tau+1)``: ``rho = 1 - 2/(1 + tau)``, ``tau = ceil(log2 n)``.

    Ying et al. (2021) state it for ``n`` a power of 2. Checked
    numerically here (FFT of the circulant W, all n <= 2048): exact for every
    even ``n`` (the eigenvalue at frequency ``n/2`` is ``(tau-1)/(tau+1)``), and
    only an upper bound for odd ``n`` (e.g. n = 3: 0, n = 5: 0.25 vs 0.5).
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"rho_exponential: n must be >= 1, got {n}")
    if n <= 2:
        return 0.0
    tau = math.ceil(math.log2(n))
    return 1.0 - 2.0 / (1.0 + tau)


def rho_complete(n: int) -> float:
    """Complete graph with MH weights ``1/n``: ``W = 11^T/n``, so ``rho = 0`` (Xiao & Boyd 2004)."""
    if int(n) < 1:
        raise ValueError(f"rho_complete: n must be >= 1, got {n}")
    return 0.0


def spectral_gap(rho: float) -> float:
    """``1 - rho`` (Koloskova et al. 2020 use ``p = 1 - rho^2`` instead)."""
    return 1.0 - float(rho)


def consensus_bound(rho, t, initial):
    """Bound on ``(1/n) sum_i ||x_i(t) - xbar||^2`` after ``t`` gossip steps: ``rho^(2t) * initial``.

    Each step maps the disagreement ``X - Xbar`` by ``W - J`` whose norm is
    ``rho`` (Xiao & Boyd 2004; Koloskova et al. 2020, consensus rate with
    ``1 - p = rho^2``). Works elementwise on numpy arrays of ``t``.
    """
    return np.power(rho, 2.0 * np.asarray(t, dtype=np.float64)) * initial


def one_peer_exact_rounds(n: int) -> int:
    """Rounds for one-peer exponential gossip to reach the exact average: ``log2 n`` (n = 2^k).

    Ying et al. (2021), periodic exact averaging: the product of ``tau = log2 n`` consecutive
    one-peer matrices is ``11^T/n``. For other ``n`` it never is exact: raises.
    """
    n = int(n)
    if n < 1 or n & (n - 1):
        raise ValueError(f"one_peer_exact_rounds: exact averaging needs n a power of 2, got {n}")
    return n.bit_length() - 1


def rho(topology) -> float:
    """``rho`` of a :class:`~redeem_jax.topology.Topology` from its family's closed form.

    Ring, torus (square), hypercube, exponential, complete (MH / paper
    weights), and one-peer exponential with ``n`` a power of 2 (0 per round:
    exact after a period). Other families and non-default weights fall back to
    the numerical value (``topology.effective_rho()``, per round over a period).
    """
    name, n = topology.name, topology.n
    p = topology.params
    # Closed forms assume the default weights: verify the graph matches before using them.
    if name == "ring" and n >= 3 and _uniform_offdiag(topology, 1 / 3):
        return rho_ring(n)
    if name == "torus" and p.get("rows") == p.get("cols") and _uniform_offdiag(topology, 1 / 5):
        return rho_torus(p["rows"])
    if name == "hypercube" and _uniform_offdiag(topology, 1 / (p.get("dim", 0) + 1)):
        return rho_hypercube(p["dim"])
    if name == "exponential" and n % 2 == 0 and _uniform_offdiag(topology, 1 / (p["tau"] + 1)):
        return rho_exponential(n)
    if name == "complete" and _uniform_offdiag(topology, 1 / n):
        return rho_complete(n)
    if name == "one_peer_exponential" and n & (n - 1) == 0 and _uniform_offdiag(topology, 0.5):
        return 0.0
    return topology.effective_rho()


def _uniform_offdiag(topology, value: float) -> bool:
    w = topology.weights[topology.edge_mask]
    return w.size == 0 or bool(np.allclose(w, value, rtol=0, atol=1e-6))


# --------------------------------------------------------------------------- #
# Byzantine robustness
# --------------------------------------------------------------------------- #
def kappa_lower_bound(n: int, f: int) -> float:
    """Universal lower bound κ ≥ f/(n − 2f) on any (f, κ)-robust rule (Allouah et al. 2023,
    "Fixing by mixing", Prop. 6): n − 2f rows at 0, f at u and f at −u cannot be told apart
    from either labelling of who is honest."""
    if n <= 2 * f:
        return math.inf
    return f / (n - 2 * f)


def kappa_bound(name: str, n: int, f: int):
    """Known upper bound on the (f, κ)-robustness coefficient of rule ``name`` (Allouah et al.
    2023, "Fixing by mixing", Table 1 and Thm. 1; constants as in the field notes, marked
    (verify) there): trimmed_mean 6f(n−f)/(n−2f)²; median and geometric_median 4((n−f)/(n−2f))²;
    krum 6(n−f)/(n−2f); mean 0 if f = 0 else ∞; "nnm+F": 8f/(n−f)·(κ_F + 1). ``None`` where no
    bound is recorded (multi_krum, bulyan, centered_clipping, mda, meamed, monna, caf, smea,
    other compositions)."""
    stages = [s.strip() for s in name.split("+") if s.strip()]
    if n <= 2 * f:
        return math.inf
    if len(stages) == 2 and stages[0] == "nnm":
        inner = kappa_bound(stages[1], n, f)
        return None if inner is None else 8 * f / (n - f) * (inner + 1)
    if len(stages) != 1:
        return None
    st, r = stages[0], (n - f) / (n - 2 * f)
    if st == "mean":
        return 0.0 if f == 0 else math.inf
    if st == "trimmed_mean":
        return 6 * f * (n - f) / (n - 2 * f) ** 2
    if st in ("median", "geometric_median"):
        return 4 * r * r
    if st == "krum":
        return 6 * r
    return None


def breakdown_point(B: float) -> float:
    """Largest Byzantine fraction f/n any rule can tolerate under (G, B)-gradient dissimilarity:
    1/(2 + B²) (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot & Stephan, NeurIPS 2023,
    "Robust distributed learning: tight error bounds and breakdown point under data
    heterogeneity"). B = 0 recovers the homogeneous 1/2."""
    if B < 0:
        raise ValueError(f"B must be >= 0, got {B}")
    return 1.0 / (2.0 + B * B)


def robust_error_lower_bound(n: int, f: int, G: float, B: float) -> float:
    """Lower bound on the optimisation error any robust method reaches under (G, B)-gradient
    dissimilarity: f/(n − (2 + B²)f) · G² (Allouah et al. NeurIPS 2023, Thm. 1 (verify)); ∞ at or
    beyond the breakdown point."""
    denom = n - (2.0 + B * B) * f
    return math.inf if denom <= 0 else f / denom * G * G
