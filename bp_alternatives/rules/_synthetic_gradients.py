"""Synthetic gradients: decoupled neural interfaces (DNI) and conditioned DNI (cDNI).

After every decoupled hidden stage ``l`` (all of them by default, ``decouple``) a small
synthesizer ``M_l`` predicts the gradient of the loss with respect to the stage's output
``h_l`` from ``h_l`` alone (cDNI: from ``h_l`` and the one-hot label). Stage ``l``
updates at once from that prediction, through the vjp of stage ``l`` alone, so no true
gradient crosses a decoupled boundary (the stages are update-unlocked); across a coupled
boundary the cotangent from above passes on as in backprop. The read-out stage gets its
true gradient from the loss. The equations below are for ``decouple="all"``.

    forward      h_l = stage_l(params_l, h_{l-1})                       (h_{-1} = x)
    synthesize   delta_hat_l = M_l(h_l [, onehot y]) / B                 l < L-1
    update       direction_l = (d h_l / d params_l)^T delta_hat_l      (vjp of stage l)
                 direction_{L-1} = dL/d params_{L-1}                   (read-out: true)
    targets      t_{L-2} = (d h_{L-1} / d h_{L-2})^T dL/dh_{L-1}       (true, read-out)
                 t_l = (d h_{l+1} / d h_l)^T delta_hat_{l+1}            (bootstrapped)
    regression   L_M_l = mean_b || M_l(h_l) - stop_gradient(B t_l) ||^2

References:
  M. Jaderberg, W. M. Czarnecki, S. Osindero, O. Vinyals, A. Graves, D. Silver,
  K. Kavukcuoglu (2017), "Decoupled Neural Interfaces using Synthetic Gradients",
  ICML 2017 (sec. 3.1 and appendix: feed-forward networks, every layer decoupled).
  W. M. Czarnecki, G. Swirszcz, M. Jaderberg, S. Osindero, O. Vinyals,
  K. Kavukcuoglu (2017), "Understanding Synthetic Gradients and Decoupled Neural
  Interfaces", ICML 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bp_alternatives.geometry import angle_deg
from bp_alternatives.model import Model
from bp_alternatives.model.losses import Loss, as_targets
from bp_alternatives.rules._base import (
    LearningRule,
    Trainable,
    init_trainable,
    train_step,
)
from bp_alternatives.rules._synthetic_gradients_parts import (
    SGOptions,
    apply_synthesizer,
    init_synthesizer,
    resolve_options,
)


class SyntheticGradientsState(NamedTuple):
    """Synthesizers (trainable, owned by the rule) with their optimizer state, and the
    step count.

    ``trainable.params[l]`` is the synthesizer after hidden stage ``l``: a tuple of
    ``{"kernel", "bias"}`` dense layers (empty tuple for ``synthesizer="oracle"`` and
    for coupled boundaries).
    """

    trainable: Trainable  # params: tuple[SynthParams, ...]
    step: jax.Array  # int32 scalar: updates done so far (drives warm-up)


def _synth_input(o: SGOptions, h: jax.Array, y: jax.Array) -> jax.Array:
    """The synthesizer's input ``[B, D_l]``: ``h_l`` flattened (cDNI: and the label)."""
    z = h.reshape(h.shape[0], -1)  # [B, D_l]
    if o.conditioned:
        z = jnp.concatenate([z, as_targets(y, o.num_outputs, z.dtype)], axis=-1)
    return z


def _init(o: SGOptions, key: jax.Array, params) -> SyntheticGradientsState:
    """Zero-output synthesizers after the decoupled stages, their optimizer state."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    x = jax.ShapeDtypeStruct((1, *o.input_shape), dtype)

    def hidden_outputs(params, x):
        hs = []
        for f, p in zip(o.fns[:-1], params[:-1], strict=True):
            x = f(p, x)
            hs.append(x)
        return hs

    if o.oracle:  # nothing to learn
        theta = ((),) * o.n_hidden
    else:
        shapes = jax.eval_shape(hidden_outputs, params, x)
        theta = []
        for l, k in enumerate(jax.random.split(key, o.n_hidden)):
            if l not in o.decoupled:
                theta.append(())
                continue
            d = math.prod(shapes[l].shape[1:])
            d_in = d + (o.num_outputs if o.conditioned else 0)
            theta.append(
                init_synthesizer(
                    k,
                    d_in,
                    d,
                    o.synthesizer,
                    o.synth_hidden_layers,
                    o.synth_width,
                    dtype,
                )
            )
        theta = tuple(theta)
    return SyntheticGradientsState(
        init_trainable(o.opt, theta), jnp.zeros((), jnp.int32)
    )


def _exact_backprop(vjps, dL_dh_last, n_hidden: int):
    """True ``dL/dh_l`` and ``dL/dparams_l`` for every hidden stage.

    The chain of per-stage vjps, i.e. the vjp of the whole stack. Used only for
    the diagnostics, the warm-up and the oracle control.
    """
    deltas, grads = [None] * n_hidden, [None] * n_hidden
    delta = dL_dh_last
    for l in reversed(range(n_hidden)):
        deltas[l] = delta
        grads[l], delta = vjps[l](delta)
    return tuple(deltas), tuple(grads)


def _true_signals(o: SGOptions, params, hs, vjps, dL_dh_last, warm):
    """Exact ``(dL/dh_l, dL/dparams_l)`` when diagnostics, the oracle or the warm-up
    need them (zeros after warm-up when only the warm-up does), else ``(None, None)``.
    """
    if o.diagnostics or o.oracle:
        return _exact_backprop(vjps, dL_dh_last, o.n_hidden)
    if o.warmup_steps > 0:  # exact backprop only while warming up
        return jax.lax.cond(
            warm,
            lambda: _exact_backprop(vjps, dL_dh_last, o.n_hidden),
            lambda: (
                tuple(jnp.zeros_like(h) for h in hs),
                jax.tree_util.tree_map(jnp.zeros_like, tuple(params[:-1])),
            ),
        )
    return None, None


class _Pass(NamedTuple):
    """What one update's forward pass leaves for the synthesizers' objective."""

    y: jax.Array  # the batch's labels or targets
    value: jax.Array  # the loss, a scalar
    hs: list  # h_l of every hidden stage, [B, ...]
    vjps: list  # each stage's vjp w.r.t. (params_l, h_{l-1})
    dL_dh_last: jax.Array  # the read-out's true cotangent for h_{L-2}
    true_deltas: tuple | None  # exact dL/dh_l where needed (see _true_signals)
    warm: jax.Array  # traced bool scalar: still warming up


def _synth_objective(o: SGOptions, theta, fw: _Pass):
    """Summed regression loss of the synthesizers ``theta`` and, as aux, the per-
    boundary losses ``[D]``, the signals each hidden stage trains on and its
    directions.
    """
    B = fw.hs[0].shape[0]
    hs, y, vjps, true_deltas = fw.hs, fw.y, fw.vjps, fw.true_deltas
    # Top-down through the hidden stages: ``arriving`` is the cotangent that
    # stage l+1 sends to h_l (the read-out's true one for the last hidden
    # stage). A decoupled boundary replaces it by delta_hat_l and makes it
    # M_l's bootstrapped target (Jaderberg et al. 2017, sec. 3.1 / fig. 2); a
    # coupled one passes it on unchanged (backprop across the boundary).
    directions, used = [None] * o.n_hidden, [None] * o.n_hidden
    m, targets = {}, {}
    arriving = fw.dL_dh_last
    for l in reversed(range(o.n_hidden)):
        if l in o.decoupled:
            targets[l] = arriving
            if o.oracle:
                m[l] = B * true_deltas[l]
            else:
                m[l] = apply_synthesizer(theta[l], _synth_input(o, hs[l], y)).reshape(
                    hs[l].shape
                )
            used[l] = m[l] / B
        else:
            used[l] = arriving
        directions[l], arriving = vjps[l](used[l])
    if o.warmup_steps > 0:
        targets = {l: jnp.where(fw.warm, true_deltas[l], t) for l, t in targets.items()}
    # The target is a constant for the synthesizer: without stop_gradient the
    # regression would also move M_{l+1} (through delta_hat_{l+1}) toward
    # M_l's prediction (a known bug in public implementations).
    losses = [
        jnp.mean(
            jnp.sum(
                jnp.square(m[l] - B * jax.lax.stop_gradient(targets[l])).reshape(B, -1),
                axis=-1,
            )
        )
        for l in o.decoupled
    ]
    losses = jnp.stack(losses) if losses else jnp.zeros((0,), fw.value.dtype)
    return jnp.sum(losses), (losses, tuple(used), tuple(directions))


def _update(o: SGOptions, params, state: SyntheticGradientsState, batch):
    """One step: the direction for every stage, the new state, the metrics."""
    x, y = batch
    warm = state.step < o.warmup_steps  # traced bool scalar

    # Forward, keeping each stage's vjp (w.r.t. its params and its input).
    hs, vjps = [], []
    for f, p in zip(o.fns, params, strict=True):
        x, vjp = jax.vjp(f, p, x)
        hs.append(x)
        vjps.append(vjp)
    value, loss_vjp = jax.vjp(lambda out: o.loss.value(out, y), x)
    (dL_dout,) = loss_vjp(jnp.ones_like(value))
    g_readout, dL_dh_last = vjps[-1](dL_dout)  # read-out: its true gradient
    hs = hs[:-1]
    true_deltas, true_grads = _true_signals(o, params, hs, vjps, dL_dh_last, warm)

    fw = _Pass(y, value, hs, vjps, dL_dh_last, true_deltas, warm)

    def objective(theta):
        return _synth_objective(o, theta, fw)

    trainable = state.trainable
    if o.oracle:
        _, (synth_losses, delta_hat, directions) = objective(trainable.params)
    else:
        (_, (synth_losses, delta_hat, directions)), g_theta = jax.value_and_grad(
            objective, has_aux=True
        )(trainable.params)
        trainable = train_step(o.opt, trainable, g_theta)

    if o.warmup_steps > 0:  # exact backprop while warming up (jit-able switch)
        directions = jax.tree_util.tree_map(
            lambda g_true, g: jnp.where(warm, g_true, g), true_grads, directions
        )
    direction = (*directions, g_readout)

    metrics = {"loss": value, "warmup": warm.astype(value.dtype)}
    if o.decoupled:
        metrics["synth_loss"] = synth_losses
    if o.diagnostics or o.oracle:
        metrics["synth_angle_deg"] = jnp.stack(
            [angle_deg(d, t) for d, t in zip(delta_hat, true_deltas, strict=True)]
        ).astype(value.dtype)
    return tuple(direction), SyntheticGradientsState(trainable, state.step + 1), metrics


def sg(
    model: Model,
    loss: Loss,
    *,
    synthesizer: str = "mlp",
    conditioned: bool = False,
    synth_hidden_layers: int = 1,
    synth_width: int = 256,
    optimizer: optax.GradientTransformation | None = None,
    warmup_steps: int = 0,
    diagnostics: bool = True,
    decouple: str | Sequence[int] = "all",
    boundary: str = "output",
) -> LearningRule:
    """Synthetic gradients after every hidden stage (DNI; ``conditioned=True``: cDNI).

    The defaults here are the published method as the paper and the public DNI code
    state it: DNI (no label), an MLP synthesizer with one hidden layer, every
    boundary cut after the stage's output. The command line's ``rule=sg``
    (``configs/rule/sg.yaml``) instead defaults to cDNI with a linear synthesizer,
    the choice measured best on the shared network of the comparison table (no
    normalisation); its comment gives the numbers. Calling ``sg`` from Python gets the
    method, ``rule=sg`` the comparison's tuned variant.

    Args:
      model: the stack of stages; it needs at least one hidden stage.
      loss: the loss on the read-out output (a mean over the batch).
      synthesizer: ``"linear"``, ``"mlp"`` (``synth_hidden_layers`` ReLU layers of
        ``synth_width`` units; the paper uses 1-2 layers of 1024), or ``"oracle"``: a
        control whose "prediction" is the true ``dL/dh_l`` (computed by exact backprop;
        the direction then equals ``bp``'s). The final layer is zero-initialised.
      conditioned: feed the one-hot label (or the float targets) to the synthesizers
        besides ``h_l`` (cDNI).
      synth_hidden_layers, synth_width: the ``mlp`` synthesizer's shape.
      optimizer: the optimizer that trains the synthesizers (``configs/rule/sg.yaml``:
        ``rule.optimizer``, the run's optimizer family and learning rate at a
        constant rate). ``None``: Adam, learning rate 1e-3.
      warmup_steps: for the first ``warmup_steps`` updates the direction is the exact
        gradient and the synthesizers regress onto the true ``dL/dh_l``; afterwards
        the network trains on synthetic gradients and the targets are bootstrapped.
      diagnostics: also run exact backprop every step (its result never enters the
        direction or the synthesizers' targets after warm-up) to report
        ``synth_angle_deg``. Turn off for speed measurements.
      decouple: ``"all"`` or a list of hidden-stage indices ``l`` (0-based, ``0 <= l
        < L-1``) whose output boundary is decoupled: a synthesizer sits after each
        listed stage. Across the other boundaries the cotangent from above passes
        unchanged (backprop), so ``[]`` is exact backprop and, e.g., ``[1]`` on two
        hidden stages is the public DNI example's set-up (koz4k/dni-pytorch,
        examples/mnist-mlp: one synthesizer after the second hidden stage).
      boundary: where a decoupled boundary cuts stage ``l``: ``"output"``, after it
        (the synthesizer sees ``h_l`` and predicts ``dL/dh_l``), or
        ``"preactivation"``, before its activation (it sees ``a_l = norm(linear(x))``
        and predicts ``dL/da_l``; the public DNI example's placement: after
        BatchNorm, before ReLU). Below, ``h_l`` stands for whichever is cut.

    Metrics: ``loss``; ``synth_loss`` (``[D]``, one per decoupled boundary in
    ascending stage order: the synthesizer's regression loss before its update, in
    per-example units, see below; absent when ``D = 0``); ``synth_angle_deg``
    (``[L-1]``, angle between the signal stage ``l`` trains on -- ``delta_hat_l``, or
    what crossed a coupled boundary -- and the true ``dL/dh_l`` over the batch; 90
    when that signal is zero); ``warmup`` (1 while training with exact backprop).

    The synthesizer predicts the *per-example* gradient ``B dL/dh_l`` (for a loss
    averaged over the batch, the gradient of the example's own loss), and
    ``delta_hat_l = M_l(h_l) / B``; the regression target is scaled by ``B`` to match.
    The paper does not say; this keeps the synthesizers independent of the batch size
    and their targets of order one.

    A stage's normalisation (``model.norm``) is part of the stage: its synthetic
    gradient reaches the weights through the norm's vjp (BatchNorm: with the batch's
    statistics, as training runs), and ``boundary="preactivation"`` cuts after it.

    With zero-initialised synthesizers the bootstrapped signal reaches hidden stage
    ``l`` only after ``L-1-l`` steps (each synthesizer's target comes from the one
    above it), so lower stages start moving a few steps late.

    References:
      Jaderberg et al. (2017), "Decoupled Neural Interfaces using Synthetic
      Gradients", ICML 2017 (sec. 3.1 and the appendix).
      Czarnecki et al. (2017), "Understanding Synthetic Gradients and Decoupled
      Neural Interfaces", ICML 2017.
    """
    o = resolve_options(
        model,
        loss,
        synthesizer=synthesizer,
        conditioned=conditioned,
        synth_hidden_layers=synth_hidden_layers,
        synth_width=synth_width,
        optimizer=optimizer,
        warmup_steps=warmup_steps,
        diagnostics=diagnostics,
        decouple=decouple,
        boundary=boundary,
    )

    def init_fn(key, params):
        return _init(o, key, params)

    def update_fn(params, state, batch, key):
        del key
        return _update(o, params, state, batch)

    return LearningRule(init_fn, update_fn)


__all__ = ["SyntheticGradientsState", "sg"]
