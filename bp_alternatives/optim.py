"""Optimizers: optax transformations turning a rule's direction into a param change."""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "linear_cooldown")


def step_boundaries(
    decay_epochs: Sequence[int] | None,
    decay_steps: Sequence[int] | None,
    steps_per_epoch: int | None,
) -> list[int]:
    """The optimizer steps at which ``schedule=step`` multiplies the rate.

    ``decay_epochs: [50, 75]`` means: epochs 1-50 at ``lr``, 51-75 at ``lr * f``, 76-
    at ``lr * f^2`` (PyTorch's ``MultiStepLR(milestones=[50, 75])`` stepped once per
    epoch), i.e. boundaries at steps ``50 * steps_per_epoch`` and ``75 * ...``.
    ``decay_steps`` gives the boundaries in optimizer steps directly.
    """
    if (decay_epochs is None) == (decay_steps is None):
        raise ValueError(
            "schedule=step needs exactly one of optim.decay_epochs (boundaries in "
            "epochs) or optim.decay_steps (in optimizer steps)"
        )
    if decay_epochs is not None:
        if not steps_per_epoch or steps_per_epoch < 1:
            raise ValueError(
                "optim.decay_epochs needs the number of steps per epoch "
                f"(steps_per_epoch={steps_per_epoch}); give optim.decay_steps instead"
            )
        bounds = [int(e) * int(steps_per_epoch) for e in decay_epochs]
        what = "optim.decay_epochs"
    else:
        bounds = [int(s) for s in decay_steps]
        what = "optim.decay_steps"
    if any(b < 1 for b in bounds) or bounds != sorted(set(bounds)):
        raise ValueError(
            f"{what} must be positive and strictly increasing, got "
            f"{list(decay_epochs if decay_epochs is not None else decay_steps)}"
        )
    return bounds


def make_schedule(
    lr: float,
    schedule: str,
    total_steps: int,
    warmup_steps: int = 0,
    *,
    decay_epochs: Sequence[int] | None = None,
    decay_steps: Sequence[int] | None = None,
    decay_factor: float = 0.1,
    steps_per_epoch: int | None = None,
) -> optax.Schedule:
    """A learning-rate schedule by name.

    ``step``: piecewise constant, ``lr * decay_factor ** k`` where ``k`` is the number
    of boundaries (:func:`step_boundaries`) at or below the step count (the count of
    updates already applied, 0 for the first).

    ``linear_cooldown``: the forward-forward codes' epoch-wise cool-down over the
    second half of training (Hinton's FF code; loeweX's ``get_linear_cooldown_lr``):
    with ``E = total_steps // steps_per_epoch`` epochs and ``e`` the 0-based epoch,
    ``lr`` while ``e <= E // 2``, then ``lr * 2 * (1 + E - e) / E`` (down to
    ``lr * 4 / E`` in the last epoch).
    """
    if schedule == "linear_cooldown":
        if not steps_per_epoch or steps_per_epoch < 1:
            raise ValueError(
                "schedule=linear_cooldown needs the number of steps per epoch "
                f"(steps_per_epoch={steps_per_epoch})"
            )
        spe = int(steps_per_epoch)
        n_epochs = max(int(total_steps) // spe, 1)

        def cooldown_schedule(count):
            e = count // spe
            late = lr * 2.0 * (1 + n_epochs - e) / n_epochs
            return jnp.where(e > n_epochs // 2, late, lr).astype(jnp.float32)

        return cooldown_schedule
    if schedule == "step":
        if not decay_factor > 0:
            raise ValueError(f"optim.decay_factor must be positive, got {decay_factor}")
        bounds = jnp.asarray(
            step_boundaries(decay_epochs, decay_steps, steps_per_epoch), jnp.int32
        )

        def step_schedule(count):
            k = jnp.sum(count >= bounds)
            return lr * jnp.asarray(decay_factor, jnp.float32) ** k

        return step_schedule
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
    decay_epochs: Sequence[int] | None = None,
    decay_steps: Sequence[int] | None = None,
    decay_factor: float = 0.1,
    steps_per_epoch: int | None = None,
) -> optax.GradientTransformation:
    """Build the optimizer that applies every rule's direction.

    ``clip_norm`` clips the direction's global norm first (the fix for exploding
    gradients in the backprop article, docs/references.md). For ``sgd`` and ``adam``,
    ``weight_decay`` is added to the direction *before* the learning-rate scaling (L2
    regularisation); chaining it after the scaling is a known bug in public code.
    ``adamw`` applies decoupled decay.
    ``schedule="step"`` with ``decay_epochs`` (needs ``steps_per_epoch``) or
    ``decay_steps`` and ``decay_factor``: the rate is multiplied by ``decay_factor``
    at each boundary (``lr / 10`` at epochs 50 and 75: ``decay_epochs=[50, 75]``).
    """
    if lr <= 0:
        raise ValueError(f"optim.lr must be positive, got {lr}")
    sched = make_schedule(
        lr,
        schedule,
        total_steps,
        warmup_steps,
        decay_epochs=decay_epochs,
        decay_steps=decay_steps,
        decay_factor=decay_factor,
        steps_per_epoch=steps_per_epoch,
    )
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
