"""Closed forms that experiments draw beside the measured curves.

Gossip: consensus rates of graph families. Byzantine robustness: the (f, κ)-robustness
coefficients of aggregation rules and the breakdown point under heterogeneity.

``rho = ||W - 11^T/n||_2`` is the per-step contraction of gossip on the
disagreement; the spectral gap is ``1 - rho`` (Koloskova et al. 2020 use
``p = 1 - rho^2``). The closed forms below are for Metropolis–Hastings weights
(Xiao & Boyd 2004), which on a ``k``-regular graph are ``1/(k+1)`` per edge,
and for the exponential graphs of Ying et al. (2021).

Algorithms on quadratics (host-side numpy, dense ``W``): the constant-step
D-SGD fixed point and its consensus bias on ``f_i = (mu_i/2)||x - b_i||^2``
(CTA and ATC); linear rates of D-SGD, DIGing (CTA/ATC gradient tracking),
exact diffusion and D^2 from the spectrum of their error iteration, per
eigenmode of ``W`` (equal curvatures) or from the full ``2n x 2n`` map
(``iteration_matrix`` / ``linear_rate``, any curvatures); and the Choco-Gossip
constants (eigengap ``delta``, ``beta = ||I - W||_2``, theoretical consensus
step ``gamma*``) with the exact identity-compressor contraction.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "rho_ring",
    "rho_torus",
    "rho_hypercube",
    "rho_exponential",
    "rho_complete",
    "spectral_gap",
    "consensus_bound",
    "one_peer_exact_rounds",
    "rho",
    "kappa_lower_bound",
    "kappa_bound",
    "KAPPA_SOURCES",
    "kappa_bounds",
    "breakdown_point",
    "robust_error_lower_bound",
    "dsgd_fixed_point",
    "dsgd_consensus_bias",
    "dsgd_mode_shrink",
    "dsgd_rate",
    "diging_rate",
    "exact_diffusion_rate",
    "d2_rate",
    "iteration_matrix",
    "linear_rate",
    "choco_constants",
    "choco_identity_rate",
    "mean_square_contraction",
    "expected_mixing_matrix",
    "ditto_mse",
    "ditto_optimal_lambda",
    "dsgd_noise_average_variance",
    "dsgd_noise_consensus_distance",
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


# Every published upper bound on κ recorded here, keyed by source: what it is, where, and whether
# it is proven for the rules as this library implements them. ``value`` is None where the source
# is known to give a constant that was not available to check (so it is named, never drawn).
KAPPA_SOURCES = {
    "allouah2023": dict(
        label="Allouah et al. 2023",
        cite='Allouah, Farhadkhani, Guerraoui, Gupta, Pinot & Stephan, "Fixing by Mixing: A Recipe '
        'for Optimal Byzantine ML under Heterogeneity", AISTATS 2023 (PMLR 206), Table 1 and the '
        "NNM lemma",
        status="proven",
        hypotheses="n > 2f, any inputs, any honest set of n − f rows (and each rule's own "
        "precondition, e.g. n ≥ 2f + 3 for Krum); constants as recorded in the field notes, where "
        "they are marked (verify): the paper's text was not reachable from here to re-check them",
        rules=("trimmed_mean", "median", "geometric_median", "krum", "nnm+<one of these>"),
    ),
    "bareilles2026": dict(
        label="Bareilles et al. 2026",
        cite='Bareilles, Bouaziz, Fageot & El Mhamdi, "Byzantine Machine Learning: MultiKrum and an '
        'optimal notion of robustness", arXiv:2602.03899 (Feb. 2026)',
        status="not recorded",
        hypotheses="states an improved upper bound on Krum's κ (and the first for MultiKrum) via its "
        "optimal coefficient κ*; only the abstract was reachable from here, so its constant and "
        "hypotheses are unchecked and nothing is drawn for it",
        rules=("krum", "multi_krum"),
    ),
}


def kappa_bounds(name: str, n: int, f: int) -> dict:
    """Every recorded upper bound on the (f, κ)-robustness coefficient of rule ``name``, as
    ``{source: value}`` with the sources of ``KAPPA_SOURCES`` that give a checked constant.

    * ``"allouah2023"`` (Allouah et al. 2023, "Fixing by Mixing", Table 1; NNM lemma for
      "nnm+F"): **proven** for n > 2f, the constants of ``kappa_bound`` (its default).
    * Krum has a second, later bound (Bareilles, Bouaziz, Fageot & El Mhamdi 2026,
      arXiv:2602.03899, stated as an improvement of Allouah et al.'s); its constant could not be
      read here, so it is named in ``KAPPA_SOURCES`` with ``status="not recorded"`` and left out.
      For the trimmed mean, median, geometric median and NNM ∘ F no second published constant was
      found; none is invented.

    Empty where no bound is recorded (e.g. MeaMed, centered clipping)."""
    out = {}
    b = kappa_bound(name, n, f)
    if b is not None:
        out["allouah2023"] = float(b)
    return out


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


# --------------------------------------------------------------------------- #
# Algorithms on quadratics: D-SGD bias, exact methods' linear rates, Choco
# --------------------------------------------------------------------------- #
# All of these take a dense numpy mixing matrix W [n, n] (doubly stochastic;
# symmetric unless said otherwise) and the quadratics f_i(x) = (mu_i/2)||x - b_i||^2,
# whose gradients G(X) = M(X - B), M = diag(mu), act on every coordinate alike, so
# a d-dimensional problem is d copies of the scalar one and rates do not depend on d.
_ORDERS = ("cta", "atc")


def _check_order(order: str) -> str:
    order = str(order).lower()
    if order not in _ORDERS:
        raise ValueError(f"order must be 'cta' or 'atc', got {order!r}")
    return order


def _as_w(W) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square [n, n] matrix, got shape {W.shape}")
    return W


def _is_symmetric(W: np.ndarray) -> bool:
    return bool(np.allclose(W, W.T, rtol=0, atol=1e-12))


def _disagreement_eigs(W: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``W`` on ``1^perp`` (all but the consensus eigenvalue 1).

    For doubly stochastic ``W`` both ``1`` and ``1^perp`` are invariant, so with
    ``U`` an orthonormal basis of ``1^perp`` these are the eigenvalues of
    ``U^T W U``. Real (``eigvalsh``) for symmetric ``W``, complex otherwise. A
    disconnected graph shows up as an extra eigenvalue 1 here.
    """
    n = W.shape[0]
    if n == 1:
        return np.zeros(0)
    ones = np.ones((n, 1)) / math.sqrt(n)
    q, _ = np.linalg.qr(np.hstack([ones, np.eye(n)[:, : n - 1]]))
    u = q[:, 1:]
    r = u.T @ W @ u
    return np.linalg.eigvalsh(0.5 * (r + r.T)) if _is_symmetric(W) else np.linalg.eigvals(r)


def _radius_2x2(a, b, c, d) -> np.ndarray:
    """Spectral radius of the 2x2 matrices [[a, b], [c, d]] (broadcast, complex-safe)."""
    a, b, c, d = np.broadcast_arrays(*(np.asarray(v, dtype=np.complex128) for v in (a, b, c, d)))
    tr, det = a + d, a * d - b * c
    disc = np.sqrt(tr * tr - 4.0 * det)
    return np.maximum(np.abs(0.5 * (tr + disc)), np.abs(0.5 * (tr - disc)))


def _curvatures(mu, n: int) -> np.ndarray:
    m = np.broadcast_to(np.asarray(mu, dtype=np.float64), (n,)).copy()
    if np.any(m < 0):
        raise ValueError("curvatures must be >= 0")
    return m


def dsgd_fixed_point(W, b, step: float, order: str = "cta", curvature=None) -> np.ndarray:
    """Fixed point of constant-step D-SGD on ``f_i = (mu_i/2)||x - b_i||^2`` (same shape as ``b``).

    Setting of Yuan, Ling & Yin (2016), "On the convergence of decentralized
    gradient descent" (SIAM J. Optim.; the CTA iteration ``x+ = Wx - alpha grad``)
    and of the ATC / diffusion form (Chen & Sayed 2012); the closed forms below
    are derived here, not quoted (equation numbers of those papers not checked). With ``M = diag(mu)``
    (``curvature=None`` means ``mu = 1``), ``G(X) = M(X - B)``:

    * CTA ``X+ = WX - alpha G(X)``: ``X = WX - alpha M X + alpha M B``, so
      ``(I - W + alpha M) X = alpha M B``; for ``M = I``:
      ``X = alpha (alpha I + I - W)^{-1} B``.
    * ATC ``X+ = W(X - alpha G(X))``: ``X = W(I - alpha M)X + alpha W M B``, so
      ``(I - W(I - alpha M)) X = alpha W M B``; for ``M = I``:
      ``X = alpha (I - (1 - alpha) W)^{-1} W B`` (the inverse commutes with W).

    Both systems are non-singular for symmetric ``W`` with ``lambda(W) in (-1, 1]``,
    a connected graph and some ``mu_i > 0`` (CTA: ``I - W`` is PSD with kernel
    ``1``, and ``1^T M 1 > 0``; ATC for ``alpha mu_i < 1``). Multiplying by
    ``1^T`` (doubly stochastic W) gives ``sum_i mu_i x_i = sum_i mu_i b_i`` in
    both orders: the curvature-weighted mean of the fixed point is exact, so
    for equal curvatures ``mean(x) = mean(b)`` exactly.
    """
    W = _as_w(W)
    order = _check_order(order)
    b = np.asarray(b, dtype=np.float64)
    n = W.shape[0]
    if b.shape[0] != n:
        raise ValueError(f"b must have n = {n} rows, got shape {b.shape}")
    bb = b.reshape(n, -1)
    alpha = float(step)
    m = np.ones(n) if curvature is None else _curvatures(curvature, n)
    eye = np.eye(n)
    if order == "cta":
        x = np.linalg.solve(eye - W + alpha * np.diag(m), alpha * m[:, None] * bb)
    else:
        x = np.linalg.solve(eye - W @ np.diag(1.0 - alpha * m), alpha * (W @ (m[:, None] * bb)))
    return x.reshape(b.shape)


def dsgd_consensus_bias(W, b, step: float, order: str = "cta", curvature=None) -> dict:
    """How far the constant-step D-SGD fixed point sits from the optimum (see :func:`dsgd_fixed_point`).

    ``x* = argmin sum_i f_i = sum_i mu_i b_i / sum_i mu_i`` (the plain mean of
    ``b`` for equal curvatures). Returns ``fixed_point`` ``[n, ...]``, ``optimum``,
    ``mean_error = ||mean_i x_i - x*||`` (0 for equal curvatures, non-zero in
    general otherwise), ``weighted_mean_error = ||sum mu_i x_i / sum mu_i - x*||``
    (0 always, up to rounding), ``consensus_error = (1/n) sum_i ||x_i - xbar||^2``
    and ``distance_to_optimum = (1/n) sum_i ||x_i - x*||^2``. For ``M = I`` the
    disagreement of eigenmode ``lambda`` is ``alpha/(alpha + 1 - lambda)``
    (CTA) times that of ``b`` (:func:`dsgd_mode_shrink`), so
    ``sqrt(consensus_error)`` is ``O(alpha / (1 - lambda_2))`` (the
    O(alpha/gap) neighbourhood of Yuan, Ling & Yin 2016).
    """
    W = _as_w(W)
    b = np.asarray(b, dtype=np.float64)
    n = W.shape[0]
    m = np.ones(n) if curvature is None else _curvatures(curvature, n)
    x = dsgd_fixed_point(W, b, step, order, curvature)
    xx, bb = x.reshape(n, -1), b.reshape(n, -1)
    opt = (m[:, None] * bb).sum(0) / m.sum()
    xbar = xx.mean(0)
    xw = (m[:, None] * xx).sum(0) / m.sum()
    shape = b.shape[1:]
    return {
        "fixed_point": x,
        "optimum": opt.reshape(shape),
        "mean_error": float(np.linalg.norm(xbar - opt)),
        "weighted_mean_error": float(np.linalg.norm(xw - opt)),
        "consensus_error": float(np.mean(np.sum((xx - xbar) ** 2, axis=1))),
        "distance_to_optimum": float(np.mean(np.sum((xx - opt) ** 2, axis=1))),
    }


def dsgd_mode_shrink(lam, step: float, order: str = "cta", mu: float = 1.0):
    """Per-eigenmode gain of the D-SGD fixed point: ``x_hat(lambda) = s(lambda) b_hat(lambda)``.

    Diagonalise :func:`dsgd_fixed_point` for equal curvature ``mu`` in the
    eigenbasis of symmetric ``W``: CTA ``s = alpha mu / (alpha mu + 1 - lambda)``,
    ATC ``s = alpha mu lambda / (1 - (1 - alpha mu) lambda)`` (``mu = 1``:
    ``alpha/(alpha + 1 - lambda)`` and ``alpha lambda/(1 - (1 - alpha) lambda)``).
    ``s(1) = 1`` (the mean is kept); ``s ~ alpha mu / (1 - lambda)`` for small
    ``alpha`` on the other modes (the consensus bias is linear in ``alpha``).
    Works elementwise on arrays of ``lam``.
    """
    order = _check_order(order)
    lam = np.asarray(lam, dtype=np.float64)
    c = float(step) * float(mu)
    if order == "cta":
        return c / (c + 1.0 - lam)
    return c * lam / (1.0 - (1.0 - c) * lam)


def dsgd_rate(W, step: float, mu: float = 1.0, order: str = "cta") -> float:
    """Linear rate of constant-step D-SGD to its own (biased) fixed point, equal curvature ``mu``.

    The error ``E = X - X_inf`` obeys CTA ``E+ = (W - alpha mu I) E`` and ATC
    ``E+ = (1 - alpha mu) W E`` (``B`` cancels), so the rate is
    ``max_lambda |lambda - alpha mu|`` (CTA) and ``max_lambda |lambda| |1 - alpha mu|``
    (ATC; ``= |1 - alpha mu|`` for doubly stochastic W) over all eigenvalues of
    ``W`` (Yuan, Ling & Yin 2016 for CTA). Holds for any square ``W``
    (complex eigenvalues allowed).
    """
    W = _as_w(W)
    order = _check_order(order)
    lam = np.linalg.eigvalsh(W) if _is_symmetric(W) else np.linalg.eigvals(W)
    c = float(step) * float(mu)
    if order == "cta":
        return float(np.max(np.abs(lam - c)))
    return float(np.max(np.abs(lam)) * abs(1.0 - c))


def diging_rate(W, step: float, mu: float = 1.0, order: str = "cta") -> float:
    """Asymptotic per-round contraction of DIGing / ATC gradient tracking on ``f_i = (mu/2)||x - b_i||^2``.

    Nedić, Olshevsky & Shi (2017), "Achieving geometric convergence for
    distributed optimization over time-varying graphs" (SIAM J. Optim.), the
    DIGing recursion (their Sec. 3; equation number not checked): CTA
    ``X+ = WX - alpha Y``, ``Y+ = WY + G(X+) - G(X)``, ``Y0 = G(X0)``; ATC form
    (Xu, Zhu, Soh & Xie 2015, Aug-DGM; Nedić, Olshevsky, Shi & Uribe 2017,
    ATC-DIGing): ``X+ = W(X - alpha Y)``, ``Y+ = W(Y + G(X+) - G(X))``.
    The fixed point is ``X = 1 x*^T, Y = 0``. With ``G = mu(X - B)``, ``E = X - 1x*^T``
    and ``(W - I)1 = 0``, both are linear in ``(E, Y)`` with blocks that are
    polynomials in ``W``, so they decouple per eigenvalue ``lambda`` of ``W``:

    * CTA ``[[lambda, -alpha], [mu(lambda - 1), lambda - alpha mu]]``;
    * ATC ``[[lambda, -alpha lambda], [mu lambda (lambda - 1), lambda (1 - alpha mu lambda)]]``.

    At ``lambda = 1`` both are ``[[1, -alpha], [0, 1 - alpha mu]]`` with
    eigenvalues ``1`` and ``1 - alpha mu``. The 1 is never excited: summing the
    Y update over nodes gives ``mean(Y+) - mean(G(X+)) = mean(Y) - mean(G(X))``,
    which is 0 from ``Y0 = G(X0)``, so ``ybar = mu ebar`` (the eigenvector of
    ``1 - alpha mu``) and the mean runs gradient descent ``ebar+ = (1 - alpha mu) ebar``.
    The rate is ``max(|1 - alpha mu|, max_{lambda != 1} rho(mode matrix))``, the
    spectral radius of the error map on the invariant subspace; ``||X_t - x*||``
    decays like it (up to a polynomial factor at a defective eigenvalue).
    """
    W = _as_w(W)
    order = _check_order(order)
    lam = _disagreement_eigs(W)
    a, m = float(step), float(mu)
    if order == "cta":
        r = _radius_2x2(lam, -a, m * (lam - 1.0), lam - a * m)
    else:
        r = _radius_2x2(lam, -a * lam, m * lam * (lam - 1.0), lam * (1.0 - a * m * lam))
    return float(max(abs(1.0 - a * m), np.max(r, initial=0.0)))


def _second_order_rate(lam_bar, step: float, mu: float) -> float:
    # e_{t+1} = lam_bar ((2 - c) e_t - (1 - c) e_{t-1}), c = alpha mu: companion matrix
    # [[lam_bar (2 - c), -lam_bar (1 - c)], [1, 0]].
    c = float(step) * float(mu)
    r = _radius_2x2(lam_bar * (2.0 - c), -lam_bar * (1.0 - c), 1.0, 0.0)
    return float(max(abs(1.0 - c), np.max(r, initial=0.0)))


def exact_diffusion_rate(W, step: float, mu: float = 1.0) -> float:
    """Asymptotic per-round contraction of exact diffusion on ``f_i = (mu/2)||x - b_i||^2``.

    Yuan, Ying, Zhao & Sayed (2019), "Exact diffusion for distributed
    optimization and learning — Part I: Algorithm development" (IEEE TSP),
    Algorithm 1 (adapt-correct-combine) in its equivalent primal second-order
    form (equation number not checked)
    ``X_{t+1} = Wbar(2X_t - X_{t-1} - alpha(G_t - G_{t-1}))``,
    ``X_1 = Wbar(X_0 - alpha G_0)``, ``Wbar = (I + W)/2``. With ``G = mu(X - B)``
    and ``E = X - 1x*^T`` (``B`` cancels in ``G_t - G_{t-1}``):
    ``E_{t+1} = Wbar((2 - c)E_t - (1 - c)E_{t-1})``, ``c = alpha mu``; per
    eigenvalue ``lbar = (1 + lambda)/2`` the companion matrix
    ``[[lbar(2 - c), -lbar(1 - c)], [1, 0]]``, characteristic polynomial
    ``z^2 - lbar(2 - c) z + lbar(1 - c)``. At ``lbar = 1`` its roots are 1 and
    ``1 - c``; the 1 is not excited because ``xbar_{t+1} - xbar_t + alpha gbar_t``
    is invariant and 0 from ``X_1``, i.e. the mean runs exact gradient descent.
    Rate ``max(|1 - c|, max_{lambda != 1} rho(companion(lbar)))``.
    """
    W = _as_w(W)
    lam = _disagreement_eigs(W)
    return _second_order_rate(0.5 * (1.0 + lam), step, mu)


def d2_rate(W, step: float, mu: float = 1.0) -> float:
    """Asymptotic per-round contraction of D^2 on ``f_i = (mu/2)||x - b_i||^2``.

    Tang, Lian, Yan, Zhang & Liu (2018), "D^2: Decentralized training over
    decentralized data" (ICML), Algorithm 1: the exact-diffusion recursion of
    :func:`exact_diffusion_rate` with ``W`` in place of ``Wbar`` (companion
    matrix per eigenvalue ``lambda`` itself). The paper assumes
    ``lambda_min(W) > -1/3``; Jury's test on ``z^2 - lambda(2 - c)z + lambda(1 - c)``
    shows why: ``P(-1) = 1 + lambda(3 - 2c) > 0`` needs ``lambda > -1/(3 - 2c)``,
    i.e. ``lambda > -1/3`` as ``c = alpha mu -> 0`` (at exactly ``-1/3``, e.g. the MH
    ring with even ``n``, ``P(-1) = 2c/3 > 0``: still stable). When
    ``lambda_min(W) < -1/3`` this warns (RuntimeWarning) and returns the spectral
    radius anyway, which is ``> 1`` (divergence) for every ``c < (3 + 1/lambda_min)/2``.
    """
    W = _as_w(W)
    lam = _disagreement_eigs(W)
    if lam.size and np.min(np.real(lam)) < -1.0 / 3.0 - 1e-12:
        warnings.warn(
            f"d2_rate: lambda_min(W) = {np.min(np.real(lam)):.4g} <= -1/3: D^2 is "
            "outside its assumption and diverges for small steps",
            RuntimeWarning,
            stacklevel=2,
        )
    return _second_order_rate(lam, step, mu)


_METHODS = ("dsgd", "diging", "exact_diffusion", "d2")


def iteration_matrix(W, step: float, mu=1.0, method: str = "diging", order: str = "cta"):
    """Linear map of the error of ``method`` on ``f_i = (mu_i/2)||x - b_i||^2``, any curvatures.

    Returns ``(A, v)``: the state is ``z = [E; Y]`` (D-SGD: ``E`` only, about its
    fixed point; DIGing: ``E = X - 1x*^T`` and the tracker ``Y``; exact
    diffusion / D^2: ``[E_t; E_{t-1}]``), ``z+ = A z`` per coordinate, and ``v``
    (``None`` for D-SGD) is the left eigenvector ``v^T A = v^T`` of the quantity
    the method conserves, which its initialisation sets to 0 — so the rate is the
    spectral radius of ``A`` on ``ker v^T`` (:func:`linear_rate`). With
    ``M = diag(mu)`` and ``x* = sum mu_i b_i / sum mu_i`` (so ``1^T M (1x* - B) = 0``):

    * ``dsgd``: CTA ``A = W - alpha M``, ATC ``A = W(I - alpha M)``.
    * ``diging`` CTA: ``A = [[W, -alpha I], [M(W - I), W - alpha M]]``; ATC:
      ``A = [[W, -alpha W], [W M (W - I), W(I - alpha M W)]]``; ``v = [-M1; 1]``
      (``sum Y - sum G(X)`` is conserved, 0 from ``Y0 = G(X0)``).
    * ``exact_diffusion`` / ``d2``: ``A = [[Wt(2I - alpha M), -Wt(I - alpha M)], [I, 0]]``
      with ``Wt = (I + W)/2`` or ``W``; ``v = [1; alpha M1 - 1]``
      (``sum(E_t - E_{t-1}) + alpha sum M E_{t-1}`` is conserved, 0 from ``X_1``).

    Built from the recursions in :func:`diging_rate`, :func:`exact_diffusion_rate`,
    :func:`d2_rate`, :func:`dsgd_rate`; needs ``1^T W = 1^T`` for ``v``.
    """
    W = _as_w(W)
    order = _check_order(order)
    method = str(method).lower()
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    n = W.shape[0]
    a = float(step)
    m = _curvatures(mu, n)
    M, I, one = np.diag(m), np.eye(n), np.ones(n)
    if method == "dsgd":
        return (W - a * M if order == "cta" else W @ (I - a * M)), None
    if method == "diging":
        if order == "cta":
            A = np.block([[W, -a * I], [M @ (W - I), W - a * M]])
        else:
            A = np.block([[W, -a * W], [W @ M @ (W - I), W @ (I - a * M @ W)]])
        return A, np.concatenate([-m, one])
    Wt = 0.5 * (I + W) if method == "exact_diffusion" else W
    A = np.block([[Wt @ (2 * I - a * M), -Wt @ (I - a * M)], [I, np.zeros((n, n))]])
    return A, np.concatenate([one, a * m - 1.0])


def linear_rate(W, step: float, mu=1.0, method: str = "diging", order: str = "cta") -> float:
    """Spectral radius of :func:`iteration_matrix` restricted to ``ker v^T`` (all of it for D-SGD).

    ``ker v^T`` is ``A``-invariant (``v^T A z = v^T z = 0``); with ``Q`` an
    orthonormal basis of it the rate is ``rho(Q^T A Q)``. For a scalar ``mu`` it
    equals :func:`dsgd_rate`, :func:`diging_rate`, :func:`exact_diffusion_rate`,
    :func:`d2_rate` (per-mode forms); with unequal curvatures the modes couple and
    only this form applies. Dense eigenvalues of a ``2n x 2n`` matrix: meant for
    ``n`` up to a few hundred.
    """
    A, v = iteration_matrix(W, step, mu, method, order)
    if v is not None:
        q, _ = np.linalg.qr(np.column_stack([v / np.linalg.norm(v), np.eye(len(v))]))
        Q = q[:, 1 : len(v)]
        A = Q.T @ A @ Q
    return float(np.max(np.abs(np.linalg.eigvals(A)), initial=0.0))


def choco_constants(W, omega: float) -> dict:
    """Constants of Choco-Gossip / Choco-SGD (Koloskova, Stich & Jaggi, ICML 2019,
    "Decentralized stochastic optimization and gossip algorithms with compressed
    communication", arXiv:1902.00340).

    ``delta = 1 - |lambda_2(W)|`` (eigengap; ``|lambda_2|`` the second largest
    eigenvalue magnitude, i.e. ``rho`` of this module), ``beta = ||I - W||_2``
    (``= max_i |1 - lambda_i|`` for symmetric W, in ``[0, 2]``), and for a
    compressor with ``E||Q(x) - x||^2 <= (1 - omega)||x||^2``, ``omega in (0, 1]``,
    the consensus step of their Theorem 2
    ``gamma* = delta^2 omega / (16 delta + delta^2 + 4 beta^2 + 2 delta beta^2 - 8 delta omega)``
    with the guaranteed linear rate ``e_t <= (1 - delta^2 omega / 82)^t e_0``,
    ``e_t = sum_i ||x_i - xbar||^2 + ||x_i - xhat_i||^2``.

    Source check: no copy of the 2019 paper was reachable here; both constants
    match the authors' own restatement in Koloskova, Lin, Stich & Jaggi (ICLR
    2020, "Decentralized deep learning with arbitrary communication
    compression", Thm. 4.1), which quotes this step size from the 2019 paper and
    ``c = delta^2 omega / 82`` as the rate of its consensus scheme (their
    ``rho``/``delta`` are this ``delta``/``omega``).
    The denominator is at most ``16 + 1 + 16 + 8 = 41`` (``delta <= 1``,
    ``beta <= 2``, ``omega -> 0``), so ``gamma* >= delta^2 omega / 41``; and
    ``beta >= delta`` makes it ``> 8 delta``, so ``0 < gamma* < delta omega / 8 <= 1``.

    Caveat (found here, see tests/test_theory_algorithms.py): the pair is not
    self-consistent on slow graphs. With the identity compressor (``omega = 1``,
    a valid compressor) the exact contraction of ``e_t`` at ``gamma*`` is
    ``(1 - gamma* (1 - lambda_2))^2`` per round (:func:`choco_identity_rate`),
    which is *slower* than ``1 - delta^2/82`` on the MH ring for ``n >= 20``
    (n = 32: ``1 - 5.8e-7`` vs ``1 - 2.0e-6``): since ``gamma* ~ delta^2 omega/(4 beta^2)``
    when ``delta -> 0``, the disagreement contracts like ``1 - O(delta^3 omega)``,
    not ``delta^2 omega``. Treat ``rate`` as the paper's claim, not a bound to
    assert; ``gamma`` is the paper's step (far below the ``gamma`` that works,
    which is tuned by grid search in practice).
    """
    W = _as_w(W)
    omega = float(omega)
    if not 0.0 < omega <= 1.0:
        raise ValueError(f"omega must be in (0, 1], got {omega}")
    lam = _disagreement_eigs(W)
    delta = 1.0 - float(np.max(np.abs(lam), initial=0.0))
    beta = float(np.linalg.norm(np.eye(W.shape[0]) - W, 2))
    denom = 16 * delta + delta**2 + 4 * beta**2 + 2 * delta * beta**2 - 8 * delta * omega
    gamma = delta**2 * omega / denom if delta > 0 else 0.0
    return {"delta": delta, "beta": beta, "gamma": gamma, "rate": 1.0 - delta**2 * omega / 82.0}


def choco_identity_rate(W, gamma: float) -> float:
    """Per-round contraction of the disagreement under Choco-Gossip with the identity compressor.

    With ``Q = id`` (``omega = 1``) the estimates catch up in one step
    (``Xhat <- Xhat + (X - Xhat) = X``), so after the first round Choco-Gossip
    (Koloskova, Stich & Jaggi 2019, Algorithm 1) is ``X+ = X + gamma(W - I)X =
    ((1 - gamma) I + gamma W) X``: the mean is kept and eigenmode ``lambda != 1``
    is multiplied by ``1 + gamma(lambda - 1)``. Rate
    ``max_{lambda != 1} |1 + gamma(lambda - 1)|`` (``gamma = 1`` gives ``rho``).
    """
    W = _as_w(W)
    lam = _disagreement_eigs(W)
    return float(np.max(np.abs(1.0 + float(gamma) * (lam - 1.0)), initial=0.0))


# --------------------------------------------------------------------------- graphs drawn per round
def mean_square_contraction(topology) -> float:
    """One round's expected mean-square contraction of the disagreement for a graph drawn every
    round: ``lambda = lambda_max(E[W^T (I - J) W])`` on ``1^perp``, so that
    ``E||(I-J) W x||^2 <= lambda ||(I-J) x||^2`` (Boyd et al. 2006 Sec. II for randomized gossip;
    de Vos et al. 2023 for Epidemic Learning; Koloskova et al. 2020 Assumption 4 with
    ``p = 1 - lambda``). From the exact second moment each drawn family derives
    (``rj.network.random_graphs``, ``rj.network.unreliable``); a static graph gives ``rho(W)^2``.
    For row-stochastic draws (EL-Local, k-out, renormalized failures) it bounds the disagreement
    around the new mean only: the mean itself drifts."""
    if not getattr(topology, "is_drawn", False):
        return float(rho(topology)) ** 2
    from redeem_jax.network import random_graphs

    return random_graphs.mean_square_contraction(topology)


def expected_mixing_matrix(topology) -> np.ndarray:
    """``E[W(t)]`` (dense float64, host) of a graph drawn every round, in closed form; a static
    graph gives its ``W`` (a periodic one, the average over its period)."""
    if getattr(topology, "is_drawn", False):
        return topology.expected_mixing_matrix()
    return np.mean(topology.mixing_matrices(), axis=0)


# --------------------------------------------------------------------------- #
# Personalization: Ditto on Gaussian mean estimation
# --------------------------------------------------------------------------- #
def ditto_mse(lam, m: int, sigma2: float, tau2: float, n: int, d: int = 1):
    """E‖vᵢ − μᵢ‖² of Ditto's personal model (Li et al. 2021, Eq. 2) on Gaussian mean estimation.

    Node i has m samples yᵢⱼ ~ N(μᵢ, σ²I_d), μᵢ = μ + δᵢ, δᵢ ~ N(0, τ²I_d) independent over n nodes.
    With fᵢ(v) = (1/2m)Σⱼ‖v − yᵢⱼ‖² = ½‖v − ȳᵢ‖² + c and the shared model at its optimum
    x̄ = mean_k ȳₖ, Ditto's fixed point ∇fᵢ(v) + λ(v − x̄) = 0 is

        vᵢ = (ȳᵢ + λx̄)/(1 + λ) = (1 − w)ȳᵢ + w x̄,   w = λ/(1 + λ)

    (with the per-sample sum Σⱼ½‖v − yᵢⱼ‖² it is (mȳᵢ + λx̄)/(m + λ): λ_sum = mλ). Writing
    s = σ²/m and a = 1 − 1/n, vᵢ − μᵢ = (1 − wa)eᵢ + (w/n)Σ_{k≠i}eₖ − waδᵢ + (w/n)Σ_{k≠i}δₖ with
    eₖ = ȳₖ − μₖ ~ N(0, sI), so per coordinate

        MSE/d = s(1 − wa)² + w²a s/n + w²a τ² = s − 2saw + a(s + τ²)w².

    w = 0 gives local averaging (s), w = 1 the global mean (s/n + aτ²). ``lam`` may be an array.
    """
    lam = np.asarray(lam, np.float64)
    w = lam / (1.0 + lam)
    s, a = sigma2 / m, 1.0 - 1.0 / n
    return d * (s - 2.0 * s * a * w + a * (s + tau2) * w**2)


def ditto_optimal_lambda(m: int, sigma2: float, tau2: float, n: int | None = None, d: int = 1) -> float:
    """The λ minimising :func:`ditto_mse`: w* = s/(s + τ²) with s = σ²/m, so λ* = w*/(1 − w*) =
    σ²/(mτ²) (λ*_sum = σ²/τ² for the per-sample sum), for every n ≥ 2 and d: the pull toward the
    shared model grows with the sampling noise of one node's mean and shrinks with heterogeneity.
    ``n`` and ``d`` do not enter (kept for the same signature as :func:`ditto_mse`)."""
    del n, d
    if tau2 <= 0:
        return math.inf
    return sigma2 / (m * tau2)


def _noise_modes(lam, step: float, mu: float, order: str) -> np.ndarray:
    """The AR(1) coefficient of each eigenmode of constant-step D-SGD on ``f = (mu/2)||x - b||^2``
    with additive gradient noise: ATC ``(1 - step mu) lambda``, CTA ``lambda - step mu``."""
    c = float(step) * float(mu)
    lam = np.asarray(lam, dtype=np.float64)
    return (1.0 - c) * lam if _check_order(order) == "atc" else lam - c


def dsgd_noise_average_variance(step: float, sigma: float, n: int, d: int = 1, mu: float = 1.0) -> float:
    """Stationary ``E||x_bar - b||^2`` of constant-step D-SGD on identical quadratics with noise.

    Setting of Lian et al. (2017, Thm. 1: the ``sigma^2 / n`` term, linear speedup) and Koloskova
    et al. (2020, Thm. 2, the ``sigma_bar^2 / n`` term), exactly: ``f_i = (mu/2)||x - b||^2`` for all
    i, ``g_i = mu (x_i - b) + xi_i``, ``xi_i ~ N(0, sigma^2 I_d)`` i.i.d. over nodes and steps, ATC
    ``X+ = W(X - step G)`` or CTA ``X+ = W X - step G`` with ``1^T W = 1^T``. Derivation: the
    average obeys ``e_bar+ = (1 - step mu) e_bar - step xi_bar`` (both orders, ``1^T W = 1^T``) with
    ``xi_bar ~ N(0, sigma^2/n I)``, a scalar AR(1) per coordinate, so
    ``v = step^2 sigma^2 / (n (1 - (1 - step mu)^2)) = step sigma^2 / (n mu (2 - step mu))`` and
    ``E||x_bar - b||^2 = d v``: independent of W, ``1/n`` of one node's (SGD: n = 1). ``inf`` when
    ``|1 - step mu| >= 1`` (no stationary law).
    """
    a = 1.0 - float(step) * float(mu)
    if abs(a) >= 1.0:
        return math.inf
    return float(d * float(step) ** 2 * float(sigma) ** 2 / (n * (1.0 - a * a)))


def dsgd_noise_consensus_distance(
    W, step: float, sigma: float, d: int = 1, mu: float = 1.0, order: str = "atc"
) -> float:
    """Stationary consensus distance ``(1/n) E||X - 1 x_bar^T||_F^2`` of the same noisy D-SGD.

    Koloskova et al. (2020, Lemma 8 bounds it by ``step^2 sigma^2 / p`` up to constants; this is its
    exact value on identical quadratics; Lian et al. 2017, Thm. 1's ``sigma^2 / (1 - rho)`` term).
    Derivation: with symmetric doubly stochastic ``W = sum_k lambda_k u_k u_k^T`` (``u_1 = 1/sqrt(n)``)
    the error ``E = X - 1 b^T`` obeys ATC ``E+ = W((1 - step mu) E - step Xi)``, so each mode
    ``c_k = u_k^T E`` is an AR(1) ``c_k+ = a_k c_k - step lambda_k u_k^T Xi`` with ``a_k = (1 - step mu)
    lambda_k`` and ``u_k^T Xi ~ N(0, sigma^2 I_d)``: ``E||c_k||^2 = d step^2 sigma^2 lambda_k^2 / (1 - a_k^2)``.
    Modes k >= 2 span ``X - 1 x_bar^T``, hence ``(d step^2 sigma^2 / n) sum_{k>=2} lambda_k^2 / (1 - a_k^2)``.
    CTA (``E+ = (W - step mu I) E - step Xi``): ``a_k = lambda_k - step mu`` and no ``lambda_k^2`` in
    the numerator. ``inf`` when some ``|a_k| >= 1``.
    """
    W = _as_w(W)
    if not _is_symmetric(W):
        raise ValueError("dsgd_noise_consensus_distance: W must be symmetric (modes are orthogonal)")
    n = W.shape[0]
    lam = _disagreement_eigs(W)
    a = _noise_modes(lam, step, mu, order)
    if np.any(np.abs(a) >= 1.0):
        return math.inf
    gain = lam**2 if _check_order(order) == "atc" else np.ones_like(lam)
    return float(d * float(step) ** 2 * float(sigma) ** 2 / n * np.sum(gain / (1.0 - a * a)))
