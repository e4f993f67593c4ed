"""Privacy accounting for DP-SGD, computed by dp-accounting (never by hand).

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy", Alg. 1)
releases, at every step, the sum of per-example gradients clipped to norm C on
a random batch, plus Gaussian noise N(0, σ²C²).  One step is the *subsampled
Gaussian mechanism*; a run is its ``steps``-fold self-composition.  We describe
that run as a ``dp_accounting`` event and let one of Google's accountants turn
it into ε at a given δ:

* ``"rdp"`` — Rényi DP (Mironov 2017, "Rényi Differential Privacy", Prop. 3 for
  composition and Prop. 6 / Thm. 8 of Balle et al. 2020 for the conversion to
  (ε, δ)); the subsampled-Gaussian RDP curve is Mironov, Talwar & Zhang 2019.
  Fast (tens of ms), slightly loose.
* ``"pld"`` — privacy loss distributions (Koskela, Jälkö & Honkela 2020;
  Google's PLD accountant, Doroshenko et al. 2022 "Connect the dots").
  Numerically tight up to the discretization (``1e-4`` in the privacy loss),
  slower (~0.4 s per call).  Always ε_PLD <= ε_RDP up to that discretization.

Bounded cost.  The PLD grid of one step spans the privacy-loss range of the
subsampled Gaussian, which grows like 1/σ² (σ = 0.01 needs 6·10⁷ points per step
at 1e-4, σ = 1e-4 needs 5·10¹¹).  Before allocating anything we read that range
from dp-accounting's connect-the-dots bounds, and before composing we read the
composed grid from its Chernoff truncation bounds; a setting above
``PLD_MAX_POINTS`` (one step) or ``PLD_MAX_COMPOSED_POINTS`` (after ``steps``) is
accounted by RDP instead, with a :class:`PLDFallbackWarning` naming σ, q, steps
and the discretization.  RDP's ε is an upper bound on PLD's, so the reported ε
stays a valid privacy claim; ``warnings.simplefilter("error",
PLDFallbackWarning)`` turns the fallback into an error.  The one-step PLD is
built once per (σ, q) and self-composed for every step count (``spent``), and
every ε is cached per (σ, q, steps, δ, accountant, sampling).

Sampling and adjacency:

* ``"poisson"`` (each example enters each batch independently with probability
  q): add/remove-one adjacency, under which the clipped sum moves by at most C,
  so the Gaussian event gets σ as is (``PoissonSampledDpEvent``).
* ``"fixed"`` (batches of exactly q·m examples drawn without replacement):
  replace-one adjacency, the only one dp-accounting analyses for sampling
  without replacement (RDP bound of Wang, Balle & Kasiviswanathan 2019). Under
  replace-one the clipped sum moves by up to 2C, and that bound takes the noise
  standard deviation *in units of the sensitivity*: the event gets σ/2. Passing
  σ unchanged (dp-accounting issue #378, open) under-reports ε: 19.05 instead of
  the exact 46.21 for ten full-batch steps at σ = 1, δ = 1e-5. With q = 1 there
  is no subsampling and the step is a Gaussian mechanism of sensitivity 2C,
  ``GaussianDpEvent(σ/2)``, which both accountants account (PLD exactly).

The replace-one bound for q < 1 is valid but loose (ε = 15.6 at q = 0.01,
σ = 1.1, 1000 steps, where a realisable pair of neighbouring datasets gives
2.4–2.5 and Poisson sampling 1.7): prefer Poisson sampling for tight ε.

Public API::

    epsilon(noise_multiplier, sample_rate, steps, delta, accountant="rdp", sampling="poisson")
    noise_multiplier_for(target_epsilon, sample_rate, steps, delta, accountant="rdp", sampling="poisson")
    spent(noise_multiplier, sample_rate, steps_array, delta, accountant="rdp", sampling="poisson")
    dp_event(noise_multiplier, sample_rate, steps, sampling="poisson")
    make_accountant(accountant="rdp", sampling="poisson")
"""

from __future__ import annotations

import collections
import fractions
import functools
import math
import numbers
import warnings
from collections.abc import Sequence

import dp_accounting
import numpy as np
from dp_accounting import pld as _pld
from dp_accounting import rdp as _rdp
from scipy import optimize

__all__ = [
    "ACCOUNTANTS",
    "SAMPLINGS",
    "PLD_DISCRETIZATION",
    "PLD_MAX_POINTS",
    "PLD_MAX_COMPOSED_POINTS",
    "PLDFallbackWarning",
    "SENSITIVITY",
    "dp_event",
    "make_accountant",
    "epsilon",
    "noise_multiplier_for",
    "spent",
]

ACCOUNTANTS = ("rdp", "pld")
SAMPLINGS = ("poisson", "fixed")
# The PLD accountant's grid on the privacy-loss axis; 1e-4 keeps ε within ~1e-4
# of the exact value while a 1000-step composition still takes < 1 s.
PLD_DISCRETIZATION = 1e-4
# Grid sizes above which PLD falls back to RDP (module doc). Building the grid
# costs ~4 µs a point (2·10^6: σ ≈ 0.07 at q = 0.01, or the full-batch Gaussian
# of σ ≈ 0.14 over all steps; ~10 s, 16 MB); composing 10^7 points is 80 MB per
# array and a few seconds of FFT. σ = 0.01 (6·10^7 points) and below fall back.
PLD_MAX_POINTS = 2 * 10**6
PLD_MAX_COMPOSED_POINTS = 10**7
# dp-accounting's defaults in from_gaussian_mechanism and self_compose, restated
# so that the size checks see the grid the accountant would build.
_PLD_LOG_MASS_TRUNCATION = -50
_PLD_TAIL_MASS_TRUNCATION = 1e-15
# Fixed-size sampling is described to dp-accounting as `sample_size` out of
# `source_dataset_size` records; only their ratio enters the RDP bound, so we
# write q as a fraction with a denominator up to this bound.
_MAX_DATASET_SIZE = 10**9
# noise_multiplier_for never searches beyond this σ: past it a target ε is
# treated as unreachable (no useful model trains at σ > 1e6 anyway).
_MAX_NOISE_MULTIPLIER = 1e6
_MIN_NOISE_MULTIPLIER = 1e-3


# --------------------------------------------------------------------------
# argument checks: every message names the offending argument
# --------------------------------------------------------------------------
def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.generic)):
        try:
            value = float(np.asarray(value).item())
        except Exception as err:  # noqa: BLE001 - re-raised with the name
            raise TypeError(f"{name} must be a real number, got {value!r}") from err
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def _check_sample_rate(sample_rate) -> float:
    q = _check_real("sample_rate", sample_rate)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {q}")
    return q


def _check_delta(delta) -> float:
    d = _check_real("delta", delta)
    if not 0.0 < d < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {d}")
    return d


def _check_noise_multiplier(noise_multiplier) -> float:
    s = _check_real("noise_multiplier", noise_multiplier)
    if not s > 0.0:
        raise ValueError(f"noise_multiplier must be > 0, got {s}")
    if math.isinf(s):
        raise ValueError("noise_multiplier must be finite, got inf")
    return s


def _check_steps(steps, name: str = "steps") -> int:
    if isinstance(steps, bool):
        raise TypeError(f"{name} must be an integer, got {steps!r}")
    try:
        as_float = float(np.asarray(steps).item())
    except Exception as err:  # noqa: BLE001
        raise TypeError(f"{name} must be an integer, got {steps!r}") from err
    if math.isnan(as_float) or as_float != math.floor(as_float):
        raise ValueError(f"{name} must be an integer, got {steps!r}")
    t = int(as_float)
    if t < 0:
        raise ValueError(f"{name} must be >= 0, got {t}")
    return t


def _check_accountant(accountant: str) -> str:
    if not isinstance(accountant, str) or accountant.lower() not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    return accountant.lower()


def _check_sampling(sampling: str, accountant: str, q: float = 0.0) -> str:
    if not isinstance(sampling, str) or sampling.lower() not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    sampling = sampling.lower()
    if sampling == "fixed" and accountant == "pld" and q != 1.0:
        # dp-accounting's PLD accountant has no sampling-without-replacement event;
        # silently falling back to Poisson would under-report ε.
        raise ValueError(
            "sampling='fixed' with sample_rate < 1 is only supported with "
            "accountant='rdp' (dp-accounting's PLD accountant has no analysis of "
            "sampling without replacement); use accountant='rdp' or "
            "sampling='poisson'"
        )
    return sampling


# --------------------------------------------------------------------------
# events and accountants
# --------------------------------------------------------------------------
# L2 sensitivity of the sum of per-example gradients clipped to norm C, in units
# of C, for each sampling scheme's neighbouring relation (see the module doc).
SENSITIVITY = {"poisson": 1.0, "fixed": 2.0}


def _one_step_event(noise_multiplier: float, q: float, sampling: str) -> dp_accounting.DpEvent:
    # dp-accounting's Gaussian event is N(0, σ²) on a query of sensitivity 1:
    # noise σC on a sum of sensitivity ΔC is the event GaussianDpEvent(σ/Δ).
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / SENSITIVITY[sampling])
    if sampling == "poisson":
        return dp_accounting.PoissonSampledDpEvent(q, gaussian)
    if q == 1.0:  # the whole shard every step: no subsampling to amplify
        return gaussian
    frac = fractions.Fraction(q).limit_denominator(_MAX_DATASET_SIZE)
    return dp_accounting.SampledWithoutReplacementDpEvent(
        source_dataset_size=frac.denominator, sample_size=frac.numerator, event=gaussian
    )


def dp_event(
    noise_multiplier: float, sample_rate: float, steps: int, sampling: str = "poisson"
) -> dp_accounting.DpEvent:
    """The dp-accounting event of ``steps`` DP-SGD steps (Abadi et al. 2016, Alg. 1).

    ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``
    for Poisson batches; for fixed-size batches (replace-one, sensitivity 2C) the
    inner event is ``SampledWithoutReplacementDpEvent(GaussianDpEvent(σ/2))``
    with q written as sample/dataset size, or ``GaussianDpEvent(σ/2)`` at q = 1.
    """
    s = _check_noise_multiplier(noise_multiplier)
    q = _check_sample_rate(sample_rate)
    t = _check_steps(steps)
    sampling = _check_sampling(sampling, "rdp", q)
    return dp_accounting.SelfComposedDpEvent(_one_step_event(s, q, sampling), t)


def make_accountant(
    accountant: str = "rdp", sampling: str = "poisson", sample_rate: float = 0.0
) -> dp_accounting.PrivacyAccountant:
    """A fresh dp-accounting accountant: RDP (Mironov 2017) or PLD (Koskela et al. 2020).

    The neighbouring relation follows the sampling scheme: add/remove-one for
    Poisson sampling, replace-one for fixed-size batches (the only relation
    dp-accounting analyses for sampling without replacement). A full batch
    (``sample_rate=1``) is a plain Gaussian event, accounted under either.
    """
    accountant = _check_accountant(accountant)
    sampling = _check_sampling(sampling, accountant, sample_rate)
    if accountant == "pld":
        return _pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    if sampling == "fixed" and sample_rate != 1.0:
        return _rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    return _rdp.RdpAccountant()


class PLDFallbackWarning(UserWarning):
    """A PLD setting whose grid would explode was accounted by RDP (an upper bound)."""


class _PLDTooLarge(Exception):
    pass


# Operation counts (tests assert on them, not on time): one-step PLD builds,
# PLD self-compositions, and fallbacks to RDP.
stats = collections.Counter()


def _pld_grid_points(std: float, q: float) -> int:
    """Points of the one-step PLD grid of a (subsampled) Gaussian, without building it."""
    from dp_accounting.pld import privacy_loss_mechanism as plm

    worst = 0
    for adjacency in (plm.AdjacencyType.REMOVE, plm.AdjacencyType.ADD):
        b = plm.GaussianPrivacyLoss(
            std, sampling_prob=q, adjacency_type=adjacency, log_mass_truncation_bound=_PLD_LOG_MASS_TRUNCATION
        ).connect_dots_bounds()
        span = (b.epsilon_upper - b.epsilon_lower) / PLD_DISCRETIZATION
        worst = max(worst, span + 2)
    return worst


def _too_large(what: str, points: float, limit: int, s: float, q: float, t: int) -> _PLDTooLarge:
    return _PLDTooLarge(
        f"accountant='pld' at noise_multiplier={s:g}, sample_rate={q:g}, "
        f"steps={t}, discretization={PLD_DISCRETIZATION:g} needs {points:.3g} "
        f"privacy-loss grid points {what} (limit {limit:.0e}): using the RDP "
        "bound instead (an upper bound on the PLD epsilon); pass "
        "accountant='rdp' or a larger noise_multiplier"
    )


@functools.lru_cache(maxsize=4)
def _pld_one_step(std: float, q: float):
    """The one-step PLD of the Poisson-subsampled Gaussian (Koskela et al. 2020;
    connect-the-dots, Doroshenko et al. 2022), built once per (σ, q)."""
    stats["pld_one_step"] += 1
    return _pld.privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=std,
        value_discretization_interval=PLD_DISCRETIZATION,
        sampling_prob=q,
        log_mass_truncation_bound=_PLD_LOG_MASS_TRUNCATION,
    )


def _composed_points(pmf, t: int) -> int:
    from dp_accounting.pld import common

    probs = getattr(pmf, "_probs", None)
    if probs is None or t == 1:  # sparse PMFs are small by construction
        return 0
    lo, hi = common.compute_self_convolve_bounds(probs, t, _PLD_TAIL_MASS_TRUNCATION)
    return hi - lo + 1


def _pld_epsilon(s: float, q: float, t: int, d: float, sampling: str) -> float:
    """ε by PLD, refusing (``_PLDTooLarge``) a grid above the limits before allocating it.

    Same arithmetic as ``PLDAccountant.compose(SelfComposedDpEvent(...))``: the
    one-step PLD self-composed ``t`` times, composed onto the identity PLD.
    """
    std = s / SENSITIVITY[sampling]
    if sampling == "fixed":  # q = 1: t Gaussians compose to one, std / sqrt(t)
        std, steps = std / math.sqrt(t), 1
    else:
        steps = t
    one_q = q if sampling == "poisson" else 1.0
    points = _pld_grid_points(std, one_q)
    if points > PLD_MAX_POINTS:
        raise _too_large("per step", points, PLD_MAX_POINTS, s, q, t)
    if sampling == "fixed":
        one = _pld.privacy_loss_distribution.from_gaussian_mechanism(
            standard_deviation=std,
            value_discretization_interval=PLD_DISCRETIZATION,
            log_mass_truncation_bound=_PLD_LOG_MASS_TRUNCATION,
        )
    else:
        one = _pld_one_step(std, one_q)
    composed = max(_composed_points(one._pmf_remove, steps), _composed_points(one._pmf_add, steps))
    if composed > PLD_MAX_COMPOSED_POINTS:
        raise _too_large(f"after {steps} steps", composed, PLD_MAX_COMPOSED_POINTS, s, q, t)
    if steps > 1:
        stats["pld_compose"] += 1
        one = one.self_compose(steps)
    run = _pld.privacy_loss_distribution.identity(value_discretization_interval=PLD_DISCRETIZATION)
    return float(run.compose(one).get_epsilon_for_delta(d))


@functools.lru_cache(maxsize=4096)
def _epsilon_cached(s: float, q: float, t: int, d: float, accountant: str, sampling: str) -> tuple[float, str | None]:
    """``(ε, why PLD fell back to RDP or None)``, cached per setting."""
    if t == 0:
        return 0.0, None
    if accountant == "pld":
        try:
            return _pld_epsilon(s, q, t, d, sampling), None
        except _PLDTooLarge as err:
            stats["pld_fallback"] += 1
            return _epsilon_cached(s, q, t, d, "rdp", sampling)[0], str(err)
    event = dp_accounting.SelfComposedDpEvent(_one_step_event(s, q, sampling), t)
    return float(make_accountant(accountant, sampling, q).compose(event).get_epsilon(d)), None


def _epsilon_warned(s, q, t, d, accountant, sampling, stacklevel=3) -> float:
    # Warn on every call, cached or not: the warnings filter decides what shows.
    eps, fallback = _epsilon_cached(s, q, t, d, accountant, sampling)
    if fallback is not None:
        warnings.warn(fallback, PLDFallbackWarning, stacklevel=stacklevel)
    return eps


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    sampling: str = "poisson",
) -> float:
    """ε of ``steps`` DP-SGD steps at the given δ (Abadi et al. 2016, Thm. 1).

    One step is the subsampled Gaussian mechanism with noise multiplier σ and
    sampling rate q; ``steps`` steps are its self-composition.  Accounted by
    dp-accounting's RDP accountant (Mironov 2017, Prop. 1 & 3; Mironov, Talwar &
    Zhang 2019 for subsampling) or PLD accountant (Koskela et al. 2020; Google's
    ``PLDAccountant`` with a 1e-4 discretization).  ``steps = 0`` gives 0.
    PLD settings whose grid exceeds ``PLD_MAX_POINTS`` per step or
    ``PLD_MAX_COMPOSED_POINTS`` composed are accounted by RDP (an upper bound)
    with a :class:`PLDFallbackWarning` naming the setting (module doc).

    Raises ``ValueError`` naming the argument when q ∉ (0, 1], δ ∉ (0, 1),
    σ <= 0, steps < 0, or ``accountant`` / ``sampling`` is unknown, and when
    ``sampling="fixed"`` with q < 1 is combined with ``accountant="pld"``.
    """
    s = _check_noise_multiplier(noise_multiplier)
    q = _check_sample_rate(sample_rate)
    t = _check_steps(steps)
    d = _check_delta(delta)
    acc = _check_accountant(accountant)
    smp = _check_sampling(sampling, acc, q)
    return _epsilon_warned(s, q, t, d, acc, smp)


def noise_multiplier_for(
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    sampling: str = "poisson",
) -> float:
    """Smallest σ whose ``steps`` DP-SGD steps are (target_epsilon, δ)-DP.

    Inverse of :func:`epsilon` (Abadi et al. 2016 accounting, RDP of Mironov
    2017 or PLD of Koskela et al. 2020) by Brent's method in σ, as
    dp-accounting's ``calibrate_dp_mechanism`` does (result on the private side:
    ``epsilon(noise_multiplier_for(e, ...), ...) <= e``, and within ~1e-3 of e
    for continuous accountants).  We find the bracket ourselves, geometrically in
    σ, because ε is convex-ish in log σ and dp-accounting's default bracket
    search starts at σ = 0 where the accountant returns inf.

    Raises ``ValueError`` naming the argument for invalid inputs, for
    ``steps = 0`` (no privacy is spent, so no σ is implied), and when the target
    ε needs σ > 1e6 (target_epsilon unreachable). Every evaluation goes through
    the size-checked, cached path of :func:`epsilon` (PLD falls back to RDP with a
    :class:`PLDFallbackWarning` where its grid would explode).
    """
    e = _check_real("target_epsilon", target_epsilon)
    if not e > 0.0 or math.isinf(e):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {e}")
    q = _check_sample_rate(sample_rate)
    t = _check_steps(steps)
    d = _check_delta(delta)
    acc = _check_accountant(accountant)
    smp = _check_sampling(sampling, acc, q)
    if t == 0:
        raise ValueError(
            "steps must be > 0 for noise_multiplier_for: 0 steps spend no privacy, "
            "so every noise_multiplier meets any target_epsilon"
        )

    def eps_at(s: float) -> float:
        return _epsilon_cached(s, q, t, d, acc, smp)[0]

    # Geometric bracket [lo, hi] with eps(lo) > target >= eps(hi).
    hi = 1.0
    while eps_at(hi) > e:
        hi *= 2.0
        if hi > _MAX_NOISE_MULTIPLIER:
            raise ValueError(
                f"target_epsilon={e} is unreachable: even noise_multiplier="
                f"{_MAX_NOISE_MULTIPLIER:g} gives epsilon="
                f"{eps_at(_MAX_NOISE_MULTIPLIER):.3g} at sample_rate={q}, "
                f"steps={t}, delta={d}"
            )
    lo = hi / 2.0
    while eps_at(lo) <= e:
        hi = lo
        lo /= 2.0
        if lo < _MIN_NOISE_MULTIPLIER:
            # So large a target is met by almost no noise; say so rather than
            # returning a σ at which the accountants are numerically unreliable.
            raise ValueError(
                f"target_epsilon={e} is unreachable in a meaningful way: it is met "
                f"by noise_multiplier < {_MIN_NOISE_MULTIPLIER:g}"
            )

    # dp-accounting's calibrate_dp_mechanism (Brent's method, then one step of
    # tol to the private side), evaluated through eps_at so that every PLD call
    # is size-checked and cached. ε(σ) stays non-increasing across a PLD -> RDP
    # fallback (ε_RDP >= ε_PLD and the fallback region is the small-σ end).
    tol = 1e-5 * hi  # 1e-5 relative in σ moves ε by ~1e-5·ε: inside the 1e-3 promise
    sigma = optimize.brentq(lambda x: eps_at(x) - e, lo, hi, xtol=tol)
    if eps_at(sigma) > e and eps_at(sigma + tol) <= e:
        sigma += tol
    why = _epsilon_cached(sigma, q, t, d, acc, smp)[1]
    if why is not None:  # the returned σ itself was accounted by RDP
        warnings.warn(why, PLDFallbackWarning, stacklevel=2)
    return float(sigma)


def spent(
    noise_multiplier: float,
    sample_rate: float,
    steps: Sequence[int] | np.ndarray,
    delta: float,
    accountant: str = "rdp",
    sampling: str = "poisson",
) -> np.ndarray:
    """ε spent after each of several step counts (Abadi et al. 2016 accounting).

    For the runner's metrics: ``spent(σ, q, [100, 200, ...], δ)[i]`` equals
    ``epsilon(σ, q, steps[i], δ)``.  Each distinct step count is accounted once
    and cached (RDP: ~30 ms each; PLD: ~0.4 s each), so calling it again as the
    run progresses only pays for the new counts; PLD builds the one-step PLD once
    per (σ, q) and self-composes it per count.  Returns ``float64[len(steps)]``.
    """
    s = _check_noise_multiplier(noise_multiplier)
    q = _check_sample_rate(sample_rate)
    d = _check_delta(delta)
    acc = _check_accountant(accountant)
    smp = _check_sampling(sampling, acc, q)
    arr = np.asarray(steps)
    if arr.ndim > 1:
        raise ValueError(f"steps must be a scalar or 1-D, got shape {arr.shape}")
    ts = [_check_steps(x) for x in np.atleast_1d(arr).tolist()]
    out = np.array([_epsilon_warned(s, q, t, d, acc, smp) for t in ts], dtype=np.float64)
    return out.reshape(arr.shape)
