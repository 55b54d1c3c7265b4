"""Hand-written backpropagation: the chain rule walked from the loss to the first stage.

No ``jax.grad``, ``jax.vjp``, ``jax.jvp`` or ``jax.linearize`` anywhere on this path;
every op's backward is written out next to its forward, micrograd style:

    forward                          backward (delta = dL/d(thing))
    a   = x @ W + b                  dW = x^T delta_a,  db = sum_B delta_a,
                                     delta_x = delta_a W^T
    a   = conv(x, W) + b             dW = conv(x, delta_a),  db = sum_B,S delta_a,
                                     delta_x = conv^T(delta_a, W)
                                     (``dense_backward``, ``conv_backward``:
                                     ``bp_alternatives.model.ops``)
    a   = norm(z)                    BatchNorm / LayerNorm, zhat = (z - mu) / s:
                                     d_scale = sum delta_a zhat, d_offset = sum delta_a,
                                     delta_z = (g - <g> - zhat <g zhat>) / s,
                                     g = delta_a scale (``norm_backward``:
                                     ``bp_alternatives.model.norm``)
    h   = f(a)                       delta_a = delta_h * f'(a)
    out = post(h)                    delta_h = post.backward(h, delta_out)
    L   = loss(out, y)               delta_out = loss.grad(out, y)
"""

from __future__ import annotations

from typing import NamedTuple

from bp_alternatives.model import Model, Stage, forward
from bp_alternatives.model.losses import Loss
from bp_alternatives.model.norm import check_norm, norm_backward
from bp_alternatives.model.ops import LINEAR_BACKWARDS
from bp_alternatives.rules._base import LearningRule, UnsupportedModelError


class ManualBackpropState(NamedTuple):
    """Hand-written backprop keeps no state."""


def _linear_backward(stage: Stage):
    for cls, make_backward in LINEAR_BACKWARDS.items():
        if type(stage.linear) is cls:
            return make_backward(stage.linear)
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
        check_norm(stage.norm)


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
            if stage.norm == "none":
                delta_z = delta_a
            else:  # through the normalisation (batch statistics)
                g_norm, delta_z = norm_backward(
                    stage.norm, params[l]["norm"], c.z, delta_a
                )
            grads[l], delta = backwards[l](params[l], c.x, delta_z)  # through linear
            if stage.norm != "none":
                grads[l]["norm"] = g_norm
        return tuple(grads), state, {"loss": value}

    return LearningRule(init_fn, update_fn)
