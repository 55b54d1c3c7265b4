"""The model interface: a stack of stages.

A stage is ``out = post(f(linear(params, x)))``: a linear part that holds the weights
(a Flax ``Dense``; convolutions follow the same pattern), a parameter-free
nonlinearity ``f`` and an optional parameter-free ``post`` op. The last stage is the
read-out. Params are a tuple with one ``{"kernel", "bias"}`` dict per stage, so every
rule can address "the params of stage l" as ``params[l]``.

Shapes are batch-first: ``x`` is ``[B, ...input_shape]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.model.activations import Activation, get_activation
from bp_alternatives.model.ops import PostOp, get_post_op

Params = tuple[dict[str, jax.Array], ...]


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
            return get_post_op(self.post)
        except ValueError as err:
            raise ValueError(f"stage {self.name}: {err}") from None


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
    """``(params, x) -> out`` for one stage (what per-stage ``jax.vjp`` takes)."""

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
