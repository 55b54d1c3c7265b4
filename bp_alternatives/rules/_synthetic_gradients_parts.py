"""Synthetic gradients' pieces: the synthesizer networks ``M_l``, the decoupled
boundaries and the rule's options checked and resolved (the rule itself:
``_synthetic_gradients``).

References:
  M. Jaderberg, W. M. Czarnecki, S. Osindero, O. Vinyals, A. Graves, D. Silver,
  K. Kavukcuoglu (2017), "Decoupled Neural Interfaces using Synthetic Gradients",
  ICML 2017.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bp_alternatives.model import Model, apply_linear, apply_norm, stage_fn
from bp_alternatives.model.losses import Loss
from bp_alternatives.optim import make_optimizer
from bp_alternatives.rules._base import UnsupportedModelError

SYNTHESIZERS = ("linear", "mlp", "oracle")
BOUNDARIES = ("output", "preactivation")

SynthParams = tuple[dict[str, jax.Array], ...]  # one synthesizer: its dense layers


def init_synthesizer(
    key: jax.Array,
    d_in: int,
    d_out: int,
    kind: str,
    hidden_layers: int,
    width: int,
    dtype,
) -> SynthParams:
    """One synthesizer ``[B, d_in] -> [B, d_out]``; its final layer is all zeros.

    ``linear``: one dense layer. ``mlp``: ``hidden_layers`` ReLU layers of ``width``
    units (He-normal weights, zero biases) then the zero-initialised output layer.
    The zero output layer is the paper's trick: training starts as "no gradient" for
    the hidden stages rather than as noise (Jaderberg et al. 2017). The paper's
    synthesizers also use batch normalisation; these do not (no stage of the shared
    model has any).
    """
    widths = [d_in] + ([width] * hidden_layers if kind == "mlp" else []) + [d_out]
    keys = jax.random.split(key, len(widths) - 1)
    layers = []
    pairs = zip(widths[:-1], widths[1:], strict=True)
    for i, (k, (n_in, n_out)) in enumerate(zip(keys, pairs, strict=True)):
        if i == len(widths) - 2:
            kernel = jnp.zeros((n_in, n_out), dtype)
        else:
            kernel = jax.nn.initializers.he_normal()(k, (n_in, n_out), dtype)
        layers.append({"kernel": kernel, "bias": jnp.zeros((n_out,), dtype)})
    return tuple(layers)


def apply_synthesizer(theta: SynthParams, z: jax.Array) -> jax.Array:
    """``M(z)``: ReLU dense layers, the last one linear. ``z`` is ``[B, d_in]``."""
    for layer in theta[:-1]:
        z = jax.nn.relu(z @ layer["kernel"] + layer["bias"])
    return z @ theta[-1]["kernel"] + theta[-1]["bias"]


def decoupled_stages(decouple, n_hidden: int) -> tuple[int, ...]:
    """``rule.decouple`` as sorted hidden-stage indices; ValueError names the fix."""
    if isinstance(decouple, str):
        if decouple != "all":
            raise ValueError(
                f"rule.decouple must be 'all' or a list of hidden-stage indices, got "
                f"{decouple!r}"
            )
        return tuple(range(n_hidden))
    stages = sorted({int(l) for l in decouple})
    bad = [l for l in stages if not 0 <= l < n_hidden]
    if bad:
        raise ValueError(
            f"rule.decouple={list(decouple)} has indices {bad} outside the hidden "
            f"stages 0..{n_hidden - 1}; the read-out (stage {n_hidden}) always gets "
            "its true gradient"
        )
    return tuple(stages)


def boundary_fns(model: Model, boundary: str) -> tuple:
    """The network cut into ``(params_l, s_{l-1}) -> s_l`` pieces, one per stage, whose
    outputs ``s_l`` are what a synthesizer after hidden stage ``l`` sees.

    ``output``: the stages themselves, ``s_l = h_l`` (stage ``l``'s output).
    ``preactivation``: ``s_l = a_l = norm(linear(x))``, before stage ``l``'s activation
    and post op, which move into the piece above: piece ``l`` is
    ``a_{l-1} -> norm_l(linear_l(post_{l-1}(f_{l-1}(a_{l-1}))))`` and the read-out's
    piece ends with the full read-out stage. The composition is the same network and
    piece ``l`` reads only ``params_l``, so the vjp of a piece in its params is stage
    ``l``'s gradient given the signal at ``s_l``.
    """
    stages = model.stages
    if boundary == "output":
        return tuple(stage_fn(s) for s in stages)

    def piece(l):
        below, stage, last = (
            stages[l - 1] if l else None,
            stages[l],
            l == len(stages) - 1,
        )

        def f(p, s):
            x = below.post_op.fn(below.act.fn(s)) if below is not None else s
            a = apply_norm(stage, p, apply_linear(stage, p, x))
            return stage.post_op.fn(stage.act.fn(a)) if last else a

        return f

    return tuple(piece(l) for l in range(len(stages)))


class SGOptions(NamedTuple):
    """``sg``'s resolved options, shared by its init and update."""

    fns: tuple  # stage_fn of every stage
    loss: Loss
    input_shape: tuple[int, ...]
    num_outputs: int
    n_hidden: int  # L-1
    decoupled: tuple[int, ...]  # sorted hidden-stage indices with a synthesizer
    synthesizer: str
    oracle: bool
    conditioned: bool
    synth_hidden_layers: int
    synth_width: int
    opt: optax.GradientTransformation  # trains the synthesizers
    warmup_steps: int
    diagnostics: bool


def resolve_options(
    model: Model,
    loss: Loss,
    *,
    synthesizer,
    conditioned,
    synth_hidden_layers,
    synth_width,
    optimizer,
    warmup_steps,
    diagnostics,
    decouple,
    boundary="output",
) -> SGOptions:
    """``sg``'s options checked (errors name the field) and resolved."""
    if model.num_stages < 2:
        raise UnsupportedModelError(
            "rule=sg needs at least one hidden stage (a synthesizer sits after each "
            f"hidden stage); the model has {model.num_stages} stage(s): use a "
            "non-empty model.hidden"
        )
    if synthesizer not in SYNTHESIZERS:
        raise ValueError(
            f"rule.synthesizer must be one of {list(SYNTHESIZERS)}, got {synthesizer!r}"
        )
    if synthesizer == "mlp" and int(synth_hidden_layers) < 1:
        raise ValueError(
            f"rule.synth_hidden_layers must be >= 1 for synthesizer=mlp, got "
            f"{synth_hidden_layers}"
        )
    if int(synth_width) < 1:
        raise ValueError(f"rule.synth_width must be positive, got {synth_width}")
    if int(warmup_steps) < 0:
        raise ValueError(f"rule.warmup_steps must be >= 0, got {warmup_steps}")
    if boundary not in BOUNDARIES:
        raise ValueError(
            f"rule.boundary must be one of {list(BOUNDARIES)}, got {boundary!r}"
        )
    return SGOptions(
        fns=boundary_fns(model, boundary),
        loss=loss,
        input_shape=tuple(model.input_shape),
        num_outputs=model.num_outputs,
        n_hidden=model.num_stages - 1,
        decoupled=decoupled_stages(decouple, model.num_stages - 1),
        synthesizer=synthesizer,
        oracle=synthesizer == "oracle",
        conditioned=conditioned,
        synth_hidden_layers=int(synth_hidden_layers),
        synth_width=int(synth_width),
        opt=(
            make_optimizer("adam", 1e-3, total_steps=1)
            if optimizer is None
            else optimizer
        ),
        warmup_steps=int(warmup_steps),
        diagnostics=diagnostics,
    )
