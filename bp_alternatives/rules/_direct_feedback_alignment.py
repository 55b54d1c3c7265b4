"""Direct feedback alignment (DFA): the output error sent straight to every stage.

    e         = dL/d(a_L)                      error at the read-out pre-activation
    dW_L      = vjp of linear_L(., x_L) at e    read-out: its true gradient
    delta_a_l = (e B_l) * f'(a_l)              hidden stage l < L, B_l: [n_out, n_l]
    dW_l      = vjp of linear_l(., x_l) at delta_a_l   (= x_l^T delta_a_l for Dense)

No signal passes between hidden stages. ``n_out`` and ``n_l`` are the per-example
sizes of the read-out and stage-``l`` pre-activations; for a non-flat stage (a
convolution) ``e B_l`` is reshaped to the pre-activation's shape. ``f'(a_l)`` is the vjp
of the true stage's activation (elementwise); the stage's ``post`` op is skipped,
because the projected error lands on the pre-activation directly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bp_alternatives.model import Model, forward, init_params
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules._base import (
    LearningRule,
    UnsupportedModelError,
    nonlinear_part,
    params_vjp,
)

DFA_FEEDBACKS = ("independent", "shared")


class DirectFeedbackAlignmentState(NamedTuple):
    """The fixed feedback matrices (never optimizer params).

    ``independent``: one ``B_l`` ``[n_out, n_l]`` per hidden stage. ``shared``: a
    one-element tuple holding ``B`` ``[n_out, max_l n_l]``, sliced ``B[:, :n_l]``.
    """

    B: tuple[jax.Array, ...]


class _Options(NamedTuple):
    """The ``dfa`` factory's resolved options, shared by its init and update."""

    model: Model
    loss: Loss
    feedback: str
    scale: float
    n_hidden: list[int]  # n_l: per-example pre-activation size of hidden stage l
    n_out: int  # the read-out's


def _resolve(model: Model, loss: Loss, feedback: str, scale: float) -> _Options:
    """``dfa``'s options checked (errors name the field and the fix) and resolved."""
    if feedback not in DFA_FEEDBACKS:
        raise ValueError(
            f"unknown rule.feedback {feedback!r} for rule=dfa; valid: "
            f"{list(DFA_FEEDBACKS)}"
        )
    if model.num_stages < 2:
        raise UnsupportedModelError(
            f"rule=dfa needs at least one hidden stage; the model has only the "
            f"read-out stage {model.stages[0].name!r} (give model.hidden a width)"
        )
    # Per-example pre-activation sizes, from shapes only (no compute).
    x_spec = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)

    def _shapes(key, x):
        _, caches = forward(model, init_params(model, key), x)
        return [c.a for c in caches]

    a_specs = jax.eval_shape(_shapes, jax.random.PRNGKey(0), x_spec)
    n = [math.prod(a.shape[1:]) for a in a_specs]  # n_1..n_{L-1}, then n_out
    n_hidden, n_out = n[:-1], n[-1]

    return _Options(model, loss, feedback, scale, n_hidden, n_out)


def _init(o: _Options, key: jax.Array, params) -> DirectFeedbackAlignmentState:
    """Draw the fixed feedback matrices (see ``DirectFeedbackAlignmentState``)."""
    dtype = params[-1]["kernel"].dtype
    scale, n_hidden = o.scale, o.n_hidden
    if o.feedback == "independent":
        B = tuple(
            jax.random.uniform(
                jax.random.fold_in(key, l),
                (o.n_out, n_l),
                dtype,
                minval=-scale / math.sqrt(n_l),
                maxval=scale / math.sqrt(n_l),
            )
            for l, n_l in enumerate(n_hidden)
        )
    else:
        # Pitfall of a shared matrix (docs/references.md): stages of equal width get
        # the same columns B[:, :n_l], hence identical feedback signals e B_l.
        width = max(n_hidden)
        B = (
            jax.random.uniform(
                key,
                (o.n_out, width),
                dtype,
                minval=-scale / math.sqrt(width),
                maxval=scale / math.sqrt(width),
            ),
        )
    return DirectFeedbackAlignmentState(B=B)


def _feedback_matrix(o: _Options, state: DirectFeedbackAlignmentState, l: int):
    """``B_l`` ``[n_out, n_l]`` of hidden stage ``l``."""
    if o.feedback == "independent":
        return state.B[l]
    return state.B[0][:, : o.n_hidden[l]]


def _update(o: _Options, params, state: DirectFeedbackAlignmentState, batch):
    """The read-out's true gradient; hidden stages' from the projected error."""
    model = o.model
    out, caches = forward(model, params, batch.x)
    value, dout = jax.value_and_grad(o.loss.value)(out, batch.y)
    readout, c_L = model.stages[-1], caches[-1]
    _, pull_readout = jax.vjp(nonlinear_part(readout), c_L.a)
    (e,) = pull_readout(dout)  # dL/d(a_L)   [B, ...]
    e_flat = e.reshape(e.shape[0], -1)  # [B, n_out]
    grads = []
    for l, stage in enumerate(model.stages[:-1]):
        c = caches[l]
        projected = (e_flat @ _feedback_matrix(o, state, l)).reshape(c.a.shape)
        _, pull_f = jax.vjp(stage.act.fn, c.a)
        (delta_a,) = pull_f(projected)  # (e B_l) * f'(a_l)
        _, pull_p = params_vjp(stage, params[l], c.x)
        grads.append(pull_p(delta_a)[0])
    _, pull_p = params_vjp(readout, params[-1], c_L.x)
    grads.append(pull_p(e)[0])  # the read-out's true gradient
    return tuple(grads), state, {"loss": value}


def dfa(
    model: Model,
    loss: Loss,
    *,
    feedback: str = "independent",
    scale: float = 1.0,
) -> LearningRule:
    """Direct feedback alignment: ``delta_a_l = (e B_l) * f'(a_l)`` for hidden stages.

    Args:
      model: the stack of stages; it needs at least one hidden stage.
      loss: the loss on the read-out output.
      feedback: ``independent`` -- one ``B_l`` per hidden stage, uniform in
        ``+-1/sqrt(n_l)`` (the official DFA code, ``ErrorFeedback.lua``); ``shared`` --
        one matrix ``B`` uniform in ``+-1/sqrt(max_l n_l)``, stage ``l`` using its
        first ``n_l`` columns (TinyDFA's scheme, Launay et al. 2020).
      scale: multiplies the feedback matrices.

    Zero-initialised forward weights (the official DFA code zeroes every layer's weights
    and biases, read-out included, for tanh / sigmoid nets) are a property of the
    model, not of the rule, which never touches params: use ``model.init=zeros``
    (flax's bias init is already zero). DFA still learns from there, because the hidden
    stages' signal ``e B_l`` does not go through the forward weights.

    Metrics: ``loss``.

    References:
      Nøkland (2016), "Direct feedback alignment provides learning in deep neural
      networks", NeurIPS 29 (official code: github.com/anokland/dfa-torch).
      Launay, Poli, Boniface & Krzakala (2020), "Direct feedback alignment scales to
      modern deep learning tasks and architectures", NeurIPS 33 (TinyDFA).
    """
    o = _resolve(model, loss, feedback, scale)

    def init_fn(key, params):
        return _init(o, key, params)

    def update_fn(params, state, batch, key):
        del key
        return _update(o, params, state, batch)

    return LearningRule(init_fn, update_fn)
