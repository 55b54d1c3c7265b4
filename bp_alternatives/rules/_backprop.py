"""Exact backpropagation: ``jax.grad`` of the loss through the whole stack."""

from __future__ import annotations

from typing import NamedTuple

import jax

from bp_alternatives.model import Model, forward
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules._base import LearningRule


class BackpropState(NamedTuple):
    """Exact backprop keeps no state."""


def bp(model: Model, loss: Loss, *, remat: bool = False) -> LearningRule:
    """Exact backpropagation: the direction is ``dL/dparams`` from ``jax.grad``.

    Args:
      model: the stack of stages.
      loss: the loss on the read-out output.
      remat: wrap every stage in ``jax.checkpoint`` (gradient checkpointing): stage
        activations are recomputed in the backward pass instead of stored, trading
        compute for memory. The direction is identical.

    References:
      Rumelhart, Hinton & Williams (1986), "Learning representations by
      back-propagating errors", Nature 323:533-536.
      Chen et al. (2016), "Training deep nets with sublinear memory cost" (remat).
    """

    def objective(params, batch):
        out, _ = forward(model, params, batch.x, remat=remat)
        return loss.value(out, batch.y)

    def init_fn(key, params):
        del key, params
        return BackpropState()

    def update_fn(params, state, batch, key):
        del key
        value, grads = jax.value_and_grad(objective)(params, batch)
        return grads, state, {"loss": value}

    return LearningRule(init_fn, update_fn)
