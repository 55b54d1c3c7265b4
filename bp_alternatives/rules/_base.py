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
    prediction = predictor(rule, model)(params, state, x)

The model and loss are closed over (they are static structure, not arrays) so both
functions are pure and ``jit``/``vmap``-able with no static arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from bp_alternatives.model import Model, Params, init_params, output
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


class Prediction(NamedTuple):
    """What a rule predicts for inputs ``x`` ``[B, ...]``; every array is ``[B, C]``.

    ``output``: the network's output. The alignment diagnostics compare a rule's
    direction with ``jax.grad`` of the loss on it, and ``train_loss`` / ``test_loss``
    are taken on it unless ``loss_output`` is given.
    ``headline``: class scores per prediction mode that can be the headline accuracy.
    One mode: it is the headline. Several: at every evaluation the trainer takes the
    one with the best accuracy on the validation split (the training split when there
    is none; never the test split). The mode ``""`` is reported as ``accuracy``, any
    other as ``accuracy/<mode>`` beside it.
    ``others``: further prediction modes reported beside the headline
    (``accuracy/<mode>``), never chosen as it.
    ``loss_output``: the outputs ``train_loss`` / ``test_loss`` are taken on when they
    are not ``output`` (forward-forward's own softmax read-out); ``None``: ``output``.
    """

    output: jax.Array
    headline: Mapping[str, jax.Array]
    others: Mapping[str, jax.Array]
    loss_output: jax.Array | None = None


class RulePredictFn(Protocol):
    def __call__(self, params: Params, state: RuleState, x: jax.Array) -> Prediction:
        """The rule's :class:`Prediction` for inputs ``x`` (pure, jit-able)."""


class LearningRule(NamedTuple):
    """A learning rule: pure ``init`` / ``update`` functions and an optional
    ``predict``.

    ``predict`` is ``None`` for rules whose model's feed-forward output is their
    output, their prediction (argmax) and what their loss is taken on
    (:func:`feedforward_prediction`). Forward-forward predicts by goodness and takes
    its loss on its own read-out; equilibrium propagation predicts with the free
    phase's fixed point, so the alignment reference is the gradient of the loss at
    that point.
    """

    init: RuleInitFn
    update: RuleUpdateFn
    predict: RulePredictFn | None = None


class UnsupportedModelError(ValueError):
    """A rule cannot handle some part of a model (raised when the rule is built)."""


def loss_fn(model: Model, loss: Loss, params: Params, batch: Batch) -> jax.Array:
    """The model's loss on a batch (a plain function, differentiable by jax.grad)."""
    return loss.value(output(model, params, batch.x), batch.y)


def feedforward_prediction(model: Model, params: Params, x: jax.Array) -> Prediction:
    """The model's feed-forward output as output, headline (mode ``""``) and loss
    output: the prediction of a rule whose ``predict`` is ``None``."""
    out = output(model, params, x)
    return Prediction(out, {"": out}, {})


def predictor(rule: LearningRule, model: Model):
    """``predict(params, state, x) -> Prediction`` of ``rule`` on ``model``: the rule's
    own ``predict``, or the model's feed-forward output."""
    if rule.predict is not None:
        return rule.predict
    return lambda params, state, x: feedforward_prediction(model, params, x)


def headline_candidates(rule: LearningRule, model: Model) -> tuple[str, ...] | None:
    """The modes the headline is chosen from, in the rule's order (the first of equal
    accuracies wins); ``None``: one headline, no choice.

    Read from the rule's :class:`Prediction` while ``jax.eval_shape`` traces it on a
    freshly built state (nothing is computed; a traced dict's keys keep their order,
    a returned one's are sorted)."""
    names: list[str] = []

    def trace(key):
        params = init_params(model, key)
        x = jnp.zeros(
            (1, *model.input_shape), jax.tree_util.tree_leaves(params)[0].dtype
        )
        pred = predictor(rule, model)(params, rule.init(key, params), x)
        names.extend(pred.headline)
        return pred.output

    jax.eval_shape(trace, jax.random.PRNGKey(0))
    return tuple(names) if len(names) > 1 else None
