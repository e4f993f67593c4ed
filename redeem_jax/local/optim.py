"""Per-node optimizers and learning-rate schedules (optax), built from plain arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import optax

__all__ = ["make_optimizer", "make_schedule", "local_optimizer", "LocalOptimizer", "OPTIMIZERS", "FLOAT_OPTIONS"]


def make_schedule(
    learning_rate: float,
    schedule: str = "constant",
    *,
    total_steps: int = 1,
    warmup_steps: int = 0,
    decay_rate: float = 0.1,
    decay_every: int = 100,
) -> optax.Schedule:
    """Learning-rate schedule over optimizer steps: constant, cosine (Loshchilov & Hutter 2017),
    warmup_cosine (linear warm-up then cosine), or step (× ``decay_rate`` every ``decay_every``)."""
    total_steps = max(int(total_steps), 1)
    if schedule == "constant":
        return optax.constant_schedule(learning_rate)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, max(warmup_steps, 1), max(total_steps, warmup_steps + 1)
        )
    if schedule == "step":
        return optax.exponential_decay(learning_rate, decay_every, decay_rate, staircase=True)
    raise ValueError(f"optimizer.schedule: {schedule!r} is not one of constant, cosine, warmup_cosine, step")


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_steps: int = 0,
    decay_rate: float = 0.1,
    decay_every: int = 100,
    force_decay: bool = False,
) -> optax.GradientTransformation:
    """One node's optimizer (the runner vmaps its state over nodes).

    sgd; momentum / nesterov (heavy-ball, Polyak 1964; Nesterov 1983); adam (Kingma & Ba 2015);
    adamw (Loshchilov & Hutter 2019). ``weight_decay`` adds λ·x to the gradient for the SGD
    family and is decoupled for adamw; ``force_decay`` keeps that transform even when λ may be
    0 (a traced λ, e.g. swept).
    """
    lr = make_schedule(
        learning_rate,
        schedule,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        decay_rate=decay_rate,
        decay_every=decay_every,
    )
    if name == "sgd":
        opt = optax.sgd(lr)
    elif name == "momentum":
        opt = optax.sgd(lr, momentum=momentum)
    elif name == "nesterov":
        opt = optax.sgd(lr, momentum=momentum, nesterov=True)
    elif name == "adam":
        opt = optax.adam(lr)
    elif name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer.name: {name!r} is not one of sgd, momentum, nesterov, adam, adamw")
    if force_decay or (not isinstance(weight_decay, jax.Array) and weight_decay):
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


# --------------------------------------------------------------------------- #
# The per-node optimizer of the round protocol, with hyper-parameters resolved per step
# --------------------------------------------------------------------------- #
# Which float options each optimizer reads: only these become hyper-parameters (an axis of a
# sweep), so sweeping the momentum of plain SGD is refused as having no effect.
FLOAT_OPTIONS = {
    "sgd": ("learning_rate", "weight_decay"),
    "momentum": ("learning_rate", "momentum", "weight_decay"),
    "nesterov": ("learning_rate", "momentum", "weight_decay"),
    "adam": ("learning_rate", "weight_decay"),
    "adamw": ("learning_rate", "weight_decay"),
}
OPTIMIZERS = tuple(FLOAT_OPTIONS)


class LocalOptimizer(NamedTuple):
    """One node's optimizer, vmapped over the node axis: ``init(x [N, d]) -> s`` and
    ``update(g, s, x, ctx) -> (updates, s)``. Float options may be :class:`~redeem_jax.core.Hyper`;
    the optax transformation is rebuilt with their values at each step (construction is a few
    Python closures), so a swept learning rate is an argument of the compiled step."""

    init: Callable
    update: Callable
    hypers: tuple
    name: str


def local_optimizer(
    name: str,
    learning_rate,
    *,
    momentum=0.9,
    weight_decay=0.0,
    schedule: str = "constant",
    total_steps: int = 1,
    warmup_steps: int = 0,
    decay_rate=0.1,
    decay_every: int = 100,
) -> LocalOptimizer:
    """:func:`make_optimizer` for the round protocol (see :class:`LocalOptimizer`)."""
    from redeem_jax.core import Hyper, resolve

    if name not in FLOAT_OPTIONS:
        raise ValueError(f"optimizer.name: {name!r} is not one of {', '.join(OPTIMIZERS)}")
    options = dict(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, decay_rate=decay_rate)
    used = set(FLOAT_OPTIONS[name]) | ({"decay_rate"} if schedule == "step" else set())
    hypers = tuple(v for k, v in options.items() if k in used and isinstance(v, Hyper))

    def build(hp):
        val = {k: resolve(v, hp) for k, v in options.items()}
        wd = val["weight_decay"]
        if not isinstance(weight_decay, Hyper) and not weight_decay:
            wd = 0.0  # structure as the plain optimizer: no decay transform at all
        return make_optimizer(
            name,
            val["learning_rate"],
            momentum=val["momentum"],
            weight_decay=wd,
            schedule=schedule,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            decay_rate=val["decay_rate"],
            decay_every=decay_every,
            force_decay=isinstance(weight_decay, Hyper),
        )

    def init(x):
        return jax.vmap(build(None).init)(x)

    def update(g, s, x, ctx):
        return jax.vmap(build(ctx.hp).update)(g, s, x)

    return LocalOptimizer(init, update, hypers, name)
