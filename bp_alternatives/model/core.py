"""The model interface: a stack of stages.

A stage is ``out = post(f(norm(linear(params, x))))``: a linear part that holds the
weights (a Flax ``Dense``; convolutions follow the same pattern), an optional
normalisation (``model.norm``: BatchNorm or LayerNorm with a per-channel affine),
a parameter-free nonlinearity ``f`` and an optional parameter-free
``post`` op. The last stage is the read-out. Params are a tuple with one
``{"kernel", "bias"[, "norm"]}`` dict per stage, so every rule can address "the params
of stage l" as ``params[l]``.

BatchNorm stages train on batch statistics; their running statistics are *model
state*, kept outside params (the training loop updates them, :func:`update_model_state`,
so no learning rule sees them) and folded into params for evaluation
(:func:`inference_params`).

Shapes are batch-first: ``x`` is ``[B, ...input_shape]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.model.activations import Activation, get_activation
from bp_alternatives.model.norm import (
    check_norm,
    init_norm,
    norm_forward,
    running_update,
)
from bp_alternatives.model.ops import PostOp, get_post_op

Params = tuple[dict[str, jax.Array], ...]


class Stage(NamedTuple):
    """One stage: ``post(activation(norm(linear(x))))``."""

    linear: nn.Module
    activation: str = "identity"
    post: str = "none"
    name: str = "stage"
    norm: str = "none"  # none | batchnorm | layernorm (model.norm)

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
    a: jax.Array  # pre-activation a = norm(z)      [B, ...]
    h: jax.Array  # activity h = f(a)               [B, ...]
    out: jax.Array  # post(h), the next stage's input
    z: jax.Array | None = None  # linear output z = linear(x) (a without a norm)


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
    """Initialise every stage's linear part (float32) and normalisation (scale 1,
    offset 0)."""
    params = []
    x = jnp.zeros((1, *model.input_shape), jnp.float32)
    for stage, k in zip(model.stages, jax.random.split(key, model.num_stages)):
        p = dict(stage.linear.init(k, x)["params"])
        if check_norm(stage.norm) != "none":
            z = apply_linear(stage, p, x)
            p["norm"] = init_norm(z.shape[-1], z.dtype)
        params.append(p)
        x = apply_stage(stage, p, x).out
    return tuple(params)


def apply_linear(stage: Stage, p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """The stage's linear part ``z = linear(params, x)`` (``p["norm"]`` unused)."""
    if "norm" in p:
        p = {k: v for k, v in p.items() if k != "norm"}
    return stage.linear.apply({"params": p}, x)


def apply_norm(stage: Stage, p: dict[str, jax.Array], z: jax.Array) -> jax.Array:
    """The stage's normalisation ``a = norm(z)`` (``z`` itself without one)."""
    if stage.norm == "none":
        return z
    return norm_forward(stage.norm, p["norm"], z)


def apply_stage(stage: Stage, p: dict[str, jax.Array], x: jax.Array) -> StageCache:
    """Forward one stage and keep what its backward needs."""
    z = apply_linear(stage, p, x)
    a = apply_norm(stage, p, z)
    h = stage.act.fn(a)
    return StageCache(x=x, a=a, h=h, out=stage.post_op.fn(h), z=z)


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


# ------------------------------------------------ model state (BatchNorm statistics)

ModelState = tuple[dict[str, jax.Array], ...]  # per stage: {} or {"mean", "var"} [C]


def init_model_state(model: Model, params: Params) -> ModelState:
    """Running statistics for every BatchNorm stage (mean 0, variance 1), ``{}`` for
    the others; ``()`` when the model has no BatchNorm stage."""
    if not any(s.norm == "batchnorm" for s in model.stages):
        return ()
    return tuple(
        {
            "mean": jnp.zeros_like(p["norm"]["scale"]),
            "var": jnp.ones_like(p["norm"]["scale"]),
        }
        if s.norm == "batchnorm"
        else {}
        for s, p in zip(model.stages, params)
    )


def update_model_state(
    model: Model, params: Params, x: jax.Array, state: ModelState
) -> ModelState:
    """The running statistics moved toward those of the batch ``x`` ``[B, ...]`` under
    ``params`` (one training-mode forward pass; ``state`` itself when empty)."""
    if not state:
        return state
    _, caches = forward(model, params, x)
    return tuple(running_update(st, c.z) if st else st for st, c in zip(state, caches))


def inference_params(params: Params, state: ModelState) -> Params:
    """``params`` with each BatchNorm stage's running statistics under ``"norm"``:
    what evaluation runs on (BatchNorm then normalises with them, not with the
    batch's). ``params`` itself when ``state`` is empty."""
    if not state:
        return params
    return tuple(
        {**p, "norm": {**p["norm"], **st}} if st else p for p, st in zip(params, state)
    )
