"""Layer ops with their hand-written backward (what ``rules.manual_bp`` calls).

Linear parts: ``dense_backward`` and ``conv_backward`` (``LINEAR_BACKWARDS``: flax
layer class -> backward), ``backward(p, x, delta_a) -> (grads, delta_x)``.
Parameter-free ops after a stage's activation: pooling over non-overlapping windows
and flattening. A ``PostOp`` is ``(fn, backward)``; ``backward(h, d_out) -> d_h``
equals ``jax.vjp`` of ``fn`` exactly. Shapes are batch-first, channels last:
``[B, *spatial, C]``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.model import conv as fast_conv


class UnsupportedModelError(ValueError):
    """A rule or a hand-written backward cannot handle some part of a model (raised
    when the rule is built)."""


class PostOp(NamedTuple):
    """A parameter-free op after the activation, with its hand-written backward."""

    fn: Callable[[jax.Array], jax.Array]
    # backward(h, d_out) -> d_h  (h is the op's input, d_out the gradient of its output)
    backward: Callable[[jax.Array, jax.Array], jax.Array]


def _flatten(h):
    return h.reshape(h.shape[0], -1)


def _windows(h: jax.Array, k: int) -> jax.Array:
    """``[B, *S, C] -> [B, S_1 // k, k, ..., S_n // k, k, C]``: non-overlapping
    ``k``-wide windows along every spatial axis; a remainder that does not fill a
    window is dropped (PyTorch's ``MaxPool2d`` floor mode, flax ``padding="VALID"``)."""
    spatial = h.shape[1:-1]
    if any(s < k for s in spatial):
        raise ValueError(f"cannot pool {k}-wide windows from a feature map {spatial}")
    h = h[(slice(None), *(slice(0, (s // k) * k) for s in spatial), slice(None))]
    shape = [h.shape[0]]
    for s in spatial:
        shape += [s // k, k]
    return h.reshape(*shape, h.shape[-1])


def _window_axes(h: jax.Array) -> tuple[int, ...]:
    return tuple(2 + 2 * i for i in range(h.ndim - 2))  # the k-axes of _windows(h)


def _unwindows(w: jax.Array, h: jax.Array, k: int) -> jax.Array:
    """Inverse of ``_windows``: back to ``h``'s shape, zeros where it cropped."""
    spatial = h.shape[1:-1]
    w = w.reshape(h.shape[0], *((s // k) * k for s in spatial), h.shape[-1])
    pad = [(0, 0), *((0, s - (s // k) * k) for s in spatial), (0, 0)]
    return jnp.pad(w, pad)


def max_pool(k: int) -> PostOp:
    """Max over non-overlapping ``k``-wide windows (stride ``k``).

    Backward: the window's gradient goes to its maximum; where several entries tie
    for the maximum it is split equally among them, which is what ``jax.grad`` of
    this forward (a ``max`` reduction) gives, so the two agree exactly.
    """

    def fn(h):
        return jnp.max(_windows(h, k), axis=_window_axes(h))

    def backward(h, d):
        w = _windows(h, k)
        axes = _window_axes(h)
        is_max = (w == jnp.max(w, axis=axes, keepdims=True)).astype(d.dtype)
        share = is_max / jnp.sum(is_max, axis=axes, keepdims=True)
        return _unwindows(share * jnp.expand_dims(d, axes), h, k)

    return PostOp(fn, backward)


def avg_pool(k: int) -> PostOp:
    """Mean over non-overlapping ``k``-wide windows (stride ``k``); backward spreads
    each window's gradient evenly over its ``k^n`` entries."""

    def fn(h):
        return jnp.mean(_windows(h, k), axis=_window_axes(h))

    def backward(h, d):
        axes = _window_axes(h)
        w = jnp.broadcast_to(jnp.expand_dims(d, axes), _windows(h, k).shape)
        return _unwindows(w / k ** len(axes), h, k)

    return PostOp(fn, backward)


def _compose(first: PostOp, second: PostOp) -> PostOp:
    """``second(first(h))``; backward recomputes ``first(h)`` for ``second``'s input."""
    return PostOp(
        lambda h: second.fn(first.fn(h)),
        lambda h, d: first.backward(h, second.backward(first.fn(h), d)),
    )


POST_OPS: dict[str, PostOp] = {
    "none": PostOp(lambda h: h, lambda h, d: d),
    "flatten": PostOp(_flatten, lambda h, d: d.reshape(h.shape)),
    "max_pool2": max_pool(2),
    "avg_pool2": avg_pool(2),
}
_POOL = re.compile(r"(max|avg)_pool([1-9][0-9]*)")


def get_post_op(name: str) -> PostOp:
    """A post op by name: a ``POST_OPS`` entry, ``max_pool<k>`` / ``avg_pool<k>``, or
    several joined by ``+`` and applied left to right (``max_pool2+flatten``)."""
    ops = []
    for part in name.split("+"):
        if part in POST_OPS:
            ops.append(POST_OPS[part])
        elif m := _POOL.fullmatch(part):
            ops.append((max_pool if m[1] == "max" else avg_pool)(int(m[2])))
        else:
            raise ValueError(
                f"unknown post op {part!r}; valid: {sorted(POST_OPS)}, "
                "max_pool<k>, avg_pool<k>, and several joined by '+' "
                "(e.g. 'max_pool2+flatten')"
            )
    op = ops[0]
    for nxt in ops[1:]:
        op = _compose(op, nxt)
    return op


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
            f"the hand-written conv backward (rule=manual_bp) supports plain "
            f"convolutions only ({conv.name}: "
            f"feature_group_count={conv.feature_group_count}, mask set: "
            f"{conv.mask is not None})"
        )
    for what in ("input_dilation", "kernel_dilation"):
        v = getattr(conv, what)
        if any(d != 1 for d in ((v,) if isinstance(v, int) else (v or ()))):
            raise UnsupportedModelError(
                f"the hand-written conv backward (rule=manual_bp) has no case for "
                f"{what}={v} ({conv.name})"
            )
    if isinstance(conv.padding, str) and conv.padding not in _LAX_PADDINGS:
        raise UnsupportedModelError(
            f"the hand-written conv backward (rule=manual_bp) supports "
            f"{list(_LAX_PADDINGS)} and explicit padding, "
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


def _flax_dims(ndim: int):
    """The dimension numbers flax's ``nn.Conv`` passes for ``ndim``-d inputs."""
    return nn.linear._conv_dimension_numbers((1,) * ndim)


def _conv_backward_for(conv: nn.Conv):
    check_conv(conv)
    return functools.partial(conv_backward, conv)


def conv_backward(
    conv: nn.Conv, p: dict[str, jax.Array], x: jax.Array, delta_a: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Backward of ``a = conv(x, W) + b`` (cross-correlation, channels last), no
    autodiff: ``({"kernel": dW, "bias": db}, delta_x)``, ``db[o] = sum_{b, p}
    delta_a[b, p, o]``. A layer built with the patches + matmul convolution
    (:mod:`bp_alternatives.model.conv`) on CPU gets the same products as its own VJP
    (``dW = im2col(x)^T delta_a``, ``delta_x = col2im(delta_a W_mat^T)``); any other
    gets :func:`conv_backward_lax`.
    """
    W = p["kernel"]  # [*K, in, out]
    strides, pads = _conv_geometry(conv, x.shape, W.shape)
    grads = {}
    if "bias" in p:
        grads["bias"] = jnp.sum(delta_a, axis=tuple(range(delta_a.ndim - 1)))
    dims = nn.linear._conv_dimension_numbers(x.shape)  # what nn.Conv passes
    if conv.conv_general_dilated is fast_conv.conv_general_dilated and (
        fast_conv.matmul_path(x.ndim, pads, None, None, dims, 1)
    ):
        K = W.shape[:-2]
        grads["kernel"] = fast_conv.conv_weight_grad(x, delta_a, K, strides, pads)
        delta_x = fast_conv.conv_input_grad(delta_a, W, x.shape, strides, pads)
    else:
        grads["kernel"], delta_x = conv_backward_lax(W, x, delta_a, strides, pads)
    return grads, delta_x


def conv_backward_lax(W, x, delta_a, strides, pads) -> tuple[jax.Array, jax.Array]:
    """``(dW, delta_x)`` of ``a = conv(x, W)`` written as two more convolutions:

    forward   a[b, p, o]  = sum_{k, i} x_pad[b, s p + k, i] W[k, i, o]
    dW[k, i, o]           = sum_{b, p} x_pad[b, s p + k, i] delta_a[b, p, o]
              : correlate x with delta_a, delta_a's taps dilated by the stride s
                (batch and channels swap roles: i is the "batch", b the "feature");
    delta_x[b, q, i]      = sum_{k, o: q + lo = s p + k} delta_a[b, p, o] W[k, i, o]
              : the transposed convolution: delta_a with s - 1 zeros between taps,
                padded by (K - 1 - lo, N - 1 - (M - 1) s + lo), correlated with W
                flipped in space and with in/out swapped.
    """
    nd = W.ndim - 2
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
    return dW[tuple(slice(0, k) for k in K)], delta_x


# Linear parts with a hand-written backward: layer class -> a function of the layer
# returning its ``backward(p, x, delta_a) -> (grads, delta_x)``.
LINEAR_BACKWARDS = {
    nn.Dense: lambda layer: dense_backward,
    nn.Conv: _conv_backward_for,
}
