"""Empirical privacy auditing with canaries: lower bounds on epsilon that must stay below the accountant's.

* Many runs (Jagielski, Ullman & Oprea 2020, "Auditing differentially private machine learning";
  Nasr et al. 2021, "Adversary instantiation"): a test that says "canary in" when
  its score is above a threshold has, under (eps, delta)-DP, ``TPR <= e^eps FPR + delta`` and
  ``1 - FPR <= e^eps (1 - TPR) + delta``. One-sided Clopper–Pearson bounds on TPR (lower) and FPR
  (upper) from the trials turn an observed test into a lower bound on eps holding with
  confidence ``1 - alpha``.
* One run (Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training run",
  NeurIPS 2023, main theorem of Sec. 3 and Alg. 1): ``m`` canaries each included with probability
  1/2 in a single run; the auditor guesses "in" for the ``k_+`` highest scores and "out" for the
  ``k_-`` lowest. Under pure eps-DP the number of correct guesses among the ``r = k_+ + k_-``
  is stochastically dominated by ``Binomial(r, e^eps / (1 + e^eps))``; under (eps, delta)-DP a
  ``2 m delta``-weighted correction is added (their (eps, delta) theorem; p-value as in their
  App. D). The bound is the largest eps whose p-value is still <= ``beta``.
* :func:`audit_dp_sgd`: both audits of one step of the library's DP-SGD gradient
  (:func:`redeem_jax.privacy.dp_sgd.make_dp_gradient_fn`), canaries entering the batch through its
  mask (add/remove adjacency), trials vmapped over split keys.

Host-side statistics are numpy/scipy float64; only the mechanism runs in JAX.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

__all__ = [
    "clopper_pearson",
    "clopper_pearson_epsilon",
    "ScoreAudit",
    "scores_epsilon",
    "one_run_p_value",
    "one_run_epsilon_from_counts",
    "one_run_epsilon",
    "DpSgdAudit",
    "audit_dp_sgd",
]

_EPS_MAX = 50.0  # bisection ceiling: e^50 is beyond any count an audit can observe
_BISECT = 60


# --------------------------------------------------------------------------- #
# Clopper–Pearson (many runs)
# --------------------------------------------------------------------------- #
def clopper_pearson(k, n, alpha: float = 0.05, side: str = "lower"):
    """One-sided Clopper–Pearson bound on a binomial rate at confidence ``1 - alpha`` (Clopper & Pearson 1934).

    ``"lower"``: ``Beta.ppf(alpha; k, n - k + 1)`` (0 at ``k = 0``); ``"upper"``:
    ``Beta.ppf(1 - alpha; k + 1, n - k)`` (1 at ``k = n``). Vectorised over ``k`` and ``n``.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n and n >= 1")
    with np.errstate(invalid="ignore"):
        if side == "lower":
            return np.where(k == 0, 0.0, stats.beta.ppf(alpha, np.maximum(k, 1e-300), n - k + 1))
        if side == "upper":
            return np.where(k == n, 1.0, stats.beta.ppf(1.0 - alpha, k + 1, np.maximum(n - k, 1e-300)))
    raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")


def _eps_from_rates(tpr_lo, fpr_hi, delta):
    """max(log((TPR_lo - δ)/FPR_hi), log((1 - FPR_hi - δ)/(1 - TPR_lo)), 0) (Jagielski et al. 2020).

    Both ratios use the *pessimistic* end of each interval (a lower TPR and a higher FPR only
    shrink them), so the bound holds whenever both intervals do.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log(np.maximum(tpr_lo - delta, 0.0) / fpr_hi)
        e2 = np.log(np.maximum(1.0 - fpr_hi - delta, 0.0) / (1.0 - tpr_lo))
    return np.maximum(np.maximum(np.nan_to_num(e1, nan=0.0, neginf=0.0), np.nan_to_num(e2, nan=0.0, neginf=0.0)), 0.0)


def clopper_pearson_epsilon(tp, n_in, fp, n_out, delta: float = 0.0, alpha: float = 0.05):
    """Lower bound on eps from a fixed distinguishing test (Jagielski et al. 2020; Nasr et al. 2021).

    ``tp`` of ``n_in`` trials with the canary in were flagged "in", ``fp`` of ``n_out`` without it.
    TPR_lo and FPR_hi are one-sided Clopper–Pearson bounds at ``alpha / 2`` each, so the result
    holds with confidence ``1 - alpha`` (union bound). Zero counts are handled by the Beta
    quantiles; the result is clipped at 0. Vectorised over the counts.
    """
    _check_delta(delta)
    tpr_lo = clopper_pearson(tp, n_in, alpha / 2, "lower")
    fpr_hi = clopper_pearson(fp, n_out, alpha / 2, "upper")
    out = _eps_from_rates(tpr_lo, fpr_hi, delta)
    return float(out) if out.ndim == 0 else out


class ScoreAudit(NamedTuple):
    """Result of :func:`scores_epsilon`: the bound and the held-out test it came from."""

    epsilon: float
    threshold: float
    tp: int
    n_in: int
    fp: int
    n_out: int


def _counts_at(sorted_in, sorted_out, thresholds):
    """ "in iff score >= t": true / false positives at every threshold (searchsorted, no loop)."""
    tp = sorted_in.size - np.searchsorted(sorted_in, thresholds, side="left")
    fp = sorted_out.size - np.searchsorted(sorted_out, thresholds, side="left")
    return tp, fp


def scores_epsilon(
    scores_in,
    scores_out,
    delta: float = 0.0,
    alpha: float = 0.05,
    threshold_fraction: float = 0.5,
    threshold: float | None = None,
) -> ScoreAudit:
    """Clopper–Pearson eps lower bound from attack scores, maximised over the threshold.

    The threshold (test "in iff score >= t") is picked on the first ``threshold_fraction`` of
    each score array, maximising the same bound there, and the bound is then computed on the
    remaining trials: picking the best of many thresholds on the data that certify it would
    void the ``1 - alpha`` confidence (the split of Jagielski et al. 2020 and jax_privacy's
    auditing). ``threshold`` given: no split, all trials certify it. Trials must be iid.
    """
    s_in = np.asarray(scores_in, dtype=np.float64).reshape(-1)
    s_out = np.asarray(scores_out, dtype=np.float64).reshape(-1)
    if s_in.size < 2 or s_out.size < 2:
        raise ValueError("need at least 2 scores with the canary in and 2 with it out")
    if threshold is None:
        if not 0.0 < threshold_fraction < 1.0:
            raise ValueError(f"threshold_fraction must be in (0, 1), got {threshold_fraction}")
        k_in = min(max(int(round(threshold_fraction * s_in.size)), 1), s_in.size - 1)
        k_out = min(max(int(round(threshold_fraction * s_out.size)), 1), s_out.size - 1)
        sel_in, sel_out = np.sort(s_in[:k_in]), np.sort(s_out[:k_out])
        cand = np.unique(np.concatenate([sel_in, sel_out]))
        tp, fp = _counts_at(sel_in, sel_out, cand)
        eps_sel = clopper_pearson_epsilon(tp, k_in, fp, k_out, delta, alpha)
        threshold = float(cand[int(np.argmax(eps_sel))])
        s_in, s_out = s_in[k_in:], s_out[k_out:]
    tp, fp = _counts_at(np.sort(s_in), np.sort(s_out), np.asarray([threshold]))
    eps = clopper_pearson_epsilon(int(tp[0]), s_in.size, int(fp[0]), s_out.size, delta, alpha)
    return ScoreAudit(
        float(np.asarray(eps).reshape(())), float(threshold), int(tp[0]), s_in.size, int(fp[0]), s_out.size
    )


def _check_delta(delta):
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


# --------------------------------------------------------------------------- #
# One run (Steinke, Nasr & Jagielski 2023)
# --------------------------------------------------------------------------- #
def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """P[at least ``v`` of ``r`` guesses correct] under (eps, delta)-DP (Steinke et al. 2023, Sec. 3; App. D).

    ``q = e^eps / (1 + e^eps)``; pure DP: ``P[Binomial(r, q) >= v]``; with ``delta > 0`` add
    ``2 m delta max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i``.
    """
    if not (0 <= v <= r <= m):
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    _check_delta(delta)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    p = float(stats.binom.sf(v - 1, r, q))
    if delta > 0 and v > 0:
        pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ...
        p += 2.0 * m * delta * float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(p, 1.0)


def one_run_epsilon_from_counts(m: int, r: int, v: int, delta: float = 0.0, beta: float = 0.05) -> float:
    """Largest eps with ``one_run_p_value(m, r, v, eps, delta) <= beta`` (Steinke et al. 2023, Alg. 1), by bisection.

    The p-value grows with eps, so every eps below the returned value is rejected at level
    ``beta``: the mechanism is not (eps, delta)-DP with confidence ``1 - beta``. 0 when even
    eps = 0 is not rejected.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    if one_run_p_value(m, r, v, 0.0, delta) > beta:
        return 0.0
    lo, hi = 0.0, _EPS_MAX
    if one_run_p_value(m, r, v, hi, delta) <= beta:
        return hi
    for _ in range(_BISECT):
        mid = 0.5 * (lo + hi)
        if one_run_p_value(m, r, v, mid, delta) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_epsilon(scores, included, k_plus: int, k_minus: int, delta: float = 0.0, beta: float = 0.05) -> float:
    """One-run eps lower bound from canary ``scores [m]`` and inclusion bits ``included [m]``
    (Steinke et al. 2023, Alg. 1).

    Guess "in" for the ``k_plus`` highest scores and "out" for the ``k_minus`` lowest, abstain on
    the rest; count the correct guesses; :func:`one_run_epsilon_from_counts`. ``k_plus`` and
    ``k_minus`` must be fixed before looking at the scores (tuning them on the same run voids
    the confidence). Inclusion must be iid Bernoulli(1/2) per canary.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    inc = np.asarray(included, dtype=bool).reshape(-1)
    m = s.size
    if inc.size != m:
        raise ValueError(f"scores and included must have the same length, got {m} and {inc.size}")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m or k_plus + k_minus == 0:
        raise ValueError(f"need k_plus, k_minus >= 0 and 0 < k_plus + k_minus <= m={m}, got {k_plus}, {k_minus}")
    order = np.argsort(s, kind="stable")
    v = int(np.sum(inc[order[m - k_plus :]])) + int(np.sum(~inc[order[:k_minus]]))
    return one_run_epsilon_from_counts(m, k_plus + k_minus, v, delta, beta)


# --------------------------------------------------------------------------- #
# End to end: one step of the library's DP-SGD
# --------------------------------------------------------------------------- #
class DpSgdAudit(NamedTuple):
    """Audited lower bounds and the accountant's eps for one DP-SGD step (:func:`audit_dp_sgd`)."""

    clopper_pearson: float
    one_run: float
    accountant: float


def _canary_model(dim: int):
    """Least-squares linear model without bias at theta = 0, label -1: example x has gradient
    (0 - (-1)) x = x, so a canary row *is* its gradient and its direction is known exactly."""
    from redeem_jax import models

    return models.get("linear", (dim,), 1, task="regression", use_bias=False)


@functools.lru_cache(maxsize=16)
def _many_runs_fn(noise_multiplier: float, clip_norm: float, dim: int, background: int, canary_scale: float):
    """Jitted ``(canary_in [trials], keys [trials], k_bg) -> scores [trials]``: one DP-SGD step per trial (vmap)."""
    from redeem_jax.privacy import dp_sgd

    model = _canary_model(dim)
    fn = dp_sgd.make_dp_gradient_fn(model, clip_norm, noise_multiplier, expected_batch_size=1.0)
    theta = jnp.zeros((model.num_params,), jnp.float32)
    u = jnp.zeros((dim,), jnp.float32).at[0].set(1.0)
    y = -jnp.ones((background + 1,), jnp.float32)

    def scores(canary_in, keys, k_bg):
        # the background examples are the same in every trial (only the canary differs)
        x = jnp.concatenate([canary_scale * clip_norm * u[None], jax.random.normal(k_bg, (background, dim))])

        def one_trial(inc, k):
            mask = jnp.concatenate([inc[None], jnp.ones((background,), bool)])
            return jnp.dot(fn(theta, x, y, mask, k)[1], u)

        return jax.vmap(one_trial)(canary_in, keys)

    return jax.jit(scores)


@functools.lru_cache(maxsize=16)
def _one_run_fn(noise_multiplier: float, clip_norm: float, m: int, canary_scale: float):
    """Jitted ``(included [m], key) -> scores [m]``: one DP-SGD step with ``m`` orthogonal canaries."""
    from redeem_jax.privacy import dp_sgd

    model = _canary_model(m)
    fn = dp_sgd.make_dp_gradient_fn(model, clip_norm, noise_multiplier, expected_batch_size=1.0)
    xm = canary_scale * clip_norm * jnp.eye(m, dtype=jnp.float32)  # canary i has gradient direction e_i
    y = -jnp.ones((m,), jnp.float32)
    theta = jnp.zeros((model.num_params,), jnp.float32)
    return jax.jit(lambda included, key: fn(theta, xm, y, included, key)[1])


def audit_dp_sgd(
    key: jax.Array,
    noise_multiplier: float,
    clip_norm: float = 1.0,
    *,
    trials: int = 10_000,
    canaries: int = 1000,
    dim: int = 16,
    background: int = 4,
    canary_scale: float = 2.0,
    delta: float = 1e-5,
    alpha: float = 0.05,
    k_plus: int | None = None,
    k_minus: int | None = None,
) -> DpSgdAudit:
    """Audit one full-batch step of :func:`dp_sgd.make_dp_gradient_fn` both ways (white-box gradient canary).

    Mechanism: ``sum_i clip(g_i, C) + N(0, sigma^2 C^2)`` on a batch of ``background`` random
    examples plus canaries entering through the batch mask (add/remove adjacency); each canary's
    gradient has norm ``canary_scale * C`` (clipped to ``C``). Score: inner product of the noisy
    gradient with the canary direction (Nasr et al. 2021's gradient canary).

    * Clopper–Pearson (:func:`scores_epsilon`): ``trials`` independent steps, half with the
      canary in, one ``jax.vmap`` over split keys.
    * One run (:func:`one_run_epsilon`): a single step with ``canaries`` orthogonal canaries
      (``e_i`` directions in dimension ``canaries``), each in with probability 1/2; ``k_plus =
      k_minus = canaries // 10`` by default.

    ``accountant`` is ``rj.privacy.epsilon(sigma, 1.0, 1, delta)`` (RDP), the claim both audits
    must stay below. Canaries are per-example: the step is (eps, delta)-DP w.r.t. each of them.
    """
    from redeem_jax.privacy.analysis import accounting

    if trials < 4 or canaries < 2:
        raise ValueError(f"need trials >= 4 and canaries >= 2, got {trials}, {canaries}")
    k_cp, k_bg, k_inc, k_noise = jax.random.split(key, 4)
    sigma, c, scale = float(noise_multiplier), float(clip_norm), float(canary_scale)

    # many runs: one canary, `trials` independent steps in one vmap
    canary_in = jnp.arange(trials) % 2 == 0  # alternate so any prefix split keeps both classes
    scores = _many_runs_fn(sigma, c, int(dim), int(background), scale)(canary_in, jax.random.split(k_cp, trials), k_bg)
    scores = np.asarray(scores, np.float64)
    inc_np = np.asarray(canary_in)
    cp = scores_epsilon(scores[inc_np], scores[~inc_np], delta=delta, alpha=alpha).epsilon

    # one run: `canaries` orthogonal canaries, each in with probability 1/2, in a single step
    m = int(canaries)
    included = jax.random.bernoulli(k_inc, 0.5, (m,))
    g = _one_run_fn(sigma, c, m, scale)(included, k_noise)
    kp = m // 10 if k_plus is None else int(k_plus)
    km = m // 10 if k_minus is None else int(k_minus)
    one = one_run_epsilon(np.asarray(g), np.asarray(included), kp, km, delta=delta, beta=alpha)

    acc = accounting.epsilon(noise_multiplier, 1.0, 1, delta)
    return DpSgdAudit(float(cp), float(one), float(acc))
