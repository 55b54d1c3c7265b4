"""Losses on the read-out stage's output, each with its hand-written gradient.

A loss takes the network output ``out`` (``[B, K]``, after the read-out activation) and
targets ``y``: integer class labels ``[B]`` (turned into one-hot) or float targets
``[B, K]`` (used as they are, e.g. the backprop article's worked example,
docs/references.md). It is the mean over the batch of a per-example loss.
``grad(out, y)`` is ``dL/d(out)``, written out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Loss(NamedTuple):
    """A scalar loss ``value(out, y)`` and its gradient ``grad(out, y) = dL/d(out)``."""

    value: Callable[[jax.Array, jax.Array], jax.Array]
    grad: Callable[[jax.Array, jax.Array], jax.Array]
    name: str


def as_targets(y: jax.Array, num_outputs: int, dtype) -> jax.Array:
    """Integer labels ``[B]`` -> one-hot ``[B, K]``; float targets pass through."""
    if jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, num_outputs, dtype=dtype)
    return y.astype(dtype)


def _ce_value(out, y):
    t = as_targets(y, out.shape[-1], out.dtype)
    logp = jax.nn.log_softmax(out, axis=-1)
    return -jnp.mean(jnp.sum(t * logp, axis=-1))


def _ce_grad(out, y):
    # d/d(out) of -sum t log softmax(out) = softmax(out) - t  (one-hot/normalised t)
    t = as_targets(y, out.shape[-1], out.dtype)
    p = jax.nn.softmax(out, axis=-1)
    return (p * jnp.sum(t, axis=-1, keepdims=True) - t) / out.shape[0]


def _mse_value(out, y):
    t = as_targets(y, out.shape[-1], out.dtype)
    return jnp.mean(0.5 * jnp.sum((out - t) ** 2, axis=-1))


def _mse_grad(out, y):
    # d/d(out) of 1/2 (y_hat - y)^2 = y_hat - y   (the backprop article's delta_yhat)
    t = as_targets(y, out.shape[-1], out.dtype)
    return (out - t) / out.shape[0]


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss(_ce_value, _ce_grad, "cross_entropy"),
    "mse": Loss(_mse_value, _mse_grad, "mse"),
}


def get_loss(name: str) -> Loss:
    """Look a loss up by name; unknown names list the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; valid losses: {sorted(LOSSES)}"
        ) from None
