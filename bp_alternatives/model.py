"""The model interface: a stack of stages.

A stage is ``out = post(f(linear(params, x)))``: a linear part that holds the weights
(a Flax ``Dense``; convolutions follow the same pattern), a parameter-free
nonlinearity ``f`` and an optional parameter-free ``post`` op. The last stage is the
read-out. Params are a tuple with one ``{"kernel", "bias"}`` dict per stage, so every
rule can address "the params of stage l" as ``params[l]``.

Shapes are batch-first: ``x`` is ``[B, ...input_shape]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.activations import Activation, get_activation
from bp_alternatives.initializers import get_initializer

Params = tuple[dict[str, jax.Array], ...]


class PostOp(NamedTuple):
    """A parameter-free op after the activation, with its hand-written backward."""

    fn: Callable[[jax.Array], jax.Array]
    # backward(h, d_out) -> d_h  (h is the op's input, d_out the gradient of its output)
    backward: Callable[[jax.Array, jax.Array], jax.Array]


def _flatten(h):
    return h.reshape(h.shape[0], -1)


POST_OPS: dict[str, PostOp] = {
    "none": PostOp(lambda h: h, lambda h, d: d),
    "flatten": PostOp(_flatten, lambda h, d: d.reshape(h.shape)),
}


class Stage(NamedTuple):
    """One stage: ``post(activation(linear(x)))``."""

    linear: nn.Module
    activation: str = "identity"
    post: str = "none"
    name: str = "stage"

    @property
    def act(self) -> Activation:
        return get_activation(self.activation)

    @property
    def post_op(self) -> PostOp:
        try:
            return POST_OPS[self.post]
        except KeyError:
            raise ValueError(
                f"unknown post op {self.post!r} in {self.name}; valid: {sorted(POST_OPS)}"
            ) from None


class StageCache(NamedTuple):
    """What the forward pass of one stage stores for the backward pass."""

    x: jax.Array  # stage input                     [B, ...]
    a: jax.Array  # pre-activation a = linear(x)    [B, ...]
    h: jax.Array  # activity h = f(a)               [B, ...]
    out: jax.Array  # post(h), the next stage's input


class Model(NamedTuple):
    """A stack of stages plus the metadata that results.json reports."""

    stages: tuple[Stage, ...]
    input_shape: tuple[int, ...]
    num_outputs: int
    spec: dict[str, Any]

    @property
    def num_stages(self) -> int:
        return len(self.stages)


def init_params(model: Model, key: jax.Array) -> Params:
    """Initialise every stage's linear part (float32)."""
    params = []
    x = jnp.zeros((1, *model.input_shape), jnp.float32)
    for stage, k in zip(model.stages, jax.random.split(key, model.num_stages)):
        p = stage.linear.init(k, x)["params"]
        params.append(dict(p))
        x = apply_stage(stage, p, x).out
    return tuple(params)


def apply_linear(stage: Stage, p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """The stage's linear part ``a = linear(params, x)``."""
    return stage.linear.apply({"params": p}, x)


def apply_stage(stage: Stage, p: dict[str, jax.Array], x: jax.Array) -> StageCache:
    """Forward one stage and keep what its backward needs."""
    a = apply_linear(stage, p, x)
    h = stage.act.fn(a)
    return StageCache(x=x, a=a, h=h, out=stage.post_op.fn(h))


def stage_fn(stage: Stage) -> Callable[[dict[str, jax.Array], jax.Array], jax.Array]:
    """``(params, x) -> out`` for one stage (what per-stage ``jax.vjp`` differentiates)."""

    def f(p, x):
        return apply_stage(stage, p, x).out

    return f


def forward(
    model: Model, params: Params, x: jax.Array, *, remat: bool = False
) -> tuple[jax.Array, tuple[StageCache, ...]]:
    """Run the stack; return the read-out output and every stage's cache.

    With ``remat=True`` each stage is wrapped in ``jax.checkpoint``: its activations are
    recomputed in the backward pass instead of stored (gradient checkpointing).
    """
    caches = []
    for stage, p in zip(model.stages, params):
        if remat:
            cache = jax.checkpoint(lambda p, x, s=stage: apply_stage(s, p, x))(p, x)
        else:
            cache = apply_stage(stage, p, x)
        caches.append(cache)
        x = cache.out
    return x, tuple(caches)


def output(model: Model, params: Params, x: jax.Array) -> jax.Array:
    """The network's output (read-out activities), no caches."""
    return forward(model, params, x)[0]


def mlp(
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "tanh",
    output_activation: str = "identity",
    init: str = "xavier",
    init_std: float = 0.01,
    bias: bool = True,
) -> Model:
    """A multilayer perceptron: ``len(hidden)`` hidden stages and one read-out stage.

    Inputs must be flat (``input_shape == (D,)``); the data loaders flatten images.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 1:
        raise ValueError(
            f"model=mlp needs flat inputs, got input_shape={input_shape}; "
            "flatten the data (data.flatten=true) or use a convolutional model"
        )
    get_activation(activation)
    get_activation(output_activation)
    kernel_init = get_initializer(init, init_std)
    widths = [int(w) for w in hidden]
    if any(w <= 0 for w in widths) or num_outputs <= 0:
        raise ValueError(f"model.hidden widths must be positive, got {list(hidden)}")
    stages = []
    for i, w in enumerate([*widths, num_outputs]):
        is_readout = i == len(widths)
        stages.append(
            Stage(
                linear=nn.Dense(
                    w, use_bias=bias, kernel_init=kernel_init, name=f"dense_{i}"
                ),
                activation=output_activation if is_readout else activation,
                name="readout" if is_readout else f"hidden_{i}",
            )
        )
    spec = {
        "name": "mlp",
        "widths": [input_shape[0], *widths, num_outputs],
        "activation": activation,
        "output_activation": output_activation,
        "init": init,
        "bias": bias,
    }
    return Model(tuple(stages), input_shape, int(num_outputs), spec)
