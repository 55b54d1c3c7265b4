"""Weight initialisers by name (Glorot, He, LeCun, normal, zeros)."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.nn import initializers as jinit

Initializer = Callable[..., jax.Array]

INITIALIZERS = ("xavier", "he", "lecun", "normal", "zeros", "torch")


def get_initializer(name: str, std: float = 0.01) -> Initializer:
    """Return a ``jax.nn.initializers`` function for ``name``.

    ``xavier``: Glorot & Bengio (2010) uniform, ``U(+-sqrt(6 / (fan_in + fan_out)))``;
    ``he``: He et al. (2015) normal, variance ``2 / fan_in``;
    ``lecun``: LeCun normal, variance ``1 / fan_in``;
    ``normal``: ``N(0, std^2)``;
    ``torch``: PyTorch's ``nn.Linear`` / ``nn.Conv`` default (``kaiming_uniform_``
    with ``a = sqrt(5)``), ``U(+-1 / sqrt(fan_in))``;
    ``zeros``: all zeros -- allowed so users can see why the backprop article says
    "never all zeros": every hidden unit of a layer then gets the same gradient and
    they never differentiate (with tanh/relu the hidden gradients are exactly zero).
    """
    if name == "xavier":
        return jinit.glorot_uniform()
    if name == "he":
        return jinit.he_normal()
    if name == "lecun":
        return jinit.lecun_normal()
    if name == "normal":
        return jinit.normal(stddev=std)
    if name == "torch":
        return jinit.variance_scaling(1 / 3, "fan_in", "uniform")
    if name == "zeros":
        return jinit.zeros
    raise ValueError(
        f"unknown initializer {name!r}; valid initializers: {list(INITIALIZERS)}"
    )
