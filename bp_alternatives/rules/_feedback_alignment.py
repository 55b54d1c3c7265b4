"""Feedback alignment (FA), its sign-concordant variants and Kolen-Pollack.

Each stage's weights get their *true local* gradient, but the error signal sent down
through a stage's linear part uses a feedback kernel ``B`` in place of ``W``:

    forward                     backward (delta = dL/d(thing))
    a_l   = linear(W_l, x_l)    delta_a_l = vjp of post(f(.)) at delta_out_l (true f)
    out_l = post(f(a_l))        dW_l      = vjp of linear(., x_l) at delta_a_l
                                          (= x_l^T delta_a_l for a Dense stage)
                                delta_out_{l-1} = vjp of linear(B_l, .) at delta_a_l
                                          (= delta_a_l B_l^T for a Dense stage)

``B_l`` has the shape of the kernel ``W_l`` (so for a Dense stage ``delta B^T`` replaces
``delta W^T``, and for a convolutional stage ``B_l`` acts as the feedback kernel of the
transposed convolution). Everything is done at the stage interface with ``jax.vjp`` of
one stage at a time, so the rule works for any model built from stages. Stage 0 sends
no signal below it, so it has no ``B`` and its input vjp is never computed.

Feedback variants (``feedback=``):

    random     B fixed at init (Lillicrap et al. 2016)
    usf        B = s sign(W), s = sqrt(2 / (fan_in + fan_out))   uniform sign-concordant
    frsf       B = |R| sign(W), R drawn once at init       fixed random magnitude
    brsf       B = |R| sign(W), R redrawn every batch      batch-wise random magnitude
    kp         B starts random and gets W's update plus weight decay (Kolen-Pollack)
    symmetric  B = W: exact backprop through the same code path (the control)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bp_alternatives.geometry import angle_deg
from bp_alternatives.model import Model, Stage, init_params
from bp_alternatives.model.initializers import get_initializer
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules._base import (
    LearningRule,
    Trainable,
    UnsupportedModelError,
    init_trainable,
    input_vjp,
    nonlinear_part,
    params_vjp,
    train_step,
)

FEEDBACKS = ("random", "usf", "brsf", "frsf", "kp", "symmetric")


class FeedbackAlignmentState(NamedTuple):
    """Feedback weights for stages ``1..L-1`` (stage 0 sends no signal down).

    ``B``: the fixed feedback kernels of ``random`` (shaped like each kernel).
    ``R``: the fixed random magnitudes for ``frsf``. ``trainable``: for ``kp``, the
    learned kernels ``B`` (``trainable.params``) and their optimizer state. Empty
    tuples otherwise (``usf``, ``brsf`` and ``symmetric`` derive ``B`` from ``W`` and
    the step key each step).
    """

    B: tuple[jax.Array, ...]
    R: tuple[jax.Array, ...]
    trainable: Trainable | tuple = ()


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out of a kernel ``[..., in, out]`` (Dense or Conv; Glorot)."""
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def usf_scale(shape: tuple[int, ...]) -> float:
    """``sqrt(2 / (fan_in + fan_out))``: the std of Glorot init, the sign's magnitude.

    Liao, Leibo & Poggio (2016) use ``sign(W)`` with batch normalisation to keep
    signals in range; without it, the unscaled sign explodes through deep stacks. We
    scale it like biotorch (Sanfiz & Akrout 2021, ``fa_constructor/linear.py``), which
    follows Xiao, Chen, Liao & Poggio (2018).
    """
    fan_in, fan_out = _fans(shape)
    return math.sqrt(2.0 / (fan_in + fan_out))


class _Options(NamedTuple):
    """The ``fa`` factory's resolved options, shared by its init and update."""

    model: Model
    loss: Loss
    feedback: str
    scale: float
    inits: list  # stage l's initialiser for its random B or R (None: none drawn)
    kernel_shapes: list[tuple[int, ...]]
    usf_scales: list[float]
    kp_opt: optax.GradientTransformation  # trains B under feedback=kp


def _feedback_inits(model: Model, feedback: str, init, init_std: float) -> list:
    """Each stage's initialiser for its random ``B``/``R`` (``None`` when the variant
    draws none); UnsupportedModelError/ValueError name the fix.
    """

    def initializer(stage: Stage):
        if init is not None:
            return get_initializer(init, init_std)
        kernel_init = getattr(stage.linear, "kernel_init", None)
        if kernel_init is None:
            raise UnsupportedModelError(
                f"rule=fa cannot find the kernel initialiser of stage {stage.name!r} "
                "to draw B from; set rule.init (e.g. rule.init=xavier)"
            )
        return kernel_init

    draws_random = feedback in ("random", "kp", "frsf", "brsf")
    inits = [initializer(s) if draws_random else None for s in model.stages]
    if draws_random:
        for l in range(1, model.num_stages):
            # a small probe draw (one per initialiser) spots all-zero initialisers
            probe = inits[l](jax.random.PRNGKey(0), (3, 3), jnp.float32)
            if not bool(jnp.any(probe != 0)):
                raise ValueError(
                    f"rule=fa feedback={feedback} draws B from the initialiser of "
                    f"stage {model.stages[l].name!r}, which gives all zeros "
                    "(model.init=zeros?); zero feedback sends no signal. Set rule.init "
                    "(e.g. rule.init=xavier)."
                )
    return inits


def _resolve(
    model: Model, loss: Loss, feedback: str, init, init_std, scale, optimizer
) -> _Options:
    """``fa``'s options checked (errors name the field and the fix) and resolved."""
    if feedback not in FEEDBACKS:
        raise ValueError(
            f"unknown rule.feedback {feedback!r} for rule=fa; valid: {list(FEEDBACKS)}"
        )
    shapes = jax.eval_shape(lambda k: init_params(model, k), jax.random.PRNGKey(0))
    for stage, p in zip(model.stages, shapes):
        if "kernel" not in p:
            raise UnsupportedModelError(
                f"rule=fa needs a 'kernel' in every stage's params; stage "
                f"{stage.name!r} has {sorted(p)}"
            )
    kernel_shapes = [tuple(p["kernel"].shape) for p in shapes]
    inits = _feedback_inits(model, feedback, init, init_std)
    kp_opt = optimizer or optax.chain(
        optax.add_decayed_weights(1e-2), optax.sgd(0.1)
    )  # B <- B - 0.1 (dW + 1e-2 B)
    usf_scales = [usf_scale(s) for s in kernel_shapes]
    return _Options(
        model, loss, feedback, scale, inits, kernel_shapes, usf_scales, kp_opt
    )


def _draw(o: _Options, key: jax.Array, l: int, dtype) -> jax.Array:
    """``scale * init(fold_in(key, l))``: the random kernel of stage ``l``."""
    k = jax.random.fold_in(key, l)
    return o.scale * o.inits[l](k, o.kernel_shapes[l], dtype)


def _init(o: _Options, key: jax.Array, params) -> FeedbackAlignmentState:
    """The fixed ``B`` (random), ``R`` (frsf) or trainable ``B`` (kp); else empty."""
    feedback, num = o.feedback, o.model.num_stages
    if feedback not in ("random", "kp", "frsf"):
        return FeedbackAlignmentState(B=(), R=())
    fixed = tuple(_draw(o, key, l, params[l]["kernel"].dtype) for l in range(1, num))
    if feedback == "frsf":
        return FeedbackAlignmentState(B=(), R=tuple(jnp.abs(r) for r in fixed))
    if feedback == "kp":
        return FeedbackAlignmentState(
            B=(), R=(), trainable=init_trainable(o.kp_opt, fixed)
        )
    return FeedbackAlignmentState(B=fixed, R=())


def _feedback_kernels(o: _Options, params, state: FeedbackAlignmentState, key):
    """``B_l`` for ``l = 1..L-1`` (index ``l - 1``), the step's feedback."""
    W = [params[l]["kernel"] for l in range(1, o.model.num_stages)]
    if o.feedback == "random":
        return state.B
    if o.feedback == "kp":
        return state.trainable.params
    if o.feedback == "symmetric":
        return tuple(W)
    if o.feedback == "usf":
        return tuple(
            o.scale * o.usf_scales[l] * jnp.sign(w) for l, w in enumerate(W, start=1)
        )
    if o.feedback == "frsf":
        return tuple(r * jnp.sign(w) for r, w in zip(state.R, W))
    # brsf: R_l = scale * init(fold_in(key, l)), redrawn from each step's key
    return tuple(
        jnp.abs(_draw(o, key, l, w.dtype)) * jnp.sign(w)
        for l, w in enumerate(W, start=1)
    )


def _update(o: _Options, params, state: FeedbackAlignmentState, batch, key):
    """True local gradients, the signal sent down through ``B``; the metrics."""
    model, num = o.model, o.model.num_stages
    B = _feedback_kernels(o, params, state, key)
    # Forward one stage at a time, keeping each stage's pullbacks.
    x = batch.x
    inputs, pull_params, pull_nonlin = [], [], []
    for stage, p in zip(model.stages, params):
        inputs.append(x)
        a, pull_p = params_vjp(stage, p, x)
        x, pull_a = jax.vjp(nonlinear_part(stage), a)
        pull_params.append(pull_p)
        pull_nonlin.append(pull_a)
    value, dout = jax.value_and_grad(o.loss.value)(x, batch.y)
    delta = dout  # dL/d(out of the read-out stage)
    grads = [None] * num
    for l in reversed(range(num)):
        stage = model.stages[l]
        (delta_a,) = pull_nonlin[l](delta)  # through post and f (true stage)
        # true local gradient of W_l, b_l (and the norm's); delta_z: delta_a through
        # the normalisation's local derivative
        grads[l], delta_z = pull_params[l](delta_a)
        if l > 0:  # the signal sent down uses B_l in place of W_l
            p_B = {**params[l], "kernel": B[l - 1]}
            _, pull_x = input_vjp(stage, p_B, inputs[l])
            (delta,) = pull_x(delta_z)
    if o.feedback == "kp":
        # Kolen-Pollack (Akrout et al. 2019): B gets W's update and weight decay.
        dW = tuple(grads[l]["kernel"] for l in range(1, num))
        state = state._replace(trainable=train_step(o.kp_opt, state.trainable, dW))
    nan = jnp.full((), jnp.nan, value.dtype)
    weight_alignment = jnp.stack(
        [nan]
        + [
            angle_deg(params[l]["kernel"], B[l - 1]).astype(value.dtype)
            for l in range(1, num)
        ]
    )
    metrics = {"loss": value, "weight_alignment_deg": weight_alignment}
    return tuple(grads), state, metrics


def fa(
    model: Model,
    loss: Loss,
    *,
    feedback: str = "random",
    init: str | None = None,
    init_std: float = 0.01,
    scale: float = 1.0,
    optimizer: optax.GradientTransformation | None = None,
) -> LearningRule:
    """Feedback alignment: true local gradients, random feedback for the signal.

    Args:
      model: the stack of stages. Every stage's params need a ``"kernel"``.
      loss: the loss on the read-out output.
      feedback: ``random`` | ``usf`` | ``brsf`` | ``frsf`` | ``kp`` | ``symmetric``
        (see the module docstring).
      init: initialiser (``xavier``, ``he``, ``lecun``, ``normal``) for the random
        ``B`` (``random``, ``kp``) and ``R`` (``frsf``, ``brsf``); ``None``: the same
        initialiser as the stage's own kernel.
      init_std: std for ``init=normal``.
      scale: multiplies ``B`` (and ``R``, and the ``usf`` magnitude).
      optimizer: Kolen-Pollack (Akrout et al. 2019): ``B`` receives the same update
        as ``W`` plus the same weight decay. The run's optimizer only ever sees
        ``params``, so the rule runs its own copy of that optimizer on ``B``
        (``experiment.build_rule`` passes the run's optimizer; ``rule.optimizer`` in
        the config names another), fed the same local gradient ``dW`` the rule
        returns for ``W``. Same gradients, same optimizer state: ``B`` and ``W`` get
        the same step, except for the decay term, which acts on each itself --
        with ``optim=sgd``/``adamw`` and weight decay ``wd`` at rate ``lr``,
        ``W - B`` shrinks by exactly ``(1 - lr*wd)`` per step and ``B -> W``. Without
        weight decay ``W - B`` stays at its initial value (only the angle shrinks
        as the shared updates grow). Global-norm clipping sees only ``B`` here.
        ``None``: plain SGD, ``B <- B - 0.1 dW - 1e-3 B``. Other variants ignore it.

    Metrics: ``loss``; ``weight_alignment_deg`` (``[L]``): angle in degrees between
    ``W_l`` and ``B_l`` (NaN for stage 0, which has no ``B``).

    References:
      Lillicrap, Cownden, Tweed & Akerman (2016), "Random synaptic feedback weights
      support error backpropagation for deep learning", Nat. Commun. 7:13276.
      Liao, Leibo & Poggio (2016), "How important is weight symmetry in
      backpropagation?", AAAI (uSF, brSF, frSF).
      Moskovitz, Litwin-Kumar & Abbott (2018), "Feedback alignment in deep
      convolutional networks", arXiv:1812.06488.
      Xiao, Chen, Liao & Poggio (2018), "Biologically-plausible learning algorithms
      can scale to large datasets", arXiv:1811.03567 (scaled sign feedback).
      Akrout, Wilson, Humphreys, Lillicrap & Tweed (2019), "Deep learning without
      weight transport", NeurIPS (Kolen-Pollack).
      Sanfiz & Akrout (2021), "Benchmarking the accuracy and robustness of feedback
      alignment algorithms", arXiv:2108.13446 (biotorch).
    """
    o = _resolve(model, loss, feedback, init, init_std, scale, optimizer)

    def init_fn(key, params):
        return _init(o, key, params)

    def update_fn(params, state, batch, key):
        return _update(o, params, state, batch, key)

    return LearningRule(init_fn, update_fn)
