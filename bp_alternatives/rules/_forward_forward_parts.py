"""Forward-forward's pieces: normalisation, goodness, label embedding, negatives,
stage ranges, option checks and the FF network's forward pass under the rule's
resolved options (the rule itself: ``_forward_forward``).

References:
  G. Hinton (2022), "The Forward-Forward Algorithm: Some Preliminary Investigations",
  arXiv:2212.13345, section 3.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bp_alternatives.model import Model, Stage, apply_linear
from bp_alternatives.rules._base import UnsupportedModelError, refuse_norm

GOODNESS = ("sum", "mean")
NORMALISE = ("l2", "rms")
NEGATIVES = ("random", "hard", "sampled")
SCHEDULES = ("all", "layerwise")


# ---------------------------------------------------------------------------- pieces


def _feature_axes(v: jax.Array) -> tuple[int, ...]:
    return tuple(range(1, v.ndim))


def normalise_length(v: jax.Array, mode: str = "l2", eps: float = 1e-8) -> jax.Array:
    """Length-normalise each example over all non-batch axes.

    ``l2``: ``v / (||v|| + eps)`` (the paper's "normalise the length"); ``rms``:
    ``v / (sqrt(mean v^2) + eps)`` = ``sqrt(D) * l2`` (loeweX's ``_layer_norm``).
    """
    axes = _feature_axes(v)
    if mode == "l2":
        n = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))
    elif mode == "rms":
        n = jnp.sqrt(jnp.mean(jnp.square(v), axis=axes, keepdims=True))
    else:
        raise ValueError(f"rule.normalise={mode!r}; valid: {list(NORMALISE)}")
    return v / (n + eps)


def goodness_of(h: jax.Array, mode: str = "sum") -> jax.Array:
    """Goodness ``G = sum h^2`` (or the mean) over all non-batch axes -> ``[B]``."""
    if mode == "sum":
        return jnp.sum(jnp.square(h), axis=_feature_axes(h))
    if mode == "mean":
        return jnp.mean(jnp.square(h), axis=_feature_axes(h))
    raise ValueError(f"rule.goodness={mode!r}; valid: {list(GOODNESS)}")


def label_scale_of(x: jax.Array, label_scale: float | str) -> jax.Array:
    """The value a one-hot label is written with, per example ``[B]``.

    ``"max"``: the example's own ``max |x|`` (1 on [0, 1] images, as in the paper and
    loeweX); a number: that value for every example. Per example, not per batch
    (mohammadpz/pytorch_forward_forward uses the batch's ``x.max()``), so a
    prediction never depends on which other examples share its batch.
    """
    b = x.shape[0]
    if label_scale == "max":
        s = jnp.max(jnp.abs(x.reshape(b, -1)), axis=1)
        return jnp.where(s > 0, s, jnp.ones_like(s))
    return jnp.full((b,), float(label_scale), x.dtype)


def embed_label(x: jax.Array, label: jax.Array, scale: jax.Array) -> jax.Array:
    """Write ``label * scale`` over the first ``C`` features of each flattened example.

    ``x`` ``[B, ...]``, ``label`` ``[B, C]`` (one-hot, or the neutral ``1/C``),
    ``scale`` ``[B]``.
    """
    b, c = x.shape[0], label.shape[-1]
    flat = x.reshape(b, -1)
    flat = flat.at[:, :c].set((label * scale[:, None]).astype(x.dtype))
    return flat.reshape(x.shape)


def sample_wrong_labels(key: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
    """A label drawn uniformly from the ``C - 1`` wrong labels; never ``y`` itself.

    ``(y + U{1..C-1}) mod C`` hits each wrong label with probability ``1/(C-1)``
    (a label permutation, as in a popular implementation, hits ``y`` ~``1/C`` of the
    time and turns those negatives into positives).
    """
    offset = jax.random.randint(key, y.shape, 1, num_classes, dtype=y.dtype)
    return (y + offset) % num_classes


def sample_readout_wrong_labels(
    key: jax.Array, logits: jax.Array, y: jax.Array
) -> jax.Array:
    """A wrong label drawn with probability ``softmax(logits)`` restricted to the wrong
    labels (Hinton's official code: hard negatives from the read-out) ``[B]``."""
    true = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    masked = jnp.where(true, -jnp.inf, logits)
    return jax.random.categorical(key, masked, axis=-1).astype(y.dtype)


def hardest_wrong_labels(scores: jax.Array, y: jax.Array) -> jax.Array:
    """The wrong label the model scores highest (its most-confused one) ``[B]``."""
    true = jax.nn.one_hot(y, scores.shape[-1], dtype=bool)
    return jnp.argmax(jnp.where(true, -jnp.inf, scores), axis=-1).astype(y.dtype)


# ------------------------------------------------------------------ stages and checks


def stage_ranges(n: int) -> list[tuple[int, int]]:
    """Every range ``(a, b)``, ``0 <= a <= b < n``, of FF stages whose goodness can be
    summed for a prediction; the paper's ``(1, n - 1)`` (``(0, 0)`` for one stage)
    first, the rest in order."""
    first = (min(1, n - 1), n - 1)
    rest = [(a, b) for a in range(n) for b in range(a, n) if (a, b) != first]
    return [first, *rest]


def range_mode(a: int, b: int) -> str:
    """The ``predict`` mode of the goodness summed over stages ``a..b``."""
    return f"goodness_stage{a}" if a == b else f"goodness_stages{a}-{b}"


def check_index(name: str, value: int, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"rule.{name}={value!r}: expected a stage index"
            + (" or 'auto'" if name == "goodness_from" else "")
        )
    if not 0 <= value < n:
        raise ValueError(
            f"rule.{name}={value} leaves no stage to use: the model has {n} FF "
            f"(hidden) stage(s), indices 0..{n - 1}; set rule.{name}=0 for a "
            "one-hidden-stage model"
        )
    return value


def check_model(model: Model) -> None:
    """Raise ``UnsupportedModelError`` for a model FF cannot train."""
    num_classes = model.num_outputs
    n = model.num_stages - 1
    refuse_norm(
        model,
        "ff",
        "FF normalises each stage's input by its length itself (Hinton 2022) and "
        "scores every example's goodness on its own, which statistics shared across "
        "a batch of positive and negative data would confound",
    )
    if n == 0:
        raise UnsupportedModelError(
            "rule=ff trains hidden stages by goodness and this model has none (only "
            "a read-out stage); give it at least one hidden stage (model.hidden=[...])"
        )
    if math.prod(model.input_shape) < num_classes:
        raise UnsupportedModelError(
            f"rule=ff writes the label over the first {num_classes} input features, "
            f"but the input has only {math.prod(model.input_shape)}"
        )
    if num_classes < 2:
        raise UnsupportedModelError("rule=ff needs at least 2 classes for negatives")


def check_options(
    goodness: str,
    normalise: str,
    negatives: str,
    schedule: str,
    label_scale: float | str,
    steps_per_stage: int | None,
) -> None:
    """Raise ``ValueError`` naming the ``rule.<option>`` that is out of range."""
    for name, value, valid in (
        ("goodness", goodness, GOODNESS),
        ("normalise", normalise, NORMALISE),
        ("negatives", negatives, NEGATIVES),
        ("schedule", schedule, SCHEDULES),
    ):
        if value not in valid:
            raise ValueError(f"rule.{name}={value!r}; valid: {list(valid)}")
    if label_scale != "max" and not isinstance(label_scale, int | float):
        raise ValueError(
            f"rule.label_scale must be 'max' or a number, got {label_scale!r}"
        )
    if schedule == "layerwise" and (not steps_per_stage or int(steps_per_stage) < 1):
        raise ValueError(
            "rule.schedule=layerwise needs rule.steps_per_stage >= 1 (steps each stage "
            f"trains for: epochs_per_stage * steps_per_epoch), got {steps_per_stage!r}"
        )


def thresholds_of(
    threshold: float | str | Sequence[float], n: int
) -> list[float] | None:
    """theta per FF stage; ``None`` for ``"width"`` (theta_l = units of stage l,
    known at trace time)."""
    if isinstance(threshold, str):
        if threshold != "width":
            raise ValueError(
                f"rule.threshold={threshold!r}; use a number, 'width' or a list"
            )
        return None
    if isinstance(threshold, int | float):
        return [float(threshold)] * n
    thresholds = [float(t) for t in threshold]
    if len(thresholds) != n:
        raise ValueError(
            f"rule.threshold has {len(thresholds)} values for {n} FF stages"
        )
    return thresholds


# ------------------------------------------------------- the FF network, resolved

_sg = jax.lax.stop_gradient


class FFOptions(NamedTuple):
    """``ff``'s resolved options, shared by its init, update and predict."""

    model: Model  # its hidden stages are the FF stages
    goodness: str
    thresholds: list[float] | None  # theta_l per FF stage; None: the stage's width
    normalise: str
    eps: float
    label_scale: float | str
    negatives: str
    schedule: str
    steps_per_stage: int | None
    peer_weight: float
    peer_momentum: float
    auto: bool  # goodness_from="auto": every stage range is a prediction mode
    goodness_from: int
    ranges: list[tuple[int, int]]  # the stage ranges predicted from
    readout_from: int
    readout_opt: optax.GradientTransformation
    straight_through: bool


def stage_theta(o: FFOptions, l: int, h: jax.Array):
    """theta_l: the configured threshold, or the stage's number of units."""
    if o.thresholds is None:
        return float(math.prod(h.shape[1:]))
    return o.thresholds[l]


def stage_forward(o: FFOptions, stage: Stage, p, z):
    """A stage's activity ``h`` and its output (``post`` applied to ``h``)."""
    a = apply_linear(stage, p, z)
    h = stage.act.fn(a)
    if o.straight_through:
        # loeweX's ReLU_full_grad: value f(a), gradient as if f were the identity.
        h = a + _sg(h - a)
    return h, stage.post_op.fn(h)


def ff_forward(o: FFOptions, params, x):
    """Activities ``h_l`` and normalised outputs ``z_l`` of every FF stage."""
    z = normalise_length(x, o.normalise, o.eps)
    hs, zs = [], []
    for l, stage in enumerate(o.model.stages[:-1]):
        # sg: no gradient passes between stages
        h, out = stage_forward(o, stage, params[l], _sg(z))
        z = normalise_length(out, o.normalise, o.eps)
        hs.append(h)
        zs.append(z)
    return hs, zs


def goodness_table(o: FFOptions, params, x, scale):
    """``G[b, c, l]``: stage l's goodness for example b with label c embedded."""
    b, C, n = x.shape[0], o.model.num_outputs, o.model.num_stages - 1
    # all labels at once, ordered (label, example): [C * B, ...]
    xs = jnp.broadcast_to(x[None], (C, *x.shape))
    xs = xs.reshape(-1, *x.shape[1:])
    labels = jnp.repeat(jnp.eye(C, dtype=x.dtype), b, axis=0)
    xs = embed_label(xs, labels, jnp.tile(scale, C))
    hs, _ = ff_forward(o, params, xs)
    g = jnp.stack([goodness_of(h, o.goodness) for h in hs], axis=-1)
    return jnp.swapaxes(g.reshape(C, b, n), 0, 1)


def readout_features(o: FFOptions, params, x, scale):
    """The read-out's input ``[B, D_r]``: stage outputs under the neutral label."""
    C = o.model.num_outputs
    neutral = jnp.full((x.shape[0], C), 1.0 / C, x.dtype)
    _, zs = ff_forward(o, params, embed_label(x, neutral, scale))
    return _sg(
        jnp.concatenate([z.reshape(z.shape[0], -1) for z in zs[o.readout_from :]], -1)
    )
