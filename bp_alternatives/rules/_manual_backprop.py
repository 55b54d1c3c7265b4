"""Hand-written backpropagation: the chain rule walked from the loss to the first stage.

No ``jax.grad``, ``jax.vjp``, ``jax.jvp`` or ``jax.linearize`` anywhere on this path;
every op's backward is written out next to its forward, micrograd style:

    forward                          backward (delta = dL/d(thing))
    a   = x @ W + b                  dW = x^T delta_a,  db = sum_B delta_a,
                                     delta_x = delta_a W^T
    a   = conv(x, W) + b             dW = conv(x, delta_a),  db = sum_B,S delta_a,
                                     delta_x = conv^T(delta_a, W)  (``conv_backward``)
    h   = f(a)                       delta_a = delta_h * f'(a)
    out = post(h)                    delta_h = post.backward(h, delta_out)
    L   = loss(out, y)               delta_out = loss.grad(out, y)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.model import Model, Stage, forward
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules._base import LearningRule, UnsupportedModelError


class ManualBackpropState(NamedTuple):
    """Hand-written backprop keeps no state."""


def dense_backward(
    p: dict[str, jax.Array], x: jax.Array, delta_a: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Backward of ``a = x @ W + b``: ``({"kernel": dW, "bias": db}, delta_x)``."""
    grads = {"kernel": x.T @ delta_a}  # [in, B] @ [B, out]
    if "bias" in p:
        grads["bias"] = jnp.sum(delta_a, axis=0)
    delta_x = delta_a @ p["kernel"].T  # [B, out] @ [out, in]
    return grads, delta_x


_LAX_PADDINGS = ("SAME", "SAME_LOWER", "VALID")


def check_conv(conv: nn.Conv) -> None:
    """Fail (at build time) for conv settings this backward does not cover."""
    if conv.feature_group_count != 1 or conv.mask is not None:
        raise UnsupportedModelError(
            f"rule=manual_bp supports plain convolutions only ({conv.name}: "
            f"feature_group_count={conv.feature_group_count}, mask set: "
            f"{conv.mask is not None})"
        )
    for what in ("input_dilation", "kernel_dilation"):
        v = getattr(conv, what)
        if any(d != 1 for d in ((v,) if isinstance(v, int) else (v or ()))):
            raise UnsupportedModelError(
                f"rule=manual_bp has no backward for {what}={v} ({conv.name})"
            )
    if isinstance(conv.padding, str) and conv.padding not in _LAX_PADDINGS:
        raise UnsupportedModelError(
            f"rule=manual_bp supports {list(_LAX_PADDINGS)} and explicit padding, "
            f"not {conv.padding!r} ({conv.name})"
        )


def _conv_geometry(conv: nn.Conv, x_shape, kernel_shape):
    """Strides and explicit ``(lo, hi)`` pads of a flax ``Conv``, as its forward
    hands them to ``lax.conv_general_dilated``."""
    nd = len(kernel_shape) - 2
    s = conv.strides
    strides = (1,) * nd if s is None else (s,) * nd if isinstance(s, int) else tuple(s)
    pad = nn.linear.canonicalize_padding(conv.padding, nd)
    if isinstance(pad, str):
        pad = jax.lax.padtype_to_pads(x_shape[1:-1], kernel_shape[:-2], strides, pad)
    return strides, [tuple(int(v) for v in p) for p in pad]


def _conv_backward_for(conv: nn.Conv):
    check_conv(conv)
    return functools.partial(conv_backward, conv)


def conv_backward(
    conv: nn.Conv, p: dict[str, jax.Array], x: jax.Array, delta_a: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Backward of ``a = conv(x, W) + b`` (cross-correlation, channels last), written
    as two more convolutions, no autodiff:

    forward   a[b, p, o]  = sum_{k, i} x_pad[b, s p + k, i] W[k, i, o] + b[o]
    dW[k, i, o]           = sum_{b, p} x_pad[b, s p + k, i] delta_a[b, p, o]
              : correlate x with delta_a, delta_a's taps dilated by the stride s
                (batch and channels swap roles: i is the "batch", b the "feature");
    db[o]                 = sum_{b, p} delta_a[b, p, o];
    delta_x[b, q, i]      = sum_{k, o: q + lo = s p + k} delta_a[b, p, o] W[k, i, o]
              : the transposed convolution: delta_a with s - 1 zeros between taps,
                padded by (K - 1 - lo, N - 1 - (M - 1) s + lo), correlated with W
                flipped in space and with in/out swapped.
    """
    W = p["kernel"]  # [*K, in, out]
    nd = W.ndim - 2
    strides, pads = _conv_geometry(conv, x.shape, W.shape)
    sp = "HWDUVXYZ"[:nd]  # names of the spatial axes in dimension-number strings
    K = W.shape[:nd]
    # dW: lhs = x read as [in (batch), *S, B (features)], rhs = delta_a read as a
    # kernel [B (in), *M, out]; the output [*K', in, out] has K' >= K taps, of which
    # the first K are the kernel's (the rest would need input beyond the padding).
    dW = jax.lax.conv_general_dilated(
        x,
        delta_a,
        window_strides=(1,) * nd,
        padding=pads,
        rhs_dilation=strides,
        dimension_numbers=("C" + sp + "N", "I" + sp + "O", sp + "NC"),
    )
    grads = {"kernel": dW[tuple(slice(0, k) for k in K)]}
    if "bias" in p:
        grads["bias"] = jnp.sum(delta_a, axis=tuple(range(delta_a.ndim - 1)))
    # delta_x: the transposed convolution.
    N, M = x.shape[1:-1], delta_a.shape[1:-1]
    back_pads = [
        (k - 1 - lo, n - 1 - (m - 1) * s + lo)
        for k, (lo, _), n, m, s in zip(K, pads, N, M, strides)
    ]
    W_flipped = jnp.flip(W, axis=tuple(range(nd)))
    delta_x = jax.lax.conv_general_dilated(
        delta_a,
        W_flipped,
        window_strides=(1,) * nd,
        padding=back_pads,
        lhs_dilation=strides,
        dimension_numbers=("N" + sp + "C", sp + "OI", "N" + sp + "C"),
    )
    return grads, delta_x


# Linear parts this rule has a hand-written backward for: layer class -> a function
# of the layer returning its ``backward(p, x, delta_a) -> (grads, delta_x)``.
LINEAR_BACKWARDS = {
    nn.Dense: lambda layer: dense_backward,
    nn.Conv: _conv_backward_for,
}


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
