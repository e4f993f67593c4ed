"""Exact pairwise network-DP accounting for gossip (host-side numpy; accounting, not a hot path).

Model (Cyffers & Bellet 2022, "Privacy amplification by decentralization";
Cyffers, Even, Bellet & Pierre 2022, "Muffliato"): ``n`` nodes hold private
values ``z`` (scalar per node; a d-dimensional value leaks the same per
coordinate, the noise being iid across coordinates) and add iid Gaussian noise
``N(0, sigma^2)``. With ``W_t`` the mixing matrix of round ``t``
(``W[i, j] != 0`` means ``i`` receives ``x_j``, :mod:`redeem_jax.topology`):

``noise="once"`` (Muffliato): ``m_0 = z + eta``, ``m_{t+1} = W_t m_t``.
    Noise is drawn once and then only averaged.
``noise="fresh"``: ``m_0 = z + eta_0``, ``m_{t+1} = W_t m_t + eta_{t+1}``.
    Fresh noise every round. ``x_{t+1} = W_t (x_t + eta_t)`` with messages
    ``x_t + eta_t`` and the Muffliato-style ``x_{t+1} = W_t x_t + eta_{t+1}``
    with messages ``x_t`` produce *the same sequence of messages*, so this one
    regime covers both.
``value="every_step"`` (only with ``noise="fresh"``): the private value is
    contributed again every round, ``m_{t+1} = W_t m_t + z + eta_{t+1}`` (a
    DP-D-SGD node adding its gradient and fresh noise each step). The
    local-DP reference is then ``T`` noisy releases ``z_u + N(0, sigma^2)``.

``m_t`` (``t = 0..T-1``) are the messages sent in round ``t``. Observer ``v``
sees (``observe="neighbors"``, default) the messages ``m_{t, j}`` of every
in-neighbour ``j`` of round ``t`` (``W_t[v, j] != 0``) for ``t < T`` and its own
``m_{t, v}``, or (``observe="self"``) only its own state after each round,
``(W_t m_t)_v`` for ``t < T``. Stacked, ``y = A z + N eta = B [z; eta]``. By
default the observer *knows its own* ``z_v`` and noise draws and subtracts
them (their columns are removed from ``A`` and ``N``): that can only increase
leakage, and is what a curious node can really do.

Leakage. The view is the Gaussian mechanism through a linear map, so the
exact Rényi loss from ``u`` to ``v`` is (Cyffers & Bellet 2022; FIELD_NOTES)::

    eps_{u->v}(alpha) = alpha Delta^2 / (2 sigma^2) * a_u^T (N N^T)^+ a_u,   a_u = A e_u

(``Sigma = sigma^2 I`` on the noise). We report
``leakage[u, v] = a_u^T (N N^T)^+ a_u / K`` where ``K`` is the number of
releases of ``z_u`` (1, or ``T`` with ``value="every_step"``): **1.0 is full
local DP** (``v`` effectively sees ``z_u + N(0, sigma^2)`` each release),
0 is nothing. It lies in ``[0, 1]``: the view is a post-processing of the
``K`` local-DP releases of ``u`` and of independent variables. The diagonal
is set to 1 (a node knows its own value).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = [
    "mixing_sequence",
    "observation_matrix",
    "leakage_matrix",
    "muffliato_per_step",
    "leakage_vs_distance",
    "graph_distances",
    "epsilon_matrix",
    "gaussian_epsilon",
    "underestimated_pairs",
    "NOISE_REGIMES",
    "OBSERVE_MODES",
    "realised_mixing_sequence",
    "record_run",
    "load_mixing_sequence",
    "leakage_from_run",
    "RECORD_FILE",
]

NOISE_REGIMES = ("once", "fresh")
OBSERVE_MODES = ("neighbors", "self")
VALUE_MODES = ("once", "every_step")
_RTOL = 1e-9  # singular values below rtol * s_max are treated as exactly 0 (float64)
_OUT_OF_RANGE = 1e-7  # relative residual of a_u outside range(N): noiseless view -> infinite loss


# --------------------------------------------------------------------------- #
# Building the linear view
# --------------------------------------------------------------------------- #
def mixing_sequence(topology, T: int) -> np.ndarray:
    """``[T, n, n]`` stack of ``topology.mixing_matrix(round=t)`` for ``t < T``: the matrices a run used."""
    return np.stack([np.asarray(topology.mixing_matrix(round=t), dtype=np.float64) for t in range(int(T))])


# --------------------------------------------------------------------------- #
# The matrices a run really used (graphs drawn every round)
# --------------------------------------------------------------------------- #
RECORD_FILE = "mixing_matrices.npz"
"""What a run with ``config.privacy.network_dp_record`` writes in its workdir: ``W [T, n, n]``."""
RECORD_LIMIT = 1 << 26  # floats of [T, n, n] a run may record (512 MiB in float64): small N only


def realised_mixing_sequence(topology, key, T: int, hp=None, start: int = 0) -> np.ndarray:
    """``[T, n, n]`` float64: ``W(t)`` of rounds ``start..start+T-1`` of the run whose round key is
    ``key`` (``RoundState.key``), as the round draws them: graph key
    ``fold_in(split(fold_in(key, t))[0], tag("topology"))`` (``rj.round``), the run's
    hyper-parameters ``hp`` (a swept p, q or s). A static or periodic topology ignores the key
    (:func:`mixing_sequence`). One jitted, vmapped draw over the rounds: no Python per round."""
    import jax
    import jax.numpy as jnp

    from redeem_jax.core import tag

    if not getattr(topology, "is_drawn", False):
        seq = [np.asarray(topology.mixing_matrix(round=t), np.float64) for t in range(start, start + int(T))]
        return np.stack(seq)
    from redeem_jax.network.unreliable import dense_mixing

    hp = dict(hp or {})
    takes_hp = bool(getattr(topology, "hypers", ()))

    def one(t):
        round_key = jax.random.split(jax.random.fold_in(key, t))[0]
        graph_key = jax.random.fold_in(round_key, tag("topology"))
        drawn = topology.draw(t, graph_key, hp=hp) if takes_hp else topology.draw(t, graph_key)
        return dense_mixing(topology.n, drawn)

    rounds = jnp.arange(start, start + int(T), dtype=jnp.int32)
    # float32 is what the step's gossip used; float64 holds it exactly (leakage is computed in it)
    return np.asarray(jax.jit(jax.vmap(one))(rounds), np.float64)


def record_run(experiment, state, workdir) -> Path:
    """Write the mixing matrices of every round a finished run used, ``W [T, n, n]`` (float64: the
    weights the step used; a static graph's float64 W) to ``workdir/mixing_matrices.npz`` (with ``rounds``), for network-DP
    leakage from the realised graphs (:func:`leakage_from_run`; Cyffers & Bellet 2022 with a
    time-varying W_t). ``state`` is the run's final :class:`~redeem_jax.round.RoundState`."""
    c = experiment.config
    T, n = int(state.round), int(c.num_nodes)
    check_record_size(T, n)
    W = realised_mixing_sequence(experiment.topology, state.key, T, experiment.hp_values())
    path = Path(workdir) / RECORD_FILE
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, W=W, rounds=np.arange(T, dtype=np.int32))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def check_record_size(T: int, n: int) -> None:
    """Refuse a recording of more than :data:`RECORD_LIMIT` floats (dense ``[T, n, n]``)."""
    if T * n * n > RECORD_LIMIT:
        raise ValueError(
            f"privacy.network_dp_record: {T} rounds of dense {n}x{n} matrices is {T * n * n:.3g} "
            f"floats, above {RECORD_LIMIT:.3g}; record fewer rounds or nodes"
        )


def load_mixing_sequence(workdir) -> np.ndarray:
    """The ``[T, n, n]`` matrices a run recorded (:func:`record_run`), as float64."""
    with np.load(Path(workdir) / RECORD_FILE) as f:
        return np.asarray(f["W"], np.float64)


def leakage_from_run(
    run, noise: str = "once", observe: str = "neighbors", value: str = "once", rounds: int | None = None, **options
) -> np.ndarray:
    """:func:`leakage_matrix` over the matrices a run really used: ``run`` is a workdir with a
    recording (:func:`record_run`) or a ``RunResult`` (recomputed from its key with
    :func:`realised_mixing_sequence`); ``rounds`` keeps the first ones only. Exact pairwise
    network DP (Cyffers & Bellet 2022) for a time-varying ``W_t``."""
    if hasattr(run, "experiment") and hasattr(run, "state"):
        exp = run.experiment
        W = realised_mixing_sequence(exp.topology, run.state.key, int(run.state.round), exp.hp_values())
    else:
        W = load_mixing_sequence(run)
    if rounds is not None:
        W = W[: int(rounds)]
    return leakage_matrix(np.asarray(W, np.float64), noise=noise, observe=observe, value=value, **options)


def _as_stack(mixing_matrices) -> np.ndarray:
    w = np.asarray(mixing_matrices, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[0] < 1:
        raise ValueError(f"mixing_matrices must be [T, n, n] with T >= 1, got shape {w.shape}")
    return w


def _check_modes(noise, observe, value):
    if noise not in NOISE_REGIMES:
        raise ValueError(f"noise must be one of {NOISE_REGIMES}, got {noise!r}")
    if observe not in OBSERVE_MODES:
        raise ValueError(f"observe must be one of {OBSERVE_MODES}, got {observe!r}")
    if value not in VALUE_MODES:
        raise ValueError(f"value must be one of {VALUE_MODES}, got {value!r}")
    if value == "every_step" and noise != "fresh":
        # re-releasing z with the *same* noise would average the noise away: not a DP mechanism
        raise ValueError('value="every_step" needs noise="fresh"')


def _messages(w: np.ndarray, noise: str, value: str):
    """Coefficients of every message on ``[z; eta]``: ``A [T, n, n]`` on ``z`` and ``N [T, n, P]`` on the noise.

    With noise once the noise columns coincide with the ``z`` columns (``m = W^t (z + eta)``), so
    ``P = n`` and no ``n x nT`` matrix is ever built for that regime.
    """
    T, n, _ = w.shape
    A = np.empty((T, n, n))
    A[0] = np.eye(n)
    for t in range(1, T):
        A[t] = w[t - 1] @ A[t - 1]
        if value == "every_step":
            A[t] += np.eye(n)
    if noise == "once":
        return A, A.copy()
    N = np.zeros((T, n, n * T))
    N[0, :, :n] = np.eye(n)
    for t in range(1, T):
        N[t, :, : n * t] = w[t - 1] @ N[t - 1, :, : n * t]
        N[t, :, n * t : n * (t + 1)] = np.eye(n)
    return A, N


def _view_rows(w, A, N, v, observe):
    T, n, _ = w.shape
    ra, rn = [], []
    for t in range(T):
        if observe == "neighbors":
            nb = np.flatnonzero(w[t, v] != 0)
            nb = np.union1d(nb, [v])  # own message: redundant given the rest, harmless
            ra.append(A[t, nb])
            rn.append(N[t, nb])
        else:
            ra.append(w[t, v][None] @ A[t])
            rn.append(w[t, v][None] @ N[t])
    return np.concatenate(ra), np.concatenate(rn)


def observation_matrix(mixing_matrices, v: int, noise: str = "once", observe: str = "neighbors", value: str = "once"):
    """``(A, N)`` with observer ``v``'s view ``y = A z + N eta`` (Cyffers & Bellet 2022, Sec. 3 linear view).

    Rows: one per observed scalar (see the module docstring); ``N`` has ``n`` columns with
    noise once and ``n T`` (round-major: column ``n t + i`` is ``eta_{t, i}``) with fresh noise.
    The observer's own columns are *not* removed here.
    """
    w = _as_stack(mixing_matrices)
    _check_modes(noise, observe, value)
    A, N = _messages(w, noise, value)
    return _view_rows(w, A, N, int(v), observe)


def _pair_leakage(Av: np.ndarray, Nv: np.ndarray, rtol: float) -> np.ndarray:
    """``a_u^T (N N^T)^+ a_u`` for every column ``a_u`` of ``Av``.

    Through the SVD of ``N`` rather than ``eigh(N N^T)``: the same pseudo-inverse, but
    without squaring the condition number, so rank (what exactly is reconstructible)
    is decided at ``rtol`` instead of ``rtol**2``.
    """
    out = np.zeros(Av.shape[1])
    if Av.size == 0 or not np.any(Av):
        return out
    U, s, _ = np.linalg.svd(Nv, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        keep = np.zeros(0, dtype=bool)
    else:
        keep = s > rtol * s[0]
    U, s = U[:, keep], s[keep]
    proj = U.T @ Av
    out = np.sum((proj / s[:, None]) ** 2, axis=0)
    # a part of a_u outside range(N) is seen without noise: exact, infinite privacy loss
    resid = np.linalg.norm(Av - U @ proj, axis=0)
    norm = np.linalg.norm(Av, axis=0)
    out[resid > _OUT_OF_RANGE * np.maximum(norm, 1e-300)] = np.inf
    out[norm == 0] = 0.0  # information has not arrived: exactly nothing
    return out


def leakage_matrix(
    mixing_matrices,
    noise: str = "once",
    observe: str = "neighbors",
    value: str = "once",
    observer_knows_own: bool = True,
    rtol: float = _RTOL,
) -> np.ndarray:
    """Exact pairwise network-DP leakage ``[u, v]`` (Cyffers & Bellet 2022 network DP, Gaussian through a linear map).

    ``leakage[u, v] = a_u^T (N N^T)^+ a_u / K`` (module docstring): the Rényi loss from ``u`` to
    observer ``v`` is ``alpha Delta^2 / (2 sigma^2) * K * leakage[u, v]``; 1.0 = local DP (``v`` can
    invert its view down to ``z_u + N(0, sigma^2)``), 0 = nothing. ``mixing_matrices`` ``[T, n, n]``
    are the matrices of rounds ``0..T-1`` (e.g. :func:`mixing_sequence`). The pseudo-inverse keeps
    singular values of ``N`` above ``rtol * s_max``. ``inf`` marks a noiseless view of ``z_u``
    (impossible in these regimes; kept as a guard). Diagonal = 1.
    """
    w = _as_stack(mixing_matrices)
    _check_modes(noise, observe, value)
    T, n, _ = w.shape
    K = T if value == "every_step" else 1
    A, N = _messages(w, noise, value)
    P = N.shape[-1]
    out = np.zeros((n, n))
    for v in range(n):
        Av, Nv = _view_rows(w, A, N, v, observe)
        if observer_knows_own:
            # v subtracts its own value and noise draws: condition on them
            Av = Av.copy()
            Av[:, v] = 0.0
            Nv = Nv[:, np.arange(P) % n != v]
        out[:, v] = _pair_leakage(Av, Nv, rtol) / K
    finite = np.isfinite(out)
    # leverage-type quantities exceed 1 only by roundoff
    out[finite] = np.clip(out[finite], 0.0, 1.0)
    np.fill_diagonal(out, 1.0)
    return out


def muffliato_per_step(mixing_matrices, noise: str = "once", value: str = "once") -> np.ndarray:
    """The per-message pairwise network-DP formula of Muffliato (Cyffers, Even, Bellet & Pierre 2022).

    Each message ``m_{t, w}`` that ``v`` receives from an in-neighbour ``w`` (``t < T``) is treated
    as an *independent* Gaussian mechanism on ``z_u`` with sensitivity ``|A_t[w, u]| Delta`` and
    noise std ``sigma ||N_t[w, :]||``, and the Rényi losses are summed (composition). With noise
    once this is the paper's ``sum_t sum_{w ~ v} (W^t)_{w u}^2 / ||(W^t)_{w, :}||^2``; same
    normalisation as :func:`leakage_matrix` (1.0 = local DP, divided by ``K``). Composition
    assumes independent noise across messages, false when noise is drawn once: the sum then
    *underestimates* the exact leakage at some pairs (16-cycle, T=5, distance 3: 0.208 vs an
    exact 1.0) and must not be reported as a guarantee. Diagonal = 1; not clipped.
    """
    w = _as_stack(mixing_matrices)
    _check_modes(noise, "neighbors", value)
    T, n, _ = w.shape
    K = T if value == "every_step" else 1
    A, N = _messages(w, noise, value)
    out = np.zeros((n, n))
    for t in range(T):
        nrm2 = np.sum(N[t] ** 2, axis=1)  # [n] noise variance / sigma^2 of each message
        per_msg = A[t] ** 2 / nrm2[:, None]  # [w, u]
        recv = w[t] != 0
        np.fill_diagonal(recv, False)  # the paper sums over neighbours only
        out += per_msg.T @ recv.T.astype(np.float64)  # [u, v] = sum_{w in N_t(v)} per_msg[w, u]
    out /= K
    np.fill_diagonal(out, 1.0)
    return out


def underestimated_pairs(exact: np.ndarray, formula: np.ndarray, atol: float = 1e-9) -> np.ndarray:
    """Boolean ``[u, v]``: where the per-step formula (Cyffers et al. 2022 Muffliato) is below the exact
    linear-view leakage (Cyffers & Bellet 2022) — pairs whose formula value is not a guarantee."""
    return np.asarray(formula) < np.asarray(exact) - atol


# --------------------------------------------------------------------------- #
# Distances
# --------------------------------------------------------------------------- #
def graph_distances(topology) -> np.ndarray:
    """Hop distance ``[u, v]`` on the union graph (``inf`` if unreachable), for Cyffers & Bellet 2022's
    leakage-vs-distance view. Information from ``u`` reaches ``v`` no sooner than this many rounds."""
    import scipy.sparse.csgraph as csgraph

    adj = np.asarray(topology.adjacency, dtype=np.float64)
    # adjacency[i, j]: i receives from j, so information flows j -> i: distances on the transpose
    return csgraph.shortest_path(np.ascontiguousarray(adj.T), unweighted=True, directed=True)


def leakage_vs_distance(
    topology,
    T: int,
    noise: str = "once",
    observe: str = "neighbors",
    value: str = "once",
    method: str = "exact",
    **kwargs,
) -> dict:
    """Leakage by graph distance (Cyffers & Bellet 2022 network DP; Cyffers et al. 2022 Muffliato formula).

    Returns ``{distance: dict(mean, max, min, count)}`` over ordered pairs ``u != v`` at that hop
    distance (unreachable pairs are left out). ``method="exact"`` uses :func:`leakage_matrix`,
    ``"muffliato"`` :func:`muffliato_per_step`; ``kwargs`` go to the former.
    """
    W = mixing_sequence(topology, T)
    if method == "exact":
        L = leakage_matrix(W, noise=noise, observe=observe, value=value, **kwargs)
    elif method == "muffliato":
        L = muffliato_per_step(W, noise=noise, value=value)
    else:
        raise ValueError(f"method must be 'exact' or 'muffliato', got {method!r}")
    D = graph_distances(topology)
    return _by_distance(L, D)


def _by_distance(L: np.ndarray, D: np.ndarray) -> dict:
    out = {}
    off = ~np.eye(L.shape[0], dtype=bool)
    for d in np.unique(D[off & np.isfinite(D)]):
        vals = L[off & (D == d)]
        out[int(d)] = dict(
            mean=float(np.mean(vals)), max=float(np.max(vals)), min=float(np.min(vals)), count=int(vals.size)
        )
    return out


# --------------------------------------------------------------------------- #
# (epsilon, delta)
# --------------------------------------------------------------------------- #
def gaussian_epsilon(mu: float, delta: float, accountant: str = "rdp") -> float:
    """``epsilon(delta)`` of one Gaussian mechanism with sensitivity / std ratio ``mu``.

    ``"analytic"``: exact, Balle & Wang 2018 Thm. 8,
    ``delta = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu)``, solved for ``eps``;
    ``"rdp"`` / ``"pld"``: dp-accounting's ``GaussianDpEvent(1/mu)`` (RDP is an upper bound,
    PLD is tight up to discretisation).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    mu = float(mu)
    if mu < 0 or math.isnan(mu):
        raise ValueError(f"mu must be >= 0, got {mu}")
    if mu == 0.0:
        return 0.0
    if math.isinf(mu):
        return math.inf
    if accountant == "analytic":
        from scipy.optimize import brentq
        from scipy.stats import norm

        def dlt(eps):
            # log-space second term: e^eps * Phi(.) overflows for large eps
            return norm.cdf(mu / 2 - eps / mu) - math.exp(eps + norm.logcdf(-mu / 2 - eps / mu))

        if dlt(0.0) <= delta:
            return 0.0
        hi = 1.0
        while dlt(hi) > delta:
            hi *= 2.0
        return float(brentq(lambda e: dlt(e) - delta, 0.0, hi, xtol=1e-12, rtol=1e-12))
    if accountant == "pld":  # bounded grid: a huge mu falls back to RDP with a named warning
        from redeem_jax.privacy.analysis import accounting

        return accounting.epsilon(1.0 / mu, 1.0, 1, delta, accountant="pld")
    if accountant != "rdp":
        raise ValueError(f"accountant must be 'rdp', 'pld' or 'analytic', got {accountant!r}")
    import dp_accounting

    return float(dp_accounting.rdp.RdpAccountant().compose(dp_accounting.GaussianDpEvent(1.0 / mu)).get_epsilon(delta))


def epsilon_matrix(
    leakage, sigma_over_delta: float, delta: float, accountant: str = "rdp", releases: int = 1, decimals: int = 10
) -> np.ndarray:
    """``(epsilon, delta)``-DP from ``u`` to ``v`` for every pair (Cyffers & Bellet 2022 network DP).

    The view of ``v`` is equivalent to one Gaussian mechanism on ``z_u`` with
    ``mu = (Delta / sigma) sqrt(releases * leakage[u, v])`` (``releases`` = ``T`` for
    ``value="every_step"``, else 1), i.e. noise multiplier ``1 / mu``; ``epsilon`` from
    :func:`gaussian_epsilon` (``accountant="rdp" | "pld" | "analytic"``, Balle & Wang 2018).
    Equal leakages (after rounding to ``decimals``) are accounted once. The diagonal is ``inf``.
    """
    L = np.asarray(leakage, dtype=np.float64)
    if sigma_over_delta <= 0:
        raise ValueError(f"sigma_over_delta must be > 0, got {sigma_over_delta}")
    if np.any(L < 0):
        raise ValueError("leakage must be non-negative")
    key = np.round(L, decimals)
    out = np.empty_like(L)
    for val in np.unique(key):
        mu = math.sqrt(releases * val) / sigma_over_delta if np.isfinite(val) else math.inf
        out[key == val] = gaussian_epsilon(mu, delta, accountant)
    if L.ndim == 2 and L.shape[0] == L.shape[1]:
        np.fill_diagonal(out, np.inf)
    return out
