"""The training loop: data on the device, one compiled ``lax.scan`` per epoch.

The loop owns the randomness: the epoch's shuffle uses ``fold_in(key, epoch)`` and
each step's rule key is ``fold_in(key, global_step)``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bp_alternatives.data import Dataset
from bp_alternatives.diagnostics import global_norm, per_stage, with_alignment
from bp_alternatives.losses import Loss
from bp_alternatives.model import Model, Params, init_params, output
from bp_alternatives.rules._base import Batch, LearningRule
from bp_alternatives.writers import MetricWriter, NullWriter


class TrainState(NamedTuple):
    params: Params
    opt_state: optax.OptState
    rule_state: Any


def init_state(
    model: Model, rule: LearningRule, optimizer: optax.GradientTransformation, key
) -> TrainState:
    """Params from ``fold_in(key, 0)``, rule state from ``fold_in(key, 1)``."""
    params = init_params(model, jax.random.fold_in(key, 0))
    rule_state = rule.init(jax.random.fold_in(key, 1), params)
    return TrainState(params, optimizer.init(params), rule_state)


def make_train_step(rule: LearningRule, optimizer: optax.GradientTransformation):
    """One step: the rule computes a direction, the optimizer applies it."""

    def train_step(state: TrainState, batch: Batch, key) -> tuple[TrainState, dict]:
        direction, rule_state, metrics = rule.update(
            state.params, state.rule_state, batch, key
        )
        updates, opt_state = optimizer.update(direction, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        metrics["update_norm"] = per_stage(global_norm, direction)
        return TrainState(params, opt_state, rule_state), metrics

    return train_step


def make_epoch_fn(
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    num_train: int,
    batch_size: int,
) -> Callable:
    """``epoch_fn(state, x, y, key, epoch) -> (state, metrics)``: one shuffled epoch
    as a single ``lax.scan``; ``metrics`` are the means over the epoch's steps plus
    ``finite`` (whether every step's loss was finite). The last incomplete batch is
    dropped, so every step sees ``batch_size`` examples."""
    steps = num_train // batch_size
    train_step = make_train_step(rule, optimizer)

    def epoch_fn(state, x, y, key, epoch):
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_train)
        idx = perm[: steps * batch_size].reshape(steps, batch_size)
        step_key = jax.random.fold_in(key, 0x5EED)
        t0 = epoch * steps

        def body(state, inp):
            i, t = inp
            batch = Batch(jnp.take(x, i, axis=0), jnp.take(y, i, axis=0))
            return train_step(state, batch, jax.random.fold_in(step_key, t))

        state, metrics = jax.lax.scan(body, state, (idx, t0 + jnp.arange(steps)))
        finite = jnp.all(jnp.isfinite(metrics["loss"]))
        metrics = jax.tree_util.tree_map(lambda m: jnp.mean(m, axis=0), metrics)
        metrics["finite"] = finite
        return state, metrics

    return epoch_fn


def make_eval_fn(model: Model, loss: Loss, rule: LearningRule, chunk: int) -> Callable:
    """``eval_fn(params, rule_state, x, y) -> {loss, accuracy, accuracy/<mode>...}``.

    Evaluates in chunks of ``chunk`` examples (``lax.map``), padding the last one and
    masking the padding out, so large test sets never materialise at once.
    """

    def scores_fn(params, rule_state, x):
        if rule.predict is None:
            return {"": output(model, params, x)}
        return dict(rule.predict(params, rule_state, x))

    def eval_fn(params, rule_state, x, y):
        n = x.shape[0]
        c = min(chunk, n)
        nchunks = -(-n // c)
        pad = nchunks * c - n
        xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        yp = jnp.concatenate([y, jnp.zeros((pad, *y.shape[1:]), y.dtype)])
        mask = (jnp.arange(nchunks * c) < n).reshape(nchunks, c)

        def one(args):
            xc, yc, m = args
            out = output(model, params, xc)
            per_example = jax.vmap(lambda o, t: loss.value(o[None], t[None]))(out, yc)
            res = {"loss": jnp.sum(per_example * m)}
            for mode, s in scores_fn(params, rule_state, xc).items():
                correct = (jnp.argmax(s, axis=-1) == yc) * m
                res["accuracy" + (f"/{mode}" if mode else "")] = jnp.sum(correct)
            return res

        sums = jax.lax.map(
            one, (xp.reshape(nchunks, c, *x.shape[1:]), yp.reshape(nchunks, c), mask)
        )
        res = {k: jnp.sum(v) / n for k, v in sums.items()}
        modes = [k for k in res if k.startswith("accuracy/")]
        if "accuracy" not in res and modes:  # the first prediction mode is the headline
            res["accuracy"] = res[modes[0]]
        return res

    return eval_fn


def _to_python(tree):
    """Arrays -> floats / lists; NaN and inf -> None (valid JSON)."""

    def conv(v):
        v = np.asarray(v)
        if v.ndim == 0:
            f = float(v)
            return f if math.isfinite(f) else None
        return [conv(e) for e in v]

    return {k: conv(v) for k, v in tree.items()}


def _flat_scalars(entry: dict) -> dict[str, float]:
    """History entry -> ``/``-named scalars for a metric writer."""
    names = {
        "train_loss": "train/loss",
        "train_accuracy": "train/accuracy",
        "test_loss": "eval/loss",
        "test_accuracy": "eval/accuracy",
    }
    out = {}
    for k, v in entry.items():
        if v is None:
            continue
        if isinstance(v, list):
            for l, e in enumerate(v):
                if e is not None:
                    out[f"{k}/stage{l}"] = e
        else:
            out[names.get(k, k)] = v
    return out


class Progress:
    """An updating progress line on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def update(self, epoch: int, loss, acc, test_acc) -> None:
        width = 20
        done = int(width * epoch / max(self.total, 1))
        line = (
            f"epoch {epoch}/{self.total} loss {_fmt(loss)} "
            f"train_acc {_fmt(acc)} test_acc {_fmt(test_acc)}"
        )
        if self.tty:
            bar = "#" * done + "-" * (width - done)
            self.stream.write(f"\r[{bar}] {line}")
            if epoch == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt(v) -> str:
    return "nan" if v is None else f"{v:.4f}"


def fit(
    model: Model,
    loss: Loss,
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    probe_size: int = 256,
    eval_chunk: int = 4096,
    writer: MetricWriter | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` with ``rule`` + ``optimizer`` on ``data``; return the results.

    Returns a dict with ``history`` (one entry per epoch: train/test loss and accuracy,
    per-stage ``alignment_deg``, ``grad_norm``, ``update_norm`` measured on a fixed
    probe batch of the training set, and the rule's own metrics averaged over the
    epoch), ``final``, ``status`` (``ok`` or ``diverged``), ``diverged_epoch``,
    ``examples_per_second`` (epochs after the first; compilation excluded) and
    ``wall_seconds``.
    """
    start = time.perf_counter()
    writer = writer or NullWriter()
    n = len(data.x_train)
    if batch_size > n:
        raise ValueError(
            f"trainer.batch_size={batch_size} is larger than the {data.name} training "
            f"set ({n} examples)"
        )
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    probe = Batch(x_train[:probe_size], y_train[:probe_size])

    state = init_state(model, rule, optimizer, key)
    epoch_fn = jax.jit(make_epoch_fn(rule, optimizer, n, batch_size), donate_argnums=0)
    eval_fn = jax.jit(make_eval_fn(model, loss, rule, eval_chunk))
    probe_fn = jax.jit(with_alignment(rule, model, loss).update)
    probe_key = jax.random.fold_in(key, 2)
    train_key = jax.random.fold_in(key, 3)

    history: list[dict[str, Any]] = []
    status, diverged_epoch = "ok", None
    steady_time, steady_examples = 0.0, 0
    steps = n // batch_size
    bar = Progress(epochs) if progress else None
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        state, step_metrics = epoch_fn(state, x_train, y_train, train_key, epoch)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        if epoch > 1:
            steady_time += dt
            steady_examples += steps * batch_size
        _, _, probe_metrics = probe_fn(
            state.params, state.rule_state, probe, jax.random.fold_in(probe_key, epoch)
        )
        tr = eval_fn(state.params, state.rule_state, x_train, y_train)
        te = eval_fn(state.params, state.rule_state, x_test, y_test)
        entry: dict[str, Any] = {"epoch": epoch}
        for prefix, res in (("train", tr), ("test", te)):
            for k, v in res.items():
                entry[f"{prefix}_{k}"] = v
        entry["step_loss"] = step_metrics.pop("loss")
        finite = bool(step_metrics.pop("finite"))
        for k in ("alignment_deg", "grad_norm", "update_norm"):
            entry[k] = probe_metrics.pop(k)
        step_metrics.pop("update_norm")
        for k, v in step_metrics.items():
            entry[f"rule/{k}"] = v
        entry = _to_python(entry)
        entry["epoch"] = epoch
        entry["epoch_seconds"] = dt
        history.append(entry)
        writer.write_scalars(epoch, _flat_scalars(entry))
        if bar:
            bar.update(
                epoch,
                entry["train_loss"],
                entry["train_accuracy"],
                entry["test_accuracy"],
            )
        if not finite or entry["train_loss"] is None or entry["step_loss"] is None:
            status, diverged_epoch = "diverged", epoch
            if bar and bar.tty and epoch != epochs:
                bar.close()
            break

    last = history[-1]
    final = {
        k: last.get(k)
        for k in last
        if k.startswith(("train_", "test_")) and not k.startswith("train_step")
    }
    return {
        "final": final,
        "history": history,
        "status": status,
        "diverged_epoch": diverged_epoch,
        "examples_per_second": steady_examples / steady_time
        if steady_time > 0
        else None,
        "wall_seconds": time.perf_counter() - start,
        "steps_per_epoch": steps,
        "params": state.params,
        "rule_state": state.rule_state,
    }
