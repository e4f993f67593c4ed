"""Privacy attacks against what a node sends or publishes: gradient inversion and
loss-threshold membership inference.

Gradient inversion (a curious neighbour holding one node's gradient message):

* :func:`analytic_inversion`: a dense first layer with a bias leaks its input exactly when the
  message is the gradient of one example (Phong et al. 2018, Sec. 3.2; Geiping et al. 2020,
  Prop. D.1): ∂L/∂W[:, j] = x·∂L/∂b[j], so x = ∂L/∂W[:, j] / ∂L/∂b[j].
* :func:`optimization_inversion`: optimise a dummy input (and label) until its gradient matches
  the message (Zhu et al. 2019, "DLG", Eq. 4; cosine distance and total variation of Geiping
  et al. 2020, Eq. 4; label read off the last bias gradient as in Zhao et al. 2020, "iDLG").

Membership inference (an observer of the released model):

* :func:`loss_threshold_scores`: Yeom et al. 2018, Sec. 3.2 (adversary 1 with a threshold on
  the loss): members tend to have lower loss, so the score is −loss.
* :func:`roc`, :func:`auc`, :func:`tpr_at_fpr`: the ROC of the score (Carlini et al. 2022
  argue for TPR at low FPR), with :func:`auc_std_error` the Hanley & McNeil (1982) standard
  error to judge "within sampling noise of 0.5".
* :func:`membership_advantage_bound`: under (ε, δ)-DP, TPR − FPR ≤ (e^ε − 1 + 2δ)/(e^ε + 1)
  (Humphries et al. 2020, Thm. 1; tighter than Yeom et al.'s e^ε − 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from redeem_jax import models
from redeem_jax.models import Model

__all__ = [
    "analytic_inversion",
    "optimization_inversion",
    "infer_label",
    "relative_error",
    "loss_threshold_scores",
    "roc",
    "auc",
    "auc_std_error",
    "tpr_at_fpr",
    "membership_advantage",
    "membership_advantage_bound",
]


# --------------------------------------------------------------------------------------------
# gradient inversion
# --------------------------------------------------------------------------------------------
def _dense_layers(model: Model, flat: jax.Array) -> list:
    """The ``Dense_i`` sub-dicts of the unravelled pytree, in layer order."""
    params = model.unravel(flat)["params"]
    names = sorted((k for k in params if k.startswith("Dense_")), key=lambda k: int(k.split("_")[-1]))
    return [params[k] for k in names]


def analytic_inversion(grad_flat: jax.Array, model: Model) -> jax.Array:
    """Recover the input of a one-example gradient through a dense first layer with bias
    (Phong et al. 2018, Sec. 3.2; Geiping et al. 2020, Prop. D.1): for z = xW + b,
    ∂L/∂W[:, j] = x·∂L/∂b[j], hence x = ∂L/∂W[:, j] / ∂L/∂b[j]. Returns ``x_hat`` of shape
    ``[input_dim]`` (the flattened input).

    The unit with the largest |∂L/∂b[j]| is used: it divides by the number least affected by
    float rounding or by noise. For a batch, the same ratio gives a mix of the batch's inputs
    weighted by each one's δ_j, which is why DP-SGD's noise (and batching) are the defence.
    """
    layers = _dense_layers(model, jnp.asarray(grad_flat))
    if not layers or "bias" not in layers[0]:
        raise ValueError(f"analytic_inversion: model {model.name!r} has no dense first layer with a bias")
    gw, gb = layers[0]["kernel"], layers[0]["bias"]
    j = jnp.argmax(jnp.abs(gb))
    return gw[:, j] / gb[j]


def infer_label(grad_flat: jax.Array, model: Model) -> jax.Array:
    """Label of a one-example cross-entropy gradient from the last layer's bias gradient
    (Zhao et al. 2020, iDLG, Sec. 3): ∂L/∂b = softmax(z) − onehot(y) is negative only at y."""
    layers = _dense_layers(model, jnp.asarray(grad_flat))
    if not layers or "bias" not in layers[-1]:
        raise ValueError(f"infer_label: model {model.name!r} has no dense last layer with a bias")
    return jnp.argmin(layers[-1]["bias"])


def _total_variation(x: jax.Array) -> jax.Array:
    """Anisotropic TV over the spatial axes of ``[H, W, C]`` (or 1-D) inputs (Rudin et al. 1992),
    the image prior of Geiping et al. 2020, Eq. 4."""
    tv = 0.0
    for axis in range(max(x.ndim - 1, 1)):
        tv = tv + jnp.sum(jnp.abs(jnp.diff(x, axis=axis)))
    return tv


def optimization_inversion(
    grad_flat: jax.Array,
    model: Model,
    params_flat: jax.Array,
    key: jax.Array,
    label=None,
    *,
    steps: int = 500,
    lr: float = 0.05,
    input_shape: Sequence[int] | None = None,
    distance: str = "l2",
    tv: float = 0.0,
    bounds: tuple[float, float] | None = None,
    infer: bool = True,
):
    """Gradient matching (Zhu et al. 2019, DLG, Eq. 4; Geiping et al. 2020, Eq. 4):
    argmin_{x', y'} D(∇_θ L(θ; x', y'), g) + tv·TV(x') by Adam from a Gaussian start.

    ``distance``: "l2" (‖g' − g‖², DLG) or "cosine" (1 − cos(g', g), Geiping et al.; blind to
    the gradient's scale, hence robust to clipping but it loses the input's scale too).
    Label: ``label`` if given; else, for classification with a last dense bias and ``infer``,
    the iDLG label (:func:`infer_label`); else a soft label optimised jointly (DLG).
    ``bounds`` projects x' onto a box after each step (pixels in [0, 1]).
    Returns ``(x_hat [input_shape], y_hat)``; y_hat is an int class (argmax of the soft label
    when that is optimised). Runs as one jitted ``lax.scan`` over the steps.
    """
    if distance not in ("l2", "cosine"):
        raise ValueError(f"optimization_inversion: distance {distance!r} is not one of l2, cosine")
    grad_flat = jnp.asarray(grad_flat)
    params_flat = jnp.asarray(params_flat)
    if input_shape is None:
        layers = _dense_layers(model, params_flat)
        if not layers:
            raise ValueError("optimization_inversion: give input_shape for a model without a dense first layer")
        input_shape = (layers[0]["kernel"].shape[0],)
    input_shape = tuple(int(s) for s in input_shape)
    classify = model.task == "classification"
    if label is None and classify and infer:
        try:
            label = infer_label(grad_flat, model)
        except ValueError:
            label = None
    soft = label is None and classify
    if label is None and not classify:
        raise ValueError(f"optimization_inversion: give the label/target for a {model.task!r} model")

    kx, ky = jax.random.split(key)
    x0 = jax.random.normal(kx, input_shape, jnp.float32)
    if bounds is not None:
        x0 = jnp.clip(0.5 * (bounds[0] + bounds[1]) + 0.25 * (bounds[1] - bounds[0]) * x0, *bounds)
    num_out = model.apply(params_flat, x0[None]).shape[-1]
    y0 = jax.random.normal(ky, (num_out,), jnp.float32) if soft else jnp.zeros((0,), jnp.float32)
    y_fixed = None if soft else jnp.asarray(label).reshape((1,))

    def dummy_grad(x, ylog):
        def loss(p):
            out = model.apply(p, x[None])
            if soft:  # DLG's soft label: cross-entropy against softmax of free logits
                val = -jnp.sum(jax.nn.softmax(ylog) * jax.nn.log_softmax(out[0]))
            else:
                val = jnp.mean(models.per_example_loss(model, out, y_fixed))
            if model.l2:  # the attacker knows the regulariser: match the whole message
                val = val + 0.5 * model.l2 * jnp.sum(p**2)
            return val

        return jax.grad(loss)(params_flat)

    gnorm = jnp.sqrt(jnp.sum(grad_flat**2))

    def objective(z):
        x, ylog = z
        g = dummy_grad(x, ylog)
        if distance == "l2":
            # dividing by ‖g‖² makes lr independent of the gradient's scale
            d = jnp.sum((g - grad_flat) ** 2) / jnp.maximum(gnorm**2, 1e-30)
        else:
            d = 1.0 - jnp.vdot(g, grad_flat) / jnp.maximum(jnp.sqrt(jnp.sum(g**2)) * gnorm, 1e-30)
        return d + (tv * _total_variation(x) if tv else 0.0)

    opt = optax.adam(lr)

    @jax.jit
    def run(z0):
        def step(carry, _):
            z, s = carry
            val, gz = jax.value_and_grad(objective)(z)
            upd, s = opt.update(gz, s, z)
            z = optax.apply_updates(z, upd)
            if bounds is not None:
                z = (jnp.clip(z[0], *bounds), z[1])
            return (z, s), val

        (z, _), vals = jax.lax.scan(step, (z0, opt.init(z0)), None, length=int(steps))
        return z, vals

    (x_hat, ylog), _ = run((x0, y0))
    y_hat = jnp.argmax(ylog) if soft else y_fixed[0]
    return x_hat, y_hat


def relative_error(x_hat, x) -> float:
    """‖x̂ − x‖ / ‖x‖ over the flattened arrays (the reconstruction error of Zhu et al. 2019)."""
    x_hat = np.asarray(x_hat, np.float64).ravel()
    x = np.asarray(x, np.float64).ravel()
    return float(np.linalg.norm(x_hat - x) / np.linalg.norm(x))


# --------------------------------------------------------------------------------------------
# membership inference
# --------------------------------------------------------------------------------------------
def loss_threshold_scores(model: Model, params_flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Membership score −ℓ(θ; xᵢ, yᵢ) per example (Yeom et al. 2018, Sec. 3.2, adversary with
    a loss threshold): thresholding it at −τ says "member" when the loss is below τ."""
    out = model.apply(jnp.asarray(params_flat), jnp.asarray(x))
    return -models.per_example_loss(model, out, jnp.asarray(y))


def roc(scores_members, scores_nonmembers):
    """ROC of "member iff score >= t" over every distinct threshold t (Fawcett 2006, Alg. 1).

    Returns ``(fpr, tpr, thresholds)``, thresholds decreasing, starting at (0, 0) with t = +inf.
    Tied scores move TPR and FPR together, so the curve's trapezoidal area is the Mann–Whitney
    statistic with ties counted half.
    """
    pos = np.asarray(scores_members, np.float64).ravel()
    neg = np.asarray(scores_nonmembers, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError("roc: needs at least one member and one non-member score")
    thr = np.unique(np.concatenate([pos, neg]))[::-1]
    pos_s, neg_s = np.sort(pos), np.sort(neg)
    # count of scores >= t, by binary search on the sorted scores
    tp = pos.size - np.searchsorted(pos_s, thr, side="left")
    fp = neg.size - np.searchsorted(neg_s, thr, side="left")
    tpr = np.concatenate([[0.0], tp / pos.size])
    fpr = np.concatenate([[0.0], fp / neg.size])
    return fpr, tpr, np.concatenate([[np.inf], thr])


def auc(scores_members, scores_nonmembers) -> float:
    """Area under :func:`roc` by the trapezoid rule = P(s_member > s_nonmember) + ½P(tie)
    (Hanley & McNeil 1982, Eq. 1; the Mann–Whitney U / (n₁n₀))."""
    fpr, tpr, _ = roc(scores_members, scores_nonmembers)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def auc_std_error(auc_value: float, n_members: int, n_nonmembers: int) -> float:
    """Standard error of an AUC estimate (Hanley & McNeil 1982, Eq. 2), with Q₁ = A/(2 − A)
    and Q₂ = 2A²/(1 + A)."""
    a = float(auc_value)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_members - 1) * (q1 - a * a) + (n_nonmembers - 1) * (q2 - a * a)) / (
        n_members * n_nonmembers
    )
    return math.sqrt(max(var, 0.0))


def tpr_at_fpr(scores_members, scores_nonmembers, fpr: float = 0.01) -> float:
    """Largest TPR on the ROC at an FPR of at most ``fpr`` (Carlini et al. 2022, Sec. 4.2).

    No interpolation between ROC points: the reported point is one a threshold attains, so
    the figure is never optimistic. With n non-members, FPRs below 1/n can only be 0.
    """
    f, t, _ = roc(scores_members, scores_nonmembers)
    return float(np.max(t[f <= fpr + 1e-12]))


def membership_advantage(scores_members, scores_nonmembers) -> float:
    """Empirical membership advantage max_t (TPR − FPR) (Yeom et al. 2018, Def. 4, maximised
    over the threshold)."""
    f, t, _ = roc(scores_members, scores_nonmembers)
    return float(np.max(t - f))


def membership_advantage_bound(epsilon: float, delta: float = 0.0) -> float:
    """Upper bound on TPR − FPR of any membership attack on an (ε, δ)-DP mechanism:
    (e^ε − 1 + 2δ)/(e^ε + 1) (Humphries et al. 2020, Thm. 1; from the hypothesis-testing view
    of DP, Kairouz et al. 2015, Thm. 2.1). ε = 1, δ = 0 gives 0.462."""
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"membership_advantage_bound: need epsilon >= 0 and delta in [0, 1], got {epsilon}, {delta}")
    e = math.exp(epsilon)
    return min(1.0, (e - 1.0 + 2.0 * delta) / (e + 1.0))
