"""Per-node optimizers and learning-rate schedules (optax), built from plain arguments."""

from __future__ import annotations

import optax

__all__ = ["make_optimizer", "make_schedule"]


def make_schedule(learning_rate: float, schedule: str = "constant", *, total_steps: int = 1,
                  warmup_steps: int = 0, decay_rate: float = 0.1, decay_every: int = 100) -> optax.Schedule:
    """Learning-rate schedule over optimizer steps: constant, cosine (Loshchilov & Hutter 2017),
    warmup_cosine (linear warm-up then cosine), or step (× ``decay_rate`` every ``decay_every``)."""
    total_steps = max(int(total_steps), 1)
    if schedule == "constant":
        return optax.constant_schedule(learning_rate)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                                  max(total_steps, warmup_steps + 1))
    if schedule == "step":
        return optax.exponential_decay(learning_rate, decay_every, decay_rate, staircase=True)
    raise ValueError(f"optimizer.schedule: {schedule!r} is not one of constant, cosine, warmup_cosine, step")


def make_optimizer(name: str, learning_rate: float, *, momentum: float = 0.9, weight_decay: float = 0.0,
                   schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0,
                   decay_rate: float = 0.1, decay_every: int = 100) -> optax.GradientTransformation:
    """One node's optimizer (the runner vmaps its state over nodes).

    sgd; momentum / nesterov (heavy-ball, Polyak 1964; Nesterov 1983); adam (Kingma & Ba 2015);
    adamw (Loshchilov & Hutter 2019). ``weight_decay`` adds λ·x to the gradient for the SGD
    family and is decoupled for adamw.
    """
    lr = make_schedule(learning_rate, schedule, total_steps=total_steps, warmup_steps=warmup_steps,
                       decay_rate=decay_rate, decay_every=decay_every)
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
    if weight_decay:
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt
