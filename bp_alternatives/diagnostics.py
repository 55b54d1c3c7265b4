"""Diagnostics that wrap any learning rule: how its direction aligns with the gradient.

``with_alignment(rule, model, loss)`` returns a rule whose ``update`` also reports, per
stage, the angle in degrees between the rule's direction and the exact backprop
gradient on the same batch, and both norms (the vanishing / exploding picture). The
trainer calls the wrapped update once per epoch on a fixed probe batch, so the extra
backward pass costs almost nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from bp_alternatives.losses import Loss
from bp_alternatives.model import Model, output

if TYPE_CHECKING:  # no runtime import: the rules import angle_deg from here
    from bp_alternatives.rules._base import LearningRule


def _flat(tree) -> jax.Array:
    return jnp.concatenate(
        [jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
    )


def angle_deg(u, v) -> jax.Array:
    """Angle in degrees between two pytrees as flat vectors (NaN if one is zero)."""
    u, v = _flat(u), _flat(v)
    nu, nv = jnp.linalg.norm(u), jnp.linalg.norm(v)
    cos = jnp.dot(u, v) / (nu * nv)
    cos = jnp.where((nu > 0) & (nv > 0), jnp.clip(cos, -1.0, 1.0), jnp.nan)
    return jnp.degrees(jnp.arccos(cos))


def global_norm(tree) -> jax.Array:
    return jnp.sqrt(
        sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))
    )


def per_stage(fn, *trees) -> jax.Array:
    """Apply ``fn`` to each stage's sub-tree (``trees[i][l]``); stack to ``[L]``."""
    return jnp.stack([fn(*(t[l] for t in trees)) for l in range(len(trees[0]))])


def with_alignment(rule: LearningRule, model: Model, loss: Loss) -> LearningRule:
    """Wrap ``rule`` so its metrics carry per-stage alignment with exact backprop.

    Adds ``alignment_deg`` (``[L]``, angle between the rule's direction and ``jax.grad``
    of the loss for each stage's params; the loss is ``rule.objective`` where the rule
    gives one, else the model's loss on its feed-forward output), ``grad_norm``
    (``[L]``, norm of the exact gradient) and ``update_norm`` (``[L]``, norm of the
    rule's direction). For exact backprop the angle is 0 degrees.

    References:
      Lillicrap et al. (2016), "Random synaptic feedback weights support error
      backpropagation for deep learning", Nat. Commun. 7:13276 (the alignment angle).
    """

    def objective(params, state, batch):
        if rule.objective is not None:  # e.g. the loss at EP's free fixed point
            return rule.objective(params, state, batch)
        return loss.value(output(model, params, batch.x), batch.y)

    def update_fn(params, state, batch, key):
        direction, new_state, metrics = rule.update(params, state, batch, key)
        grads = jax.grad(objective)(params, state, batch)
        metrics = dict(metrics)
        metrics["alignment_deg"] = per_stage(angle_deg, direction, grads)
        metrics["grad_norm"] = per_stage(global_norm, grads)
        metrics["update_norm"] = per_stage(global_norm, direction)
        return direction, new_state, metrics

    return rule._replace(update=update_fn)
