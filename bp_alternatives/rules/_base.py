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

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import optax

from bp_alternatives.model import (
    Model,
    Params,
    Stage,
    apply_linear,
    apply_norm,
    init_params,
    output,
)
from bp_alternatives.model.losses import Loss
from bp_alternatives.model.ops import UnsupportedModelError as UnsupportedModelError

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
        least ``"loss"``: the model's loss on the batch before the update. Parameters
        the rule owns (synthesizers, read-outs: :class:`Trainable`) are updated inside
        ``new_state`` by the rule's ``optimizer``.
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


class Trainable(NamedTuple):
    """Parameters a rule owns and trains (synthesizers, a read-out, learned feedback
    weights) and their optimizer's state. A rule keeps them in its state's
    ``trainable`` field and steps them with :func:`train_step`.

    Their optimizer is the factory's ``optimizer`` argument (an optax
    ``GradientTransformation``): ``experiment.build_rule`` passes the run's
    optimizer, or the one the rule's config names under ``rule.optimizer``.
    """

    params: Any
    opt_state: optax.OptState


def init_trainable(optimizer: optax.GradientTransformation, params: Any) -> Trainable:
    """``params`` with a fresh state of ``optimizer``."""
    return Trainable(params, optimizer.init(params))


def train_step(
    optimizer: optax.GradientTransformation, trainable: Trainable, grads: Any
) -> Trainable:
    """One step of ``optimizer`` on a rule's own parameters, descending ``grads`` (a
    pytree shaped like ``trainable.params``)."""
    updates, opt_state = optimizer.update(grads, trainable.opt_state, trainable.params)
    return Trainable(optax.apply_updates(trainable.params, updates), opt_state)


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


# ------------------------------------------------ per-stage vjps (FA, DFA, ...)


def nonlinear_part(stage: Stage) -> Callable[[jax.Array], jax.Array]:
    """The stage's parameter-free part ``a -> post(f(a))``."""

    def g(a):
        return stage.post_op.fn(stage.act.fn(a))

    return g


def _linear_of_params(stage: Stage, x: jax.Array, p: dict) -> jax.Array:
    return apply_linear(stage, p, x)


def _linear_of_input(stage: Stage, p: dict, x: jax.Array) -> jax.Array:
    return apply_linear(stage, p, x)


def params_vjp(stage: Stage, p: dict, x: jax.Array):
    """``(a, pull)``: the pre-activation ``a = norm(linear(p, x))`` and its vjp in the
    params, ``pull(delta_a) -> (dp, delta_z)``: ``dp`` shaped like ``p`` (its
    ``"norm"`` entry too) and ``delta_z`` the signal at the linear output ``z``, i.e.
    ``delta_a`` through the normalisation's local derivative (``delta_a`` itself
    without one)."""
    z, pull_linear = jax.vjp(functools.partial(_linear_of_params, stage, x), p)
    if stage.norm == "none":
        return z, lambda delta_a: (pull_linear(delta_a)[0], delta_a)
    a, pull_norm = jax.vjp(
        lambda pn, z: apply_norm(stage, {"norm": pn}, z), p["norm"], z
    )

    def pull(delta_a):
        d_norm, delta_z = pull_norm(delta_a)
        (dp,) = pull_linear(delta_z)
        return {**dp, "norm": d_norm}, delta_z

    return a, pull


def input_vjp(stage: Stage, p: dict, x: jax.Array):
    """``(z, pull)``: the linear part ``z = linear(p, x)`` alone (no normalisation)
    and its vjp in the input,
    ``pull(delta_a) -> (delta_x,)`` (with ``p["kernel"] = B``: the signal feedback
    alignment sends down)."""
    return jax.vjp(functools.partial(_linear_of_input, stage, p), x)


def refuse_norm(model: Model, rule: str, why: str) -> None:
    """UnsupportedModelError naming ``rule``, ``model.norm`` and ``why`` when a stage of
    ``model`` has a normalisation (for rules whose stages are not ``norm(linear)``)."""
    normed = [s.name for s in model.stages if s.norm != "none"]
    if normed:
        norm = next(s.norm for s in model.stages if s.norm != "none")
        raise UnsupportedModelError(
            f"rule={rule} does not support model.norm={norm} (stages {normed}): "
            f"{why}; use model.norm=none"
        )
