"""Reconstruction attack on gossip averaging by colluding curious nodes (host-side numpy, float64).

El Mrini, Cyffers & Bellet 2024, "Privacy attacks in decentralized learning" (ICML 2024), Sec. 3:
every message a node receives is a known linear combination of the private values ``z`` (the
mixing matrices are public), so the attackers stack what they saw into a *knowledge matrix*
``K_T`` and solve ``K_T z = Y_T``. Nodes whose private value is determined by that system are
reconstructed exactly, even when they are not the attackers' neighbours.

Model and notation are those of :mod:`redeem_jax.privacy.network_dp` (``W[i, j] != 0`` means ``i``
receives ``x_j``): messages ``m_0 = z (+ eta)``, ``m_{t+1} = W_t m_t (+ z) (+ eta_{t+1})`` for the
noise regimes ``"once"`` / ``"fresh"`` and ``value="every_step"`` (the D-GD proxy in which each
node injects the same private vector, e.g. its gradient, every round). The observation operator
is ``network_dp.observation_matrix`` stacked over the attackers: ``y = A z + N eta``. Attackers
know their own ``z`` (and their own noise draws), move them to the left-hand side and solve for
the others:

* ``z_hat_U = A_U^+ (y - A_S z_S - N_S eta_S)`` (least squares, minimum norm);
* node ``u`` is identifiable iff ``e_u`` lies in the row space of ``A_U``, i.e. the leverage
  ``(A_U^+ A_U)_{uu} = 1`` (equivalently, no null vector of ``A_U`` touches ``u``; the paper reads
  the same off the reduced row echelon form of ``K_T``). Other nodes admit two different private
  values with identical observations.

With noise the same solve returns ``z_u + (noise the system cannot separate)``: with Muffliato's
noise drawn once it is ``z_u + eta_u`` for identifiable ``u`` (local DP, FIELD_NOTES).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from redeem_jax.privacy.analysis import network_dp

__all__ = [
    "GossipView",
    "observation_operator",
    "identifiable",
    "simulate_gossip",
    "gather_view",
    "reconstruct",
    "relative_errors",
]

_RTOL = 1e-9  # singular values of A_U below rtol * s_max are exactly 0 (float64 roundoff)
_LEVERAGE_TOL = 1e-6  # (A_U^+ A_U)_uu within this of 1: e_u is in the row space


class GossipView(NamedTuple):
    """What the colluding attackers hold: the observed scalars and their own private inputs.

    ``y [R, d]``: rows in the order of :func:`observation_operator`; ``own_values [|S|, d]``: the
    attackers' ``z`` (in the sorted order of ``attackers``); ``own_noise``: their noise draws
    (``[|S|, d]`` with noise once, ``[T, |S|, d]`` with fresh noise) or ``None`` (no noise).
    """

    y: np.ndarray
    own_values: np.ndarray
    own_noise: np.ndarray | None = None


def _check_attackers(attackers, n: int) -> np.ndarray:
    s = np.unique(np.asarray(attackers, dtype=np.int64).reshape(-1))
    if s.size == 0:
        raise ValueError("attackers must name at least one node")
    if s[0] < 0 or s[-1] >= n:
        raise ValueError(f"attacker ids must be in [0, {n}), got {s.tolist()}")
    return s


# the same shape checks as the leakage accounting: one validator for the [T, n, n] stack
_stack = network_dp._as_stack


def observation_operator(
    mixing_matrices, attackers: Sequence[int], noise: str = "once", observe: str = "neighbors", value: str = "once"
):
    """``(A [R, n], N [R, P])``: the pooled view ``y = A z + N eta`` of the colluding ``attackers``.

    The knowledge matrix ``K_T`` of El Mrini et al. 2024 (Sec. 3) is ``A``: the rows of
    :func:`network_dp.observation_matrix` of each attacker (sorted ids), concatenated. With
    ``value="every_step"`` pass ``noise="fresh"`` (as in network_dp), also for a noiseless run.
    """
    w = _stack(mixing_matrices)
    s = _check_attackers(attackers, w.shape[1])
    # one observation_matrix per attacker: |S| is small and this is host-side accounting
    views = [network_dp.observation_matrix(w, int(v), noise=noise, observe=observe, value=value) for v in s]
    return np.concatenate([a for a, _ in views]), np.concatenate([b for _, b in views])


def _solve(A: np.ndarray, attackers: np.ndarray, rtol: float):
    """SVD of ``A_U`` (unknown columns): ``(unknown ids, U_kept, s_kept, Vt_kept, leverage over U)``."""
    n = A.shape[1]
    unknown = np.setdiff1d(np.arange(n), attackers)
    Au = A[:, unknown]
    if Au.size == 0:
        return unknown, None, None, None, np.zeros(0)
    Uu, s, Vt = np.linalg.svd(Au, full_matrices=False)
    keep = s > rtol * s[0] if s.size and s[0] > 0 else np.zeros(s.shape, bool)
    Uu, s, Vt = Uu[:, keep], s[keep], Vt[keep]
    leverage = np.sum(Vt**2, axis=0)  # diag of A_U^+ A_U, the projector onto row space
    return unknown, Uu, s, Vt, leverage


def identifiable(
    mixing_matrices,
    attackers: Sequence[int],
    noise: str = "once",
    observe: str = "neighbors",
    value: str = "once",
    rtol: float = _RTOL,
) -> np.ndarray:
    """``bool [n]``: nodes whose private value the attackers' noiseless view determines exactly.

    El Mrini et al. 2024, Sec. 3 (reconstructible nodes of ``K_T z = Y_T``): ``u`` is identifiable
    iff ``(A_U^+ A_U)_{uu} = 1`` with ``A_U`` the knowledge matrix without the attackers' own
    (known) columns. Attackers are marked True.
    """
    w = _stack(mixing_matrices)
    s = _check_attackers(attackers, w.shape[1])
    A, _ = observation_operator(w, s, noise, observe, value)
    unknown, _, _, _, leverage = _solve(A, s, rtol)
    out = np.zeros(w.shape[1], bool)
    out[s] = True
    out[unknown] = leverage > 1.0 - _LEVERAGE_TOL
    return out


def _observed_index(w: np.ndarray, attackers: np.ndarray, observe: str):
    """``(t, j)`` of every observed scalar, in ``observation_operator``'s row order.

    Mirrors ``network_dp.observation_matrix``: with ``"neighbors"`` attacker ``v`` sees
    ``m_{t, j}`` for ``j`` in ``{j : W_t[v, j] != 0} U {v}`` (sorted); with ``"self"`` it sees its
    own next state ``(W_t m_t)_v``. ``tests/test_gossip_reconstruction.py`` checks that the two
    agree row for row.
    """
    T = w.shape[0]
    ts, js = [], []
    for v in attackers:
        for t in range(T):
            nb = np.union1d(np.flatnonzero(w[t, v] != 0), [v]) if observe == "neighbors" else np.array([v])
            ts.append(np.full(nb.size, t))
            js.append(nb)
    return np.concatenate(ts), np.concatenate(js)


def gather_view(messages, next_states, mixing_matrices, attackers: Sequence[int], observe: str = "neighbors"):
    """``y [R, d]``: gather the attackers' view from a run's messages ``[T, n, d]`` (sent in round
    ``t``) and pre-noise next states ``W_t m_t`` ``[T, n, d]`` (only read with ``observe="self"``)."""
    w = _stack(mixing_matrices)
    s = _check_attackers(attackers, w.shape[1])
    if observe not in network_dp.OBSERVE_MODES:
        raise ValueError(f"observe must be one of {network_dp.OBSERVE_MODES}, got {observe!r}")
    t, j = _observed_index(w, s, observe)
    src = np.asarray(messages if observe == "neighbors" else next_states, dtype=np.float64)
    if src.shape[:2] != w.shape[:2]:
        raise ValueError(f"messages must be [T={w.shape[0]}, n={w.shape[1]}, d], got {src.shape}")
    return src[t, j]


def simulate_gossip(
    mixing_matrices,
    z,
    attackers: Sequence[int],
    *,
    sigma: float = 0.0,
    seed: int = 0,
    noise: str = "once",
    observe: str = "neighbors",
    value: str = "once",
) -> GossipView:
    """Run gossip averaging on private values ``z [n, d]`` and return what the attackers observe.

    ``m_0 = z + eta_0``, ``m_{t+1} = W_t m_t (+ z if value="every_step") (+ eta_{t+1} if
    noise="fresh")``, ``eta ~ N(0, sigma^2)`` iid (``sigma = 0``: no noise) — the regimes of
    :mod:`network_dp` (Muffliato: noise once). Float64 numpy on the host: the attack inverts
    ill-conditioned systems, float32 messages would hide exact reconstruction behind roundoff.
    """
    w = _stack(mixing_matrices)
    T, n, _ = w.shape
    s = _check_attackers(attackers, n)
    network_dp._check_modes(noise, observe, value)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[0] != n:
        raise ValueError(f"z must be [n={n}, d], got shape {z.shape}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    draws = 1 if noise == "once" else T
    eta = sigma * rng.standard_normal((draws, n, z.shape[1])) if sigma > 0 else np.zeros((draws, n, z.shape[1]))
    msgs = np.empty((T, n, z.shape[1]))
    nxt = np.empty_like(msgs)
    m = z + eta[0]
    for t in range(T):  # rounds: a handful, host-side (the attack, not the training, is measured)
        msgs[t] = m
        nxt[t] = w[t] @ m
        m = nxt[t] + (z if value == "every_step" else 0.0) + (eta[t + 1] if noise == "fresh" and t + 1 < T else 0.0)
    y = gather_view(msgs, nxt, w, s, observe)
    own_noise = None if sigma == 0 else (eta[0, s] if noise == "once" else eta[:, s])
    return GossipView(y, z[s], own_noise)


def reconstruct(
    mixing_matrices,
    attackers: Sequence[int],
    view: GossipView,
    noise: str = "once",
    observe: str = "neighbors",
    value: str = "once",
    rtol: float = _RTOL,
):
    """``(z_hat [n, d], identifiable bool [n])``: least-squares solution of the knowledge system.

    El Mrini et al. 2024, Sec. 3: ``K_T z = Y_T`` with the attackers' own contributions removed
    from ``Y_T`` (their ``z`` and noise are known to them); ``z_hat_U = A_U^+ y'`` (minimum norm).
    ``z_hat`` is exact (noiseless run) on identifiable nodes; elsewhere it is the minimum-norm
    guess. Attackers' rows are their own values.
    """
    w = _stack(mixing_matrices)
    n = w.shape[1]
    s = _check_attackers(attackers, n)
    A, N = observation_operator(w, s, noise, observe, value)
    y = np.asarray(view.y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    own = np.asarray(view.own_values, dtype=np.float64).reshape(s.size, -1)
    if y.shape[0] != A.shape[0] or own.shape[1] != y.shape[1]:
        raise ValueError(
            f"view.y must be [{A.shape[0]}, d] and view.own_values [{s.size}, d]; "
            f"got {y.shape} and {np.shape(view.own_values)}"
        )
    y = y - A[:, s] @ own
    if view.own_noise is not None:
        # noise columns: eta_j (once) or eta_{t, j} at column n t + j (fresh, round-major)
        own_eta = np.asarray(view.own_noise, dtype=np.float64).reshape(-1, s.size, y.shape[1])
        cols = (n * np.arange(own_eta.shape[0])[:, None] + s[None]).reshape(-1)
        if cols.max() >= N.shape[1]:
            raise ValueError(
                f"view.own_noise has {own_eta.shape[0]} draws per attacker; the {noise!r} regime has {N.shape[1] // n}"
            )
        y = y - N[:, cols] @ own_eta.reshape(-1, y.shape[1])
    unknown, Uu, sv, Vt, leverage = _solve(A, s, rtol)
    z_hat = np.zeros((n, y.shape[1]))
    z_hat[s] = own
    ident = np.zeros(n, bool)
    ident[s] = True
    if unknown.size and sv is not None and sv.size:
        z_hat[unknown] = Vt.T @ ((Uu.T @ y) / sv[:, None])
        ident[unknown] = leverage > 1.0 - _LEVERAGE_TOL
    return z_hat, ident


def relative_errors(z_hat, z) -> np.ndarray:
    """Per-node ``||z_hat_u - z_u|| / ||z_u||`` (``[n]``), the reconstruction error El Mrini et al. report."""
    z_hat = np.asarray(z_hat, dtype=np.float64).reshape(len(z_hat), -1)
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    return np.linalg.norm(z_hat - z, axis=1) / np.maximum(np.linalg.norm(z, axis=1), 1e-300)
