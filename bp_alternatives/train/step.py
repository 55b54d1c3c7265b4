"""One training step and one epoch of steps as a single compiled ``lax.scan``.

The loop owns the randomness: the epoch's shuffle uses ``fold_in(key, epoch)`` and
each step's rule key is ``fold_in(key, global_step)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from bp_alternatives.model import (
    Model,
    ModelState,
    Params,
    init_model_state,
    init_params,
    update_model_state,
)
from bp_alternatives.rules import Batch, LearningRule


class TrainState(NamedTuple):
    """``model_state``: the model's running BatchNorm statistics (``()`` without
    BatchNorm stages), moved by the loop each step, never seen by the rule;
    evaluation folds them into params (``model.inference_params``)."""

    params: Params
    opt_state: optax.OptState
    rule_state: Any
    model_state: ModelState = ()


def init_state(
    model: Model, rule: LearningRule, optimizer: optax.GradientTransformation, key
) -> TrainState:
    """Params from ``fold_in(key, 0)``, rule state from ``fold_in(key, 1)``."""
    params = init_params(model, jax.random.fold_in(key, 0))
    rule_state = rule.init(jax.random.fold_in(key, 1), params)
    model_state = init_model_state(model, params)
    return TrainState(params, optimizer.init(params), rule_state, model_state)


def make_train_step(
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    model: Model | None = None,
):
    """One step: the rule computes a direction, the optimizer applies it; with a
    ``model`` that has BatchNorm stages, its running statistics move toward the
    batch's under the params the rule saw (PyTorch's order: statistics of the
    forward pass, then the step)."""

    def train_step(state: TrainState, batch: Batch, key) -> tuple[TrainState, dict]:
        direction, rule_state, metrics = rule.update(
            state.params, state.rule_state, batch, key
        )
        model_state = state.model_state
        if model is not None and model_state:
            model_state = update_model_state(model, state.params, batch.x, model_state)
        updates, opt_state = optimizer.update(direction, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, rule_state, model_state), metrics

    return train_step


def make_epoch_fn(
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    num_train: int,
    batch_size: int,
    batch_sharding: NamedSharding | None = None,
    model: Model | None = None,
) -> Callable:
    """``epoch_fn(state, x, y, key, epoch) -> (state, metrics)``: one shuffled epoch
    as a single ``lax.scan``; ``metrics`` are the means over the epoch's steps plus
    ``finite`` (whether every step's loss was finite). The last incomplete batch is
    dropped, so every step sees ``batch_size`` examples. With ``batch_sharding`` each
    batch is split over devices (data parallelism). ``model``: the model whose
    BatchNorm statistics the steps keep (:func:`make_train_step`)."""
    steps = num_train // batch_size
    train_step = make_train_step(rule, optimizer, model)

    def epoch_fn(state, x, y, key, epoch):
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_train)
        idx = perm[: steps * batch_size].reshape(steps, batch_size)
        step_key = jax.random.fold_in(key, 0x5EED)
        t0 = epoch * steps

        def body(state, inp):
            i, t = inp
            batch = Batch(jnp.take(x, i, axis=0), jnp.take(y, i, axis=0))
            if batch_sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            return train_step(state, batch, jax.random.fold_in(step_key, t))

        state, metrics = jax.lax.scan(body, state, (idx, t0 + jnp.arange(steps)))
        finite = jnp.all(jnp.isfinite(metrics["loss"]))
        metrics = jax.tree_util.tree_map(lambda m: jnp.mean(m, axis=0), metrics)
        metrics["finite"] = finite
        return state, metrics

    return epoch_fn
