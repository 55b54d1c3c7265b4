"""Diagnostics that wrap any learning rule: how its direction aligns with the gradient.

``with_alignment(rule, model, loss)`` returns a rule whose ``update`` also reports, per
stage, the angle in degrees between the rule's direction and the exact backprop
gradient on the same batch, and both norms (the vanishing / exploding picture). The
trainer calls the wrapped update once per epoch on a fixed probe batch, so the extra
backward pass costs almost nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bp_alternatives.geometry import angle_deg, global_norm
from bp_alternatives.model import Model
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules import LearningRule, predictor


def per_stage(fn, *trees) -> jax.Array:
    """Apply ``fn`` to each stage's sub-tree (``trees[i][l]``); stack to ``[L]``."""
    return jnp.stack([fn(*(t[l] for t in trees)) for l in range(len(trees[0]))])


def with_alignment(rule: LearningRule, model: Model, loss: Loss) -> LearningRule:
    """Wrap ``rule`` so its metrics carry per-stage alignment with exact backprop.

    Adds ``alignment_deg`` (``[L]``, angle between the rule's direction and ``jax.grad``
    of the loss for each stage's params, 90 where either is zero, see
    ``bp_alternatives.geometry``; the loss on the rule's ``Prediction.output``: the
    model's feed-forward output unless the rule predicts otherwise), ``grad_norm``
    (``[L]``, norm of the exact gradient) and ``update_norm`` (``[L]``, norm of the
    rule's direction). For exact backprop the angle is 0 degrees.

    References:
      Lillicrap et al. (2016), "Random synaptic feedback weights support error
      backpropagation for deep learning", Nat. Commun. 7:13276 (the alignment angle).
    """

    predict = predictor(rule, model)

    def objective(params, state, batch):  # e.g. the loss at EP's free fixed point
        return loss.value(predict(params, state, batch.x).output, batch.y)

    def update_fn(params, state, batch, key):
        direction, new_state, metrics = rule.update(params, state, batch, key)
        grads = jax.grad(objective)(params, state, batch)
        metrics = dict(metrics)
        metrics["alignment_deg"] = per_stage(angle_deg, direction, grads)
        metrics["grad_norm"] = per_stage(global_norm, grads)
        metrics["update_norm"] = per_stage(global_norm, direction)
        return direction, new_state, metrics

    return rule._replace(update=update_fn)
