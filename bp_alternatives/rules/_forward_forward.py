"""Forward-forward (Hinton 2022): every stage trained on its own goodness objective.

Supervised FF (section 3.3 of the paper), written on the shared stack of stages::

    x+ = embed(x, y)      x- = embed(x, y~),  y~ ~ U(labels != y)   (or the hardest)
    z_{-1} = n(x)         n(v) = v / (||v|| + eps)     (all non-batch axes)
    h_l = f(linear_l(sg(z_{l-1})))     z_l = n(post(h_l))     sg = stop-gradient
    G_l = sum h_l^2       (option: mean)
    L_l = mean_B[ softplus(theta - G_l(x+)) + softplus(G_l(x-) - theta) ]
          (+ lambda * peer_l)
    direction_l = dL_l / dparams_l

Because every stage's input passes through ``sg``, ``dL_l/dparams_j = 0`` for
``j != l``: the gradient of ``sum_l L_l`` *is* the set of per-stage local gradients,
and one ``jax.grad`` gives them all.

How FF sits on the shared model
-------------------------------
* The FF network is the model's *hidden* stages (all but the last). The model's last
  stage (its read-out) is not part of it: the paper's net has no output layer, and
  FF's softmax read-out reads several stages at once (stages 2..N), so its input width
  is not the model read-out's. The read-out therefore lives in the rule state (kernel
  ``V`` ``[D_r, C]``, zero-initialised and bias-free as in loeweX: ``trainable``) and
  is trained inside ``update`` by the rule's ``optimizer`` (loeweX's SGD by default).
  The model read-out stage's direction is zero, so it stays at its initial value; the
  trainer's ``train_loss`` / ``test_loss`` are therefore taken on the rule's read-out
  logits (``Prediction.loss_output``, neutral label), not the unused model
  read-out: the cross-entropy of the prediction ``test_accuracy/readout`` reports.
* Any stage whose output is an array works (dense or convolutional): goodness sums (or
  averages) over all non-batch axes, normalisation divides by the norm over all
  non-batch axes, peer normalisation keeps one running mean per unit (per feature-map
  element for a conv stage) and the read-out flattens each stage's normalised output.
  The label is written over the first ``C`` entries of the *flattened* input (for an
  NHWC image: the first pixels' channels).

References:
  G. Hinton (2022), "The Forward-Forward Algorithm: Some Preliminary Investigations",
  arXiv:2212.13345, section 3.3 (supervised FF on MNIST).
  Hinton's official code (Matlab; read through a Python port): threshold = number
  of units, RMS normalisation, peer normalisation 0.03 with a gradient "even when
  hidden units are off", softmax read-out from the second hidden layer, hard
  negatives sampled from that read-out.
  S. Loewe, github.com/loeweX/Forward-Forward: the same recipe in PyTorch (threshold =
  number of units, RMS normalisation, peer normalisation, zero-init bias-free softmax
  read-out on stages 2..N with a neutral label, ReLU with a pass-through gradient).
  M. Pezeshki, github.com/mohammadpz/pytorch_forward_forward: threshold 2.0 on the
  mean goodness, L2 normalisation, label written with the batch's ``x.max()``, one
  layer trained at a time (its negatives permute the labels: ~1/C are positives).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bp_alternatives.model import Model, output
from bp_alternatives.model.losses import Loss
from bp_alternatives.optim import make_optimizer
from bp_alternatives.rules._base import (
    LearningRule,
    Prediction,
    Trainable,
    init_trainable,
    train_step,
)
from bp_alternatives.rules._forward_forward_parts import (
    FFOptions,
    check_index,
    check_model,
    check_options,
    embed_label,
    ff_forward,
    goodness_of,
    goodness_table,
    hardest_wrong_labels,
    label_scale_of,
    range_mode,
    readout_features,
    sample_readout_wrong_labels,
    sample_wrong_labels,
    stage_ranges,
    stage_theta,
    thresholds_of,
)

_sg = jax.lax.stop_gradient


def default_readout_optimizer() -> optax.GradientTransformation:
    """loeweX's read-out optimizer: SGD lr 1e-2, momentum 0.9, weight decay 3e-3."""
    return make_optimizer("sgd", 1e-2, total_steps=1, momentum=0.9, weight_decay=3e-3)


class FFState(NamedTuple):
    """Forward-forward's own state: the read-out and the peer-normalisation means."""

    # V [D_r, C]: softmax read-out on normalised stage outputs, with its optimizer state
    trainable: Trainable
    running_mean: tuple[jax.Array, ...]  # per FF stage, mean positive activity [...]
    step: jax.Array  # int32, updates so far (drives schedule="layerwise")


def _stage_steps(schedule, steps_per_stage, epochs_per_stage, steps_per_epoch):
    """``steps_per_stage``, from ``epochs_per_stage * steps_per_epoch`` where the
    stages are given in epochs; ValueError names the options."""
    if epochs_per_stage is None:
        return steps_per_stage
    if steps_per_stage is not None:
        raise ValueError("give rule.epochs_per_stage or rule.steps_per_stage, not both")
    if schedule != "layerwise":
        raise ValueError(
            "rule.epochs_per_stage is for rule.schedule=layerwise, got "
            f"rule.schedule={schedule!r}"
        )
    if not steps_per_epoch:
        raise ValueError("rule.epochs_per_stage needs the run's steps_per_epoch")
    return int(epochs_per_stage) * int(steps_per_epoch)


def _objective(o: FFOptions, params, x_pos, x_neg, running_mean, active):
    """The summed goodness (and peer) losses of the active stages; aux: the metrics
    and the new running means."""
    b = x_pos.shape[0]
    hs, _ = ff_forward(o, params, jnp.concatenate([x_pos, x_neg]))
    total = jnp.zeros((), x_pos.dtype)
    aux = {k: [] for k in ("ff_loss", "peer_loss", "goodness_pos", "goodness_neg")}
    aux["ff_accuracy"], new_mean = [], []
    for l, h in enumerate(hs):
        g = goodness_of(h, o.goodness)
        g_pos, g_neg, t = g[:b], g[b:], stage_theta(o, l, h)
        ff_l = jnp.mean(jax.nn.softplus(t - g_pos) + jax.nn.softplus(g_neg - t))
        # loeweX: running mean of each unit's activity on positive data only.
        r = _sg(running_mean[l]) * o.peer_momentum + jnp.mean(h[:b], axis=0) * (
            1.0 - o.peer_momentum
        )
        peer_l = jnp.mean(jnp.square(jnp.mean(r) - r))
        total = total + active[l] * (ff_l + o.peer_weight * peer_l)
        new_mean.append(_sg(r))
        aux["ff_loss"].append(ff_l)
        aux["peer_loss"].append(peer_l)
        aux["goodness_pos"].append(jnp.mean(g_pos))
        aux["goodness_neg"].append(jnp.mean(g_neg))
        aux["ff_accuracy"].append(
            0.5 * (jnp.mean(g_pos > t) + jnp.mean(g_neg < t)).astype(x_pos.dtype)
        )
    # not stop-gradient: a test differentiates these to prove locality
    metrics = {k: jnp.stack(v) for k, v in aux.items()}
    return total, (metrics, tuple(new_mean))


def _init(o: FFOptions, params) -> FFState:
    """The zero read-out and running means of 0.5."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    x = jnp.zeros((1, *o.model.input_shape), dtype)
    hs, zs = jax.eval_shape(lambda p, x: ff_forward(o, p, x), params, x)
    d_r = sum(math.prod(z.shape[1:]) for z in zs[o.readout_from :])
    readout = jnp.zeros((d_r, o.model.num_outputs), dtype)  # loeweX: zero-init
    return FFState(
        trainable=init_trainable(o.readout_opt, readout),
        running_mean=tuple(jnp.full(h.shape[1:], 0.5, h.dtype) for h in hs),
        step=jnp.zeros((), jnp.int32),
    )


def _wrong_labels(o: FFOptions, params, state: FFState, x, y, scale, feats, key):
    """The negatives' labels ``[B]`` (``rule.negatives``)."""
    if o.negatives == "random":
        return sample_wrong_labels(key, y, o.model.num_outputs)
    if o.negatives == "hard":  # the most-confused wrong label (Hinton 2022, 3.3)
        # (auto: goodness_from is 0, all stages)
        g = _sg(goodness_table(o, params, x, scale))
        return hardest_wrong_labels(jnp.sum(g[..., o.goodness_from :], -1), y)
    # Hinton's code: sample in proportion to the read-out's softmax
    return sample_readout_wrong_labels(key, feats @ state.trainable.params, y)


def _update(o: FFOptions, params, state: FFState, batch, key):
    """Each active FF stage's goodness gradient, a read-out step, the metrics."""
    x, y = batch.x, batch.y
    if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(
            f"rule=ff needs integer class labels [B], got y {y.dtype}{list(y.shape)}"
        )
    C, n = o.model.num_outputs, o.model.num_stages - 1
    scale = label_scale_of(x, o.label_scale)
    x_pos = embed_label(x, jax.nn.one_hot(y, C, dtype=x.dtype), scale)
    feats = readout_features(o, params, x, scale)  # neutral label, [B, D_r]
    y_neg = _wrong_labels(o, params, state, x, y, scale, feats, key)
    x_neg = embed_label(x, jax.nn.one_hot(y_neg, C, dtype=x.dtype), scale)
    if o.schedule == "all":
        active = jnp.ones((n,), x.dtype)
    else:
        current = jnp.minimum(state.step // int(o.steps_per_stage), n - 1)
        active = (jnp.arange(n) == current).astype(x.dtype)

    grads, (metrics, running_mean) = jax.grad(
        lambda p: _objective(o, p, x_pos, x_neg, state.running_mean, active),
        has_aux=True,
    )(params)
    # grads[-1] (the model's read-out stage) is zeros: the objective never reads it.

    def readout_loss(v):
        logits = feats @ v
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    ro_loss, ro_grad = jax.value_and_grad(readout_loss)(state.trainable.params)
    new_state = FFState(
        trainable=train_step(o.readout_opt, state.trainable, ro_grad),
        running_mean=running_mean,
        step=state.step + 1,
    )
    metrics = dict(metrics, loss=ro_loss, stage_active=active)
    return grads, new_state, metrics


def _predict(o: FFOptions, params, state: FFState, x) -> Prediction:
    """Goodness per stage range and label, and the read-out (see ``ff``)."""
    scale = label_scale_of(x, o.label_scale)
    g = goodness_table(o, params, x, scale)  # [B, C, N]
    by_range = {
        range_mode(a, b): jnp.sum(g[..., a : b + 1], axis=-1) for a, b in o.ranges
    }
    logits = readout_features(o, params, x, scale) @ state.trainable.params
    if o.auto:  # every range a candidate for the headline
        headline, others = by_range, {}
    else:
        headline = {"goodness": jnp.sum(g[..., o.goodness_from :], axis=-1)}
        others = by_range
    return Prediction(
        output=output(o.model, params, x),
        headline=headline,
        others={**others, "readout": logits},
        loss_output=logits,  # the read-out's logits (neutral label)
    )


def ff(
    model: Model,
    loss: Loss,
    *,
    goodness: str = "sum",
    threshold: float | str | Sequence[float] = 2.0,
    normalise: str = "l2",
    eps: float = 1e-8,
    label_scale: float | str = "max",
    negatives: str = "random",
    schedule: str = "all",
    steps_per_stage: int | None = None,
    epochs_per_stage: int | None = None,
    steps_per_epoch: int | None = None,
    peer_weight: float = 0.0,
    peer_momentum: float = 0.9,
    goodness_from: int | str = "auto",
    readout_from: int = 1,
    optimizer: optax.GradientTransformation | None = None,
    straight_through: bool = False,
) -> LearningRule:
    """Forward-forward: each hidden stage trained on its own goodness objective.

    Args:
      model: the stack; its hidden stages (all but the last) are the FF network, the
        last stage gets a zero direction (see the module docstring).
      loss: unused -- FF's objectives are its goodness losses and its read-out is a
        softmax classifier (cross-entropy) whatever ``loss`` is configured.
      goodness: ``sum`` (the paper) or ``mean`` of the squared activities.
      threshold: theta. A number for every stage (default 2.0: the value of
        mohammadpz/pytorch_forward_forward, which applies it to the *mean* goodness;
        here it is applied to the sum: with L2-normalised stage inputs and Glorot
        init the summed goodness starts near 1 at any width, so 2.0 sits just above
        it -- ``goodness=mean`` gives his exact objective), ``"width"`` (theta_l =
        number of units of stage l: Hinton's official code and loeweX, meant for
        ``sum`` goodness with ``rms`` normalisation), or one value per FF stage.
      normalise: ``l2`` (``x / (||x|| + eps)``, the paper) or ``rms`` (loeweX).
      eps: the normalisation's epsilon.
      label_scale: value of the "on" entry of the embedded one-hot: ``"max"`` (each
        example's own ``max |x|``; 1 on [0, 1] images, as in the paper) or a number.
      negatives: ``random`` (a wrong label drawn uniformly:
        ``sample_wrong_labels(key, y, C)`` with the step's key), ``hard`` (the wrong
        label with the highest goodness under the current params: the model's
        most-confused label, as the paper suggests; costs ``C`` forward passes per
        step; the goodness summed over stages ``goodness_from..N-1``, over all
        stages with ``"auto"``) or ``sampled`` (a wrong label sampled in proportion
        to the softmax read-out's probabilities, as Hinton's official code does;
        free, but uniform until the read-out has learned).
      schedule: ``all`` (every FF stage updated on every batch) or ``layerwise`` (only
        stage ``min(t // steps_per_stage, N-1)`` at step ``t``; the last stage keeps
        training after its turn). The rule sees steps, not epochs: for ``E`` epochs a
        stage set ``steps_per_stage = E * (n_train // batch_size)``. Inactive stages get
        an exactly-zero direction; with momentum / Adam / weight decay the optimizer
        still moves them a little (use plain SGD for strict freezing).
      steps_per_stage: required with ``schedule="layerwise"``.
      epochs_per_stage, steps_per_epoch: ``steps_per_stage`` given in epochs instead
        (``epochs_per_stage * steps_per_epoch``; not both).
      peer_weight: weight lambda of loeweX's peer-normalisation loss
        ``mean_j (mean(r) - r_j)^2`` on a running mean ``r`` (momentum
        ``peer_momentum``, initial 0.5) of each unit's mean positive activity.
      peer_momentum: momentum of that running mean.
      goodness_from: which stages' goodness is summed for the headline prediction.
        ``"auto"``: every range of stages ``a..b`` is a prediction mode and the
        trainer takes the one with the best validation accuracy (training accuracy
        without a validation split) as the headline, at every evaluation
        (``Prediction.headline``). A number ``k``: stages ``k..N-1`` (1: skip
        the first, as in the paper), mode ``goodness``, no choice. A stage can
        predict below chance: it is trained to put one positive above theta and one
        random negative below it, not to rank the true label above all ``C - 1``
        others, and where its wrong labels' goodness spreads more than the true
        label's, the best wrong label tops the true one (the default tanh model's
        second stage on digits orders 68% of label pairs right and predicts 2.8%;
        docs/results.md, ``scripts/ff_label_ranks.py``).
      readout_from: first FF stage the ``readout`` classifier reads (1: stages 2..N).
      optimizer: the read-out's optimizer (``configs/rule/ff.yaml``:
        ``rule.optimizer``). ``None``: loeweX's SGD lr 1e-2, momentum 0.9, weight
        decay 3e-3.
      straight_through: take ``dh/da = 1`` through the activation (loeweX's
        ``ReLU_full_grad``). For the goodness term this changes nothing (``h = 0``
        wherever ``relu' = 0``, so ``d(h^2)/da = 2 h`` either way); it lets the
        peer-normalisation term revive units that are always off, as in Hinton's
        code ("we pretend there is a gradient even when hidden units are off").

    Returns a ``LearningRule`` whose ``predict`` gives, per example and label, the
    goodness summed over stage ranges -- ``goodness_stage<l>`` (stage ``l`` alone)
    for every FF stage and, with ``goodness_from="auto"``, ``goodness_stages<a>-<b>``
    for every longer range ``a..b`` (the headline candidates, the paper's ``1..N-1``
    first); with a number ``k``, ``goodness`` (stages ``k..N-1``, the headline) --
    and ``readout`` (softmax read-out with the neutral label ``1/C``, also the
    loss output). Its ``output`` (the alignment reference) is the model's
    feed-forward output.
    Metrics per step: ``loss`` (read-out cross-entropy), and per FF stage ``[N]``
    (index ``l`` is model stage ``l``): ``ff_loss``, ``peer_loss``, ``goodness_pos``,
    ``goodness_neg`` (batch means), ``ff_accuracy`` (fraction of positives above and
    negatives below theta) and ``stage_active``.

    References:
      G. Hinton (2022), "The Forward-Forward Algorithm: Some Preliminary
      Investigations", arXiv:2212.13345, section 3.3.
      S. Loewe, github.com/loeweX/Forward-Forward (peer normalisation, read-out).
      M. Pezeshki, github.com/mohammadpz/pytorch_forward_forward (theta = 2.0).
    """
    if loss.name != "cross_entropy":
        raise ValueError(
            f"rule=ff with loss={loss.name}: forward-forward predicts by goodness and "
            "its read-out is a softmax classifier; use loss=cross_entropy"
        )
    steps_per_stage = _stage_steps(
        schedule, steps_per_stage, epochs_per_stage, steps_per_epoch
    )
    n = model.num_stages - 1
    check_model(model)
    check_options(
        goodness, normalise, negatives, schedule, label_scale, steps_per_stage
    )
    auto = goodness_from == "auto"
    o = FFOptions(
        model=model,
        goodness=goodness,
        thresholds=thresholds_of(threshold, n),
        normalise=normalise,
        eps=eps,
        label_scale=label_scale,
        negatives=negatives,
        schedule=schedule,
        steps_per_stage=steps_per_stage,
        peer_weight=peer_weight,
        peer_momentum=peer_momentum,
        auto=auto,
        goodness_from=0 if auto else check_index("goodness_from", goodness_from, n),
        ranges=stage_ranges(n) if auto else [(l, l) for l in range(n)],
        readout_from=check_index("readout_from", readout_from, n),
        readout_opt=default_readout_optimizer() if optimizer is None else optimizer,
        straight_through=straight_through,
    )

    def init_fn(key, params):
        del key
        return _init(o, params)

    def update_fn(params, state, batch, key):
        return _update(o, params, state, batch, key)

    def predict_fn(params, state, x):
        return _predict(o, params, state, x)

    return LearningRule(init_fn, update_fn, predict=predict_fn)
