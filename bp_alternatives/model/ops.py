"""Parameter-free layer ops that follow a stage's activation, each with its
hand-written backward: pooling over non-overlapping windows and flattening.

A ``PostOp`` is ``(fn, backward)``; ``backward(h, d_out) -> d_h`` is what
hand-written backprop (``rules.manual_bp``) calls, and it equals ``jax.vjp`` of
``fn`` exactly. Shapes are batch-first, channels last: ``[B, *spatial, C]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


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
