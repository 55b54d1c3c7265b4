"""Evaluation of a split in chunks: loss and accuracy of every prediction mode."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bp_alternatives.model import Model
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules import LearningRule, predictor


def make_eval_fn(model: Model, loss: Loss, rule: LearningRule, chunk: int) -> Callable:
    """``eval_fn(params, rule_state, x, y) -> {loss, accuracy, accuracy/<mode>...}``.

    Evaluates in chunks of ``chunk`` examples (``lax.map``), padding the last one and
    masking the padding out, so large test sets never materialise at once. When any
    output or score of the split is not finite every accuracy is NaN (null in
    results.json): ``argmax`` of a NaN row is 0, a class, not a prediction.
    """
    one_chunk = _chunk_sums(model, loss, rule)

    def eval_fn(params, rule_state, x, y):
        n = x.shape[0]
        c = min(chunk, n)
        nchunks = -(-n // c)
        pad = nchunks * c - n
        xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        yp = jnp.concatenate([y, jnp.zeros((pad, *y.shape[1:]), y.dtype)])
        mask = (jnp.arange(nchunks * c) < n).reshape(nchunks, c)
        sums = jax.lax.map(
            lambda args: one_chunk(params, rule_state, *args),
            (xp.reshape(nchunks, c, *x.shape[1:]), yp.reshape(nchunks, c), mask),
        )
        return _means(sums, n)

    return eval_fn


def _chunk_sums(model: Model, loss: Loss, rule: LearningRule) -> Callable:
    """``sums(params, rule_state, x, y, mask)``: one chunk's summed loss, correct
    predictions per mode and count of real examples with a non-finite output."""

    predict = predictor(rule, model)

    def sums(params, rule_state, xc, yc, m):
        c = xc.shape[0]
        pred = predict(params, rule_state, xc)
        out = pred.output if pred.loss_output is None else pred.loss_output
        per_example = jax.vmap(lambda o, t: loss.value(o[None], t[None]))(out, yc)
        res = {"loss": jnp.sum(per_example * m)}
        scores = {**pred.headline, **pred.others}
        res["nonfinite"] = sum(  # real examples with a non-finite output
            jnp.sum(~jnp.all(jnp.isfinite(o.reshape(c, -1)), axis=1) & m)
            for o in (out, *scores.values())
        )
        for mode, s in scores.items():
            correct = (jnp.argmax(s, axis=-1) == yc) * m
            res["accuracy" + (f"/{mode}" if mode else "")] = jnp.sum(correct)
        return res

    return sums


def _means(sums: dict, n: int) -> dict:
    """Chunk sums -> means over the ``n`` real examples; accuracies NaN when any
    output was not finite; ``accuracy`` is the first prediction mode's if unset."""
    finite = jnp.sum(sums.pop("nonfinite")) == 0
    res = {k: jnp.sum(v) / n for k, v in sums.items()}
    for k in res:
        if k.startswith("accuracy"):
            res[k] = jnp.where(finite, res[k], jnp.nan)
    modes = [k for k in res if k.startswith("accuracy/")]
    if "accuracy" not in res and modes:  # the first prediction mode is the headline
        res["accuracy"] = res[modes[0]]
    return res
