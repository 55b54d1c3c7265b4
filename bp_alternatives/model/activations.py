"""Parameter-free nonlinearities, each with its derivative written beside it.

Every activation is a pair ``(fn, grad)`` where ``grad(a, h)`` returns the elementwise
derivative ``f'(a)`` given the pre-activation ``a`` and the output ``h = f(a)`` (sigmoid
and tanh are cheapest written in terms of ``h``). Hand-written backprop, feedback
alignment and DFA use ``grad``; nothing here calls ``jax.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

LEAKY_RELU_SLOPE = 0.01


class Activation(NamedTuple):
    """An elementwise nonlinearity ``h = fn(a)`` and its derivative ``grad(a, h)``."""

    fn: Callable[[jax.Array], jax.Array]
    grad: Callable[[jax.Array, jax.Array], jax.Array]


def _sigmoid(a):
    return jax.nn.sigmoid(a)


def _sigmoid_grad(a, h):
    del a
    return h * (1.0 - h)  # sigma'(a) = sigma(a) (1 - sigma(a)) <= 0.25


def _tanh(a):
    return jnp.tanh(a)


def _tanh_grad(a, h):
    del a
    return 1.0 - h * h


def _relu(a):
    # where(), not maximum(): jax.grad of maximum(a, 0) is 0.5 at a == 0 (it splits a
    # tie); where() gives 0 there, the subgradient the hand-written backward uses.
    return jnp.where(a > 0, a, 0.0)


def _relu_grad(a, h):
    del h
    return (a > 0).astype(a.dtype)


def _leaky_relu(a):
    return jnp.where(a > 0, a, LEAKY_RELU_SLOPE * a)


def _leaky_relu_grad(a, h):
    del h
    return jnp.where(a > 0, 1.0, LEAKY_RELU_SLOPE).astype(a.dtype)


def _gelu(a):
    # Exact GELU, a * Phi(a) (Hendrycks & Gimpel 2016), not the tanh approximation,
    # so that its derivative below is exact too.
    return 0.5 * a * (1.0 + jax.lax.erf(a / math.sqrt(2.0)))


def _gelu_grad(a, h):
    del h
    cdf = 0.5 * (1.0 + jax.lax.erf(a / math.sqrt(2.0)))
    pdf = jnp.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return cdf + a * pdf


def _hard_sigmoid(a):
    # rho(a) = clip(a, 0, 1), Scellier & Bengio (2017)'s hard sigmoid (not PyTorch's
    # relu6(a + 3) / 6). Written with where() so that jax.grad gives 1 on the closed
    # interval [0, 1], as _hard_sigmoid_grad does: an equilibrium-propagation state
    # held at a bound by clipping then stays there while its drive points outward.
    return jnp.where(a < 0, 0.0, jnp.where(a > 1, 1.0, a))


def _hard_sigmoid_grad(a, h):
    del h
    return ((a >= 0) & (a <= 1)).astype(a.dtype)


def _identity(a):
    return a


def _identity_grad(a, h):
    del h
    return jnp.ones_like(a)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(_sigmoid, _sigmoid_grad),
    "tanh": Activation(_tanh, _tanh_grad),
    "relu": Activation(_relu, _relu_grad),
    "leaky_relu": Activation(_leaky_relu, _leaky_relu_grad),
    "gelu": Activation(_gelu, _gelu_grad),
    "hard_sigmoid": Activation(_hard_sigmoid, _hard_sigmoid_grad),
    "identity": Activation(_identity, _identity_grad),
}


def get_activation(name: str) -> Activation:
    """Look an activation up by name; unknown names list the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid activations: {sorted(ACTIVATIONS)}"
        ) from None
