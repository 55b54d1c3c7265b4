"""Hand-written backpropagation: the chain rule walked from the loss to the first stage.

No ``jax.grad``, ``jax.vjp``, ``jax.jvp`` or ``jax.linearize`` anywhere on this path;
every op's backward is written out next to its forward, micrograd style:

    forward                          backward (delta = dL/d(thing))
    a   = x @ W + b                  dW = x^T delta_a,  db = sum_B delta_a,
                                     delta_x = delta_a W^T
    h   = f(a)                       delta_a = delta_h * f'(a)
    out = post(h)                    delta_h = post.backward(h, delta_out)
    L   = loss(out, y)               delta_out = loss.grad(out, y)
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.losses import Loss
from bp_alternatives.model import Model, Stage, forward
from bp_alternatives.rules._base import LearningRule, UnsupportedModelError


class ManualBackpropState(NamedTuple):
    """Hand-written backprop keeps no state."""


def dense_backward(
    p: dict[str, jax.Array], x: jax.Array, delta_a: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Backward of ``a = x @ W + b``: returns ``({"kernel": dW, "bias": db}, delta_x)``."""
    grads = {"kernel": x.T @ delta_a}  # [in, B] @ [B, out]
    if "bias" in p:
        grads["bias"] = jnp.sum(delta_a, axis=0)
    delta_x = delta_a @ p["kernel"].T  # [B, out] @ [out, in]
    return grads, delta_x


# Linear parts this rule has a hand-written backward for.
LINEAR_BACKWARDS = {nn.Dense: dense_backward}


def _linear_backward(stage: Stage):
    for cls, backward in LINEAR_BACKWARDS.items():
        if type(stage.linear) is cls:
            return backward
    raise UnsupportedModelError(
        f"rule=manual_bp has no hand-written backward for layer "
        f"{type(stage.linear).__name__} in stage {stage.name!r}; supported layers: "
        f"{[c.__name__ for c in LINEAR_BACKWARDS]}"
    )


def check_supported(model: Model) -> None:
    """Fail at build time, naming the first stage whose layer has no backward."""
    for stage in model.stages:
        _linear_backward(stage)
        stage.act  # noqa: B018 -- raises for an unknown activation
        stage.post_op  # noqa: B018


def manual_bp(model: Model, loss: Loss) -> LearningRule:
    """Backpropagation written out by hand: each op's backward beside its forward.

    Computes the same direction as ``bp`` (the gradient) without automatic
    differentiation, walking ``delta`` from the loss down to the first stage.

    References:
      Rumelhart, Hinton & Williams (1986), "Learning representations by
      back-propagating errors", Nature 323:533-536.
      Karpathy, micrograd (github.com/karpathy/micrograd), engine.py.
    """
    check_supported(model)
    backwards = [_linear_backward(s) for s in model.stages]

    def init_fn(key, params):
        del key, params
        return ManualBackpropState()

    def update_fn(params, state, batch, key):
        del key
        out, caches = forward(model, params, batch.x)
        value = loss.value(out, batch.y)
        delta = loss.grad(out, batch.y)  # dL/d(out of the read-out stage)
        grads = [None] * model.num_stages
        for l in reversed(range(model.num_stages)):
            stage, c = model.stages[l], caches[l]
            delta_h = stage.post_op.backward(c.h, delta)  # through post
            delta_a = delta_h * stage.act.grad(c.a, c.h)  # through f
            grads[l], delta = backwards[l](params[l], c.x, delta_a)  # through linear
        return tuple(grads), state, {"loss": value}

    return LearningRule(init_fn, update_fn)
