"""The learning-rule interface.

A learning rule turns ``(params, batch)`` into an *update direction* shaped like
``params`` (for exact backprop: the gradient). An optax ``GradientTransformation`` then
turns the direction into the parameter change, so every rule gets every optimizer,
schedule, clipping and weight decay for free.

A rule is built for one model and loss by a factory that closes over its
hyperparameters (like ``optax.adam(lr)``)::

    rule = fa(model, loss, feedback="usf")
    state = rule.init(key, params)
    direction, state, metrics = rule.update(params, state, batch, key)

The model and loss are closed over (they are static structure, not arrays) so both
functions are pure and ``jit``/``vmap``-able with no static arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import jax

from bp_alternatives.model import Model, Params, output
from bp_alternatives.model.losses import Loss

RuleState = Any  # a pytree, normally a NamedTuple called <Rule>State
Metrics = dict[str, jax.Array]


class Batch(NamedTuple):
    """A batch: inputs ``x`` ``[B, ...]``, targets ``y`` (labels ``[B]``/``[B, K]``)."""

    x: jax.Array
    y: jax.Array


class RuleInitFn(Protocol):
    def __call__(self, key: jax.Array, params: Params) -> RuleState:
        """Build the rule's state (feedback matrices, synthesizers, ...).

        Pure. ``key`` is the only source of randomness. Empty for exact backprop.
        """


class RuleUpdateFn(Protocol):
    def __call__(
        self, params: Params, state: RuleState, batch: Batch, key: jax.Array
    ) -> tuple[Params, RuleState, Metrics]:
        """Compute an update direction.

        Returns ``(direction, new_state, metrics)``: ``direction`` has exactly the
        pytree structure, shapes and dtypes of ``params`` and is *descent-signed like a
        gradient* (the optimizer subtracts it). ``metrics`` holds scalar arrays and at
        least ``"loss"``: the model's loss on the batch before the update. Trainable
        extras the rule owns (synthesizers, read-outs) are updated inside ``new_state``.
        Pure and jit-able; ``key`` is derived by the training loop (``fold_in(key,
        step)``), so rules keep no key in their state unless they must.
        """


class RulePredictFn(Protocol):
    def __call__(
        self, params: Params, state: RuleState, x: jax.Array
    ) -> Mapping[str, jax.Array]:
        """Class scores ``[B, C]`` per prediction mode.

        The headline accuracy is the first mode's, or, when the rule names
        ``LearningRule.headline_modes``, the best of those modes on held-out data.
        """


class RuleOutputFn(Protocol):
    def __call__(self, params: Params, state: RuleState, x: jax.Array) -> jax.Array:
        """The outputs ``[B, C]`` the run's loss is evaluated on."""


class RuleObjectiveFn(Protocol):
    def __call__(self, params: Params, state: RuleState, batch: Batch) -> jax.Array:
        """The scalar loss whose exact gradient the rule's direction is compared with
        (differentiated with ``jax.grad`` in ``params``)."""


class LearningRule(NamedTuple):
    """A learning rule: pure ``init`` / ``update`` functions (and optional ``predict``,
    ``eval_output``, ``objective``).

    ``predict`` is ``None`` for rules whose model output is the prediction (argmax of
    the read-out); forward-forward predicts by goodness instead. ``eval_output`` is
    ``None`` for rules whose model output is what the loss is evaluated on (the
    reported ``train_loss`` / ``test_loss``); forward-forward's model read-out stage is
    unused, so its loss is evaluated on its own softmax read-out's logits.
    ``objective`` is ``None`` for rules whose exact gradient (the alignment
    diagnostics' reference) is that of the model's loss on its feed-forward output
    (:func:`loss_fn`); equilibrium propagation predicts with the free phase's fixed
    point instead, so its reference is the gradient of the loss at that point.

    ``headline_modes`` names ``predict`` modes the headline is chosen from at every
    evaluation: the mode with the best accuracy on the validation split (the training
    split when there is none; never the test split). ``None``: the first mode.
    Forward-forward offers one mode per range of stages whose goodness is summed.
    """

    init: RuleInitFn
    update: RuleUpdateFn
    predict: RulePredictFn | None = None
    eval_output: RuleOutputFn | None = None
    objective: RuleObjectiveFn | None = None
    headline_modes: tuple[str, ...] | None = None


class UnsupportedModelError(ValueError):
    """A rule cannot handle some part of a model (raised when the rule is built)."""


def loss_fn(model: Model, loss: Loss, params: Params, batch: Batch) -> jax.Array:
    """The model's loss on a batch (a plain function, differentiable by jax.grad)."""
    return loss.value(output(model, params, batch.x), batch.y)
