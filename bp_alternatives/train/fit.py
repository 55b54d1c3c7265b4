"""Training over seeds: data on the device, one compiled program per epoch, the
per-epoch evaluation and probe, checkpoints (what is recorded, and each seed's results:
:mod:`bp_alternatives.train.record`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bp_alternatives.data import Dataset
from bp_alternatives.diagnostics import with_alignment
from bp_alternatives.model import Model, inference_params
from bp_alternatives.model.losses import Loss
from bp_alternatives.progress import Progress
from bp_alternatives.rules import Batch, LearningRule, headline_candidates
from bp_alternatives.train.checkpoint import Checkpointer
from bp_alternatives.train.evaluate import make_eval_fn
from bp_alternatives.train.record import (
    CompileClock,
    Record,
    Recorder,
    checkpoint_meta,
    record_epoch,
    resume,
    seed_results,
    timed,
)
from bp_alternatives.train.sharding import (
    data_mesh,
    replicate,
    replicate_tree,
    seed_axis,
)
from bp_alternatives.train.step import init_state, make_epoch_fn
from bp_alternatives.writers import MetricWriter, NullWriter


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
    **kwargs,
) -> dict[str, Any]:
    """Train ``model`` with ``rule`` + ``optimizer`` on ``data``; return the results.

    Returns a dict with ``history`` (one entry per epoch: train/test loss and accuracy,
    per-stage ``alignment_deg``, ``grad_norm``, ``update_norm`` measured on a fixed
    probe batch of the training set, and the rule's own metrics averaged over the
    epoch as ``rule/<name>``; ``prediction_mode`` when the rule chooses its headline
    among ``Prediction.headline``), ``final``, ``prediction`` (that choice at the last
    epoch: ``mode``, ``chosen_on``, ``candidates``; ``None`` for a rule with one
    headline), ``status`` (``ok`` or ``diverged``),
    ``diverged_epoch``, ``examples_per_second`` (epochs after the first; compilation
    excluded), ``wall_seconds`` and ``time_split`` (``compile_seconds``,
    ``train_seconds``, ``eval_seconds`` -- probe included --, ``other_seconds``).
    Keyword arguments as in :func:`fit_seeds`.
    """
    return _fit(
        model, loss, rule, optimizer, data, epochs, batch_size, [key], False, **kwargs
    )[0]


def fit_seeds(
    model: Model,
    loss: Loss,
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    keys: Sequence[jax.Array],
    batched: bool = True,
    **kwargs,
) -> list[dict[str, Any]]:
    """Train one model per key in a single compiled program (``vmap`` over seeds;
    a ``lax.map`` for PRNG implementations other than threefry:
    :func:`bp_alternatives.train.sharding.seed_axis`).

    Returns one results dict per key, equal (to float rounding) to separate
    :func:`fit` runs, whatever other keys share the program. Options:
    ``probe_size`` (examples in the alignment probe), ``eval_chunk`` (evaluation
    batch), ``train_eval_size`` (train metrics on a fixed random subset of this
    many training examples; ``None``: all), ``writers`` (one ``MetricWriter`` per
    key), ``progress``,
    ``data_parallel`` (shard each batch over ``jax.devices()`` with a ``Mesh`` +
    ``NamedSharding``; params replicated, so XLA all-reduces the gradients),
    ``checkpoint_dir`` / ``checkpoint_every`` (resume from the last checkpoint in
    ``checkpoint_dir`` if there is one), ``checkpoint_tag`` (a checkpoint written
    under another tag is refused: :class:`Checkpointer`), ``lr_schedule`` (step ->
    rate, recorded as each epoch's ``lr``), ``prepare_state`` (initial state -> the
    state to train from, applied before a checkpoint is resumed).
    """
    return _fit(
        model,
        loss,
        rule,
        optimizer,
        data,
        epochs,
        batch_size,
        list(keys),
        batched,
        **kwargs,
    )


class _Arrays(NamedTuple):
    """The dataset's splits on the device(s); ``val`` is ``None`` without one."""

    train: tuple[jax.Array, jax.Array]
    test: tuple[jax.Array, jax.Array]
    val: tuple[jax.Array, jax.Array] | None
    probe: Batch
    train_eval: tuple[jax.Array, jax.Array]  # where train metrics are measured


def _place(
    data: Dataset, put: Callable, probe_size: int, train_eval_size: int | None
) -> _Arrays:
    """The splits on the device; ``train_eval``: the training set, or a fixed
    random subset of ``train_eval_size`` of it (the same every epoch)."""
    x_train, y_train = put(data.x_train), put(data.y_train)
    val = None
    if getattr(data, "x_val", None) is not None and len(data.x_val):
        val = (put(data.x_val), put(data.y_val))
    probe = Batch(x_train[:probe_size], y_train[:probe_size])
    train_eval = (x_train, y_train)
    n = len(data.x_train)
    if train_eval_size is not None and train_eval_size < n:
        idx = np.random.default_rng(0).choice(n, train_eval_size, replace=False)
        train_eval = (x_train[np.sort(idx)], y_train[np.sort(idx)])
    test = (put(data.x_test), put(data.y_test))
    return _Arrays((x_train, y_train), test, val, probe, train_eval)


class _Programs(NamedTuple):
    """The compiled pieces of a run, over the seed axis when batched."""

    init: Callable
    epoch: Callable
    eval: Callable
    probe: Callable
    fold: Callable


def _programs(
    model: Model,
    loss: Loss,
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    sizes: tuple[int, int, int],
    sharding,
    keys: jax.Array,
    batched: bool,
) -> _Programs:
    """``sizes``: (training examples, batch size, evaluation chunk)."""
    n, batch_size, eval_chunk = sizes
    init = partial(init_state, model, rule, optimizer)
    epoch_fn = make_epoch_fn(rule, optimizer, n, batch_size, sharding, model)
    eval_fn = make_eval_fn(model, loss, rule, eval_chunk)
    probe_fn = with_alignment(rule, model, loss).update
    fold = jax.random.fold_in
    if batched:  # a leading seed axis on state and keys; data shared
        over = seed_axis(keys)
        init = over(init, (0,))
        epoch_fn = over(epoch_fn, (0, None, None, 0, None))
        eval_fn = over(eval_fn, (0, 0, None, None))
        probe_fn = over(probe_fn, (0, 0, None, 0))
        fold = over(fold, (0, None))
    return _Programs(
        init,
        jax.jit(epoch_fn, donate_argnums=0),
        jax.jit(eval_fn),
        jax.jit(probe_fn),
        fold,
    )


def _fit(*args, **kwargs) -> list[dict[str, Any]]:
    """:func:`_fit_timed` with the seconds spent compiling counted."""
    with CompileClock().listening() as clock:
        return _fit_timed(clock, *args, **kwargs)


def _fit_timed(
    clock: CompileClock,
    model: Model,
    loss: Loss,
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    data: Dataset,
    epochs: int,
    batch_size: int,
    keys: list[jax.Array],
    batched: bool,
    *,
    probe_size: int = 256,
    train_eval_size: int | None = None,
    eval_chunk: int = 4096,
    writers: Sequence[MetricWriter] | None = None,
    writer: MetricWriter | None = None,
    progress: bool = True,
    data_parallel: bool = False,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    checkpoint_tag: str | None = None,
    lr_schedule: Callable[[int], Any] | None = None,
    prepare_state: Callable[[Any], Any] | None = None,
) -> list[dict[str, Any]]:
    start = time.perf_counter()
    num_seeds, n = len(keys), len(data.x_train)
    if not batched and num_seeds != 1:
        raise ValueError(f"batched=False needs exactly one key, got {num_seeds}")
    writers = [writer] if writer is not None else writers
    writers = list(writers) if writers else [NullWriter() for _ in keys]
    if batch_size > n:
        raise ValueError(
            f"trainer.batch_size={batch_size} is larger than the {data.name} training "
            f"set ({n} examples)"
        )
    sizes = (batch_size, probe_size, eval_chunk, train_eval_size)
    arrays, prog, state, run_keys, replicated = _start(
        model, loss, rule, optimizer, data, keys, batched, sizes, data_parallel
    )
    if prepare_state is not None:  # per-member hyperparameters (.trials)
        state = prepare_state(state)
    record = Record(
        [[] for _ in keys], [None] * num_seeds, [{} for _ in keys], clock=clock
    )
    ckpt = checkpoint_dir and Checkpointer(
        checkpoint_dir, checkpoint_every, checkpoint_tag
    )
    state, first_epoch = resume(ckpt, state, record, writers, replicated)
    steps = n // batch_size
    rec = Recorder(
        headline_candidates(rule, model) or (),
        writers,
        batched,
        epochs,
        steps,
        batch_size,
        lr_schedule,
    )
    bar = Progress(epochs, steps) if progress else None
    for epoch in range(first_epoch, epochs + 1):
        if all(d is not None for d in record.diverged):
            break
        state = _train_epoch(
            prog, rec, record, arrays, state, epoch, first_epoch, *run_keys
        )
        if bar:
            bar.update(epoch, record.shown[0])
        if ckpt and ckpt.due(epoch, epoch == epochs):
            ckpt.save(state, checkpoint_meta(epoch, record))
    if bar and bar.tty and len(record.histories[0]) != epochs:
        bar.close()
    chosen_on = "val" if arrays.val is not None else "train"
    wall = time.perf_counter() - start
    record.seconds["compile"] = clock.total
    return [
        seed_results(rec, record, state, s, chosen_on, wall) for s in range(num_seeds)
    ]


def _start(model, loss, rule, optimizer, data, keys, batched, sizes, data_parallel):
    """Data and initial state on the device(s), the compiled programs, and the
    (train, probe) keys. ``sizes``: (batch size, probe size, evaluation chunk,
    training examples evaluated)."""
    batch_size, probe_size, eval_chunk, train_eval_size = sizes
    mesh, batch_sharding, replicated = data_mesh(data_parallel, batch_size)
    put = (lambda t: replicate(t, replicated)) if mesh else jnp.asarray
    arrays = _place(data, put, probe_size, train_eval_size)
    keys_arr = jnp.stack([jnp.asarray(k) for k in keys])
    prog = _programs(
        model,
        loss,
        rule,
        optimizer,
        (len(data.x_train), batch_size, eval_chunk),
        batch_sharding,
        keys_arr,
        batched,
    )
    seed_keys = keys_arr if batched else keys_arr[0]
    probe_key, train_key = prog.fold(seed_keys, 2), prog.fold(seed_keys, 3)
    state = prog.init(seed_keys)
    if mesh:  # every input of the compiled programs on the (possibly global) mesh
        state = replicate_tree(state, replicated)
        probe_key, train_key = replicate_tree((probe_key, train_key), replicated)
    return arrays, prog, state, (train_key, probe_key), replicated


def _train_epoch(
    prog: _Programs,
    rec: Recorder,
    record: Record,
    arrays: _Arrays,
    state,
    epoch: int,
    first_epoch: int,
    train_key: jax.Array,
    probe_key: jax.Array,
):
    """Train, probe and evaluate one epoch, record it; return the new state."""
    with timed(record, "train"):
        t0 = time.perf_counter()
        state, step_metrics = prog.epoch(state, *arrays.train, train_key, epoch)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
    if epoch > first_epoch:
        record.steady_time += dt
        num_seeds = len(record.histories)
        record.steady_examples += rec.steps * rec.batch_size * num_seeds
    with timed(record, "eval"):
        _, _, probe_metrics = prog.probe(
            state.params, state.rule_state, arrays.probe, prog.fold(probe_key, epoch)
        )
        params = inference_params(state.params, state.model_state)  # BatchNorm: running
        evals = {
            "train": prog.eval(params, state.rule_state, *arrays.train_eval),
            "test": prog.eval(params, state.rule_state, *arrays.test),
        }
        if arrays.val is not None:
            evals["val"] = prog.eval(params, state.rule_state, *arrays.val)
        jax.block_until_ready((probe_metrics, evals))
    record_epoch(rec, record, epoch, dt, evals, step_metrics, probe_metrics)
    return state
