"""Optimizers: optax transformations turning a rule's direction into a param change."""

from __future__ import annotations

import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_schedule(
    lr: float, schedule: str, total_steps: int, warmup_steps: int = 0
) -> optax.Schedule:
    """A learning-rate schedule by name."""
    if schedule == "constant":
        return optax.constant_schedule(lr)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
    if schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0,
            lr,
            warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1),
        )
    raise ValueError(
        f"unknown schedule {schedule!r}; valid schedules: {list(SCHEDULES)}"
    )


def make_optimizer(
    name: str,
    lr: float,
    *,
    total_steps: int,
    momentum: float = 0.0,
    nesterov: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    schedule: str = "constant",
    warmup_steps: int = 0,
) -> optax.GradientTransformation:
    """Build the optimizer that applies every rule's direction.

    ``clip_norm`` clips the direction's global norm first (the seed article's fix for
    exploding gradients). For ``sgd`` and ``adam``, ``weight_decay`` is added to the
    direction *before* the learning-rate scaling (L2 regularisation); chaining it after
    the scaling is a known bug in public code. ``adamw`` applies decoupled decay.
    """
    if lr <= 0:
        raise ValueError(f"optim.lr must be positive, got {lr}")
    sched = make_schedule(lr, schedule, total_steps, warmup_steps)
    chain = []
    if clip_norm is not None:
        chain.append(optax.clip_by_global_norm(clip_norm))
    if name == "sgd":
        if weight_decay:
            chain.append(optax.add_decayed_weights(weight_decay))
        chain.append(optax.sgd(sched, momentum=momentum or None, nesterov=nesterov))
    elif name == "adam":
        if weight_decay:
            chain.append(optax.add_decayed_weights(weight_decay))
        chain.append(optax.adam(sched, b1=b1, b2=b2, eps=eps))
    elif name == "adamw":
        chain.append(
            optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
        )
    else:
        raise ValueError(
            f"unknown optimizer {name!r}; valid optimizers: {list(OPTIMIZERS)}"
        )
    return optax.chain(*chain)
