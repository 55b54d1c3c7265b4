"""The training loop: data on the device, one compiled ``lax.scan`` per epoch.

The loop owns the randomness: the epoch's shuffle uses ``fold_in(key, epoch)`` and
each step's rule key is ``fold_in(key, global_step)``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bp_alternatives.atomic import write_atomic
from bp_alternatives.data import Dataset
from bp_alternatives.diagnostics import with_alignment
from bp_alternatives.model import Model, Params, init_params
from bp_alternatives.model.losses import Loss
from bp_alternatives.progress import EPOCH_LOG, Progress, epoch_line
from bp_alternatives.rules import (
    Batch,
    LearningRule,
    headline_candidates,
    predictor,
)
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
        return TrainState(params, opt_state, rule_state), metrics

    return train_step


def make_epoch_fn(
    rule: LearningRule,
    optimizer: optax.GradientTransformation,
    num_train: int,
    batch_size: int,
    batch_sharding: NamedSharding | None = None,
) -> Callable:
    """``epoch_fn(state, x, y, key, epoch) -> (state, metrics)``: one shuffled epoch
    as a single ``lax.scan``; ``metrics`` are the means over the epoch's steps plus
    ``finite`` (whether every step's loss was finite). The last incomplete batch is
    dropped, so every step sees ``batch_size`` examples. With ``batch_sharding`` each
    batch is split over devices (data parallelism)."""
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
            if batch_sharding is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
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
    masking the padding out, so large test sets never materialise at once. When any
    output or score of the split is not finite every accuracy is NaN (null in
    results.json): ``argmax`` of a NaN row is 0, a class, not a prediction.
    """

    predict = predictor(rule, model)

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

        sums = jax.lax.map(
            one, (xp.reshape(nchunks, c, *x.shape[1:]), yp.reshape(nchunks, c), mask)
        )
        finite = jnp.sum(sums.pop("nonfinite")) == 0
        res = {k: jnp.sum(v) / n for k, v in sums.items()}
        for k in res:
            if k.startswith("accuracy"):
                res[k] = jnp.where(finite, res[k], jnp.nan)
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
        if v is None or isinstance(v, str):
            continue
        if isinstance(v, list):
            for l, e in enumerate(v):
                if e is not None:
                    out[f"{k}/stage{l}"] = e
        else:
            out[names.get(k, k)] = v
    return out


class CheckpointMismatchError(ValueError):
    """The checkpoint in a run directory belongs to a different configuration."""


class Checkpointer:
    """Atomic checkpoints of the training state and history in ``directory``.

    One file, ``checkpoint.msgpack``, written to a temp file and renamed: an 8-byte
    length, the JSON metadata (epoch, histories, statuses, ``tag``), then the (possibly
    seed-batched) ``TrainState`` serialised with ``flax.serialization``. A run killed
    at any moment leaves either the previous checkpoint or the new one, never the
    state of one epoch beside the history of another. ``checkpoint.json`` beside it
    is a human-readable copy of the metadata, never read back.
    ``tag`` identifies the configuration (train.py: a hash of the resolved config);
    loading a checkpoint written under another tag raises
    :class:`CheckpointMismatchError` instead of silently continuing someone else's run.
    Randomness needs no saving: every key is ``fold_in(key, epoch or step)``.
    """

    def __init__(self, directory: str, every: int, tag: str | None = None):
        self.directory = directory
        self.every = every
        self.tag = tag
        self.path = os.path.join(directory, "checkpoint.msgpack")
        self.meta_path = os.path.join(directory, "checkpoint.json")

    def due(self, epoch: int, last: bool) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or last)

    def save(self, state, meta: dict[str, Any]) -> None:
        if jax.process_index() != 0:  # several hosts: the first one writes
            return
        os.makedirs(self.directory, exist_ok=True)
        head = json.dumps({**meta, "tag": self.tag}).encode()
        blob = serialization.to_bytes(jax.device_get(state))
        _atomic_write(self.path, len(head).to_bytes(8, "little") + head + blob)
        _atomic_write(self.meta_path, head)  # for people; load() never reads it

    def load(self, template) -> tuple[Any, dict[str, Any]] | None:
        if not os.path.exists(self.path):
            return None
        with open(self.path, "rb") as f:
            raw = f.read()
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n])
        if meta.get("tag") != self.tag:
            raise CheckpointMismatchError(
                f"{self.path} is a checkpoint of a different configuration (tag "
                f"{meta.get('tag')!r}, this run {self.tag!r}); use another output "
                "directory (hydra.run.dir=... or hydra.sweep.dir=...) or delete it"
            )
        state = serialization.from_bytes(jax.device_get(template), raw[8 + n :])
        return state, meta


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, raw state dict) of a checkpoint file, without a template."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), serialization.msgpack_restore(raw[8 + n :])


def _atomic_write(path: str, data: bytes) -> None:
    write_atomic(path, data)


def _data_mesh(data_parallel: bool, batch_size: int):
    """(mesh, batch sharding, replicated sharding) over all devices, or Nones.

    ``jax.devices()``: every device of every process -- this host's alone, or, after
    ``jax.distributed.initialize()`` on several hosts, all of theirs (one global mesh,
    so gradients are averaged across hosts too).
    """
    if not data_parallel:
        return None, None, None
    devices = jax.devices()
    if batch_size % len(devices):
        raise ValueError(
            f"trainer.batch_size={batch_size} must be divisible by the number of "
            f"devices ({len(devices)}) for trainer.data_parallel=true"
        )
    mesh = Mesh(np.array(devices), ("data",))
    return mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P())


def _replicate(x, sharding: NamedSharding) -> jax.Array:
    """A full copy of host array ``x`` on every device of ``sharding``'s mesh.

    Each process fills only the devices it can address, from its own copy of ``x``
    (every host loads the same dataset), so this also builds the global array of a
    multi-host mesh, where ``jax.device_put`` of a host array cannot reach the other
    hosts' devices.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _replicate_tree(tree, sharding: NamedSharding):
    return jax.tree_util.tree_map(
        lambda a: _replicate(a, sharding), jax.device_get(tree)
    )


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
    excluded) and ``wall_seconds``. Keyword arguments as in :func:`fit_seeds`.
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
    a ``lax.map`` for PRNG implementations other than threefry: :func:`seed_axis`).

    Returns one results dict per key, equal (to float rounding) to separate
    :func:`fit` runs, whatever other keys share the program. Options:
    ``probe_size`` (examples in the alignment probe), ``eval_chunk`` (evaluation
    batch), ``writers`` (one ``MetricWriter`` per key), ``progress``,
    ``data_parallel`` (shard each batch over ``jax.devices()`` with a ``Mesh`` +
    ``NamedSharding``; params replicated, so XLA all-reduces the gradients),
    ``checkpoint_dir`` / ``checkpoint_every`` (resume from the last checkpoint in
    ``checkpoint_dir`` if there is one), ``checkpoint_tag`` (a checkpoint written
    under another tag is refused: :class:`Checkpointer`).
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


def _fit(
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
    eval_chunk: int = 4096,
    writers: Sequence[MetricWriter] | None = None,
    writer: MetricWriter | None = None,
    progress: bool = True,
    data_parallel: bool = False,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    checkpoint_tag: str | None = None,
    lr_schedule: Callable[[int], Any] | None = None,
) -> list[dict[str, Any]]:
    start = time.perf_counter()
    num_seeds = len(keys)
    if not batched and num_seeds != 1:
        raise ValueError(f"batched=False needs exactly one key, got {num_seeds}")
    if writer is not None:
        writers = [writer]
    writers = list(writers) if writers else [NullWriter() for _ in keys]
    n = len(data.x_train)
    if batch_size > n:
        raise ValueError(
            f"trainer.batch_size={batch_size} is larger than the {data.name} training "
            f"set ({n} examples)"
        )
    mesh, batch_sharding, replicated = _data_mesh(data_parallel, batch_size)
    put = (lambda t: _replicate(t, replicated)) if mesh else jnp.asarray
    x_train, y_train = put(data.x_train), put(data.y_train)
    x_test, y_test = put(data.x_test), put(data.y_test)
    x_val = y_val = None
    if getattr(data, "x_val", None) is not None and len(data.x_val):
        x_val, y_val = put(data.x_val), put(data.y_val)
    probe = Batch(x_train[:probe_size], y_train[:probe_size])

    keys_arr = jnp.stack([jnp.asarray(k) for k in keys])
    init = partial(init_state, model, rule, optimizer)
    epoch_fn = make_epoch_fn(rule, optimizer, n, batch_size, batch_sharding)
    eval_fn = make_eval_fn(model, loss, rule, eval_chunk)
    candidates = headline_candidates(rule, model)
    probe_fn = with_alignment(rule, model, loss).update
    fold = jax.random.fold_in
    if batched:  # a leading seed axis on state and keys; data shared
        over = seed_axis(keys_arr)
        init = over(init, (0,))
        epoch_fn = over(epoch_fn, (0, None, None, 0, None))
        eval_fn = over(eval_fn, (0, 0, None, None))
        probe_fn = over(probe_fn, (0, 0, None, 0))
        fold = over(fold, (0, None))
        seed_keys = keys_arr
    else:
        seed_keys = keys_arr[0]
    epoch_fn = jax.jit(epoch_fn, donate_argnums=0)
    eval_fn, probe_fn = jax.jit(eval_fn), jax.jit(probe_fn)
    probe_key, train_key = fold(seed_keys, 2), fold(seed_keys, 3)
    state = init(seed_keys)
    if mesh:  # every input of the compiled programs on the (possibly global) mesh
        state = _replicate_tree(state, replicated)
        probe_key, train_key = _replicate_tree((probe_key, train_key), replicated)

    def per_seed(tree, s):
        return jax.tree_util.tree_map(lambda a: a[s] if batched else a, tree)

    histories: list[list[dict[str, Any]]] = [[] for _ in keys]
    diverged: list[int | None] = [None] * num_seeds
    steady_time, steady_examples, first_epoch = 0.0, 0, 1
    ckpt = (
        Checkpointer(checkpoint_dir, checkpoint_every, checkpoint_tag)
        if checkpoint_dir
        else None
    )
    if ckpt:
        restored = ckpt.load(state)
        if restored is not None:
            state, meta = restored
            state = _replicate_tree(state, replicated) if mesh else state
            histories, diverged = meta["histories"], meta["diverged"]
            first_epoch = meta["epoch"] + 1
            print(f"resuming from the checkpoint of epoch {meta['epoch']}")
            # the writers start empty: replay the restored epochs so metrics.csv and
            # a W&B run hold the whole history, not only the epochs after the resume
            for s, history in enumerate(histories):
                for entry in history:
                    writers[s].write_scalars(entry["epoch"], _flat_scalars(entry))
    steps = n // batch_size
    bar = Progress(epochs, steps) if progress else None
    shown: list[dict[str, Any]] = [{} for _ in keys]  # each seed's last epoch, shown
    for epoch in range(first_epoch, epochs + 1):
        if all(d is not None for d in diverged):
            break
        t0 = time.perf_counter()
        state, step_metrics = epoch_fn(state, x_train, y_train, train_key, epoch)
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        if epoch > first_epoch:
            steady_time += dt
            steady_examples += steps * batch_size * num_seeds
        _, _, probe_metrics = probe_fn(
            state.params, state.rule_state, probe, fold(probe_key, epoch)
        )
        tr = eval_fn(state.params, state.rule_state, x_train, y_train)
        te = eval_fn(state.params, state.rule_state, x_test, y_test)
        va = (
            eval_fn(state.params, state.rule_state, x_val, y_val)
            if x_val is not None
            else None
        )
        for s in range(num_seeds):
            if diverged[s] is not None:
                continue
            splits = {"train": per_seed(tr, s), "test": per_seed(te, s)}
            if va is not None:
                splits["val"] = per_seed(va, s)
            mode = choose_headline(candidates, splits)
            entry = _history_entry(
                epoch,
                dt,
                splits["train"],
                splits["test"],
                per_seed(step_metrics, s),
                per_seed(probe_metrics, s),
                splits.get("val"),
            )
            if mode is not None:
                entry["prediction_mode"] = mode
            finite = entry.pop("finite")
            if lr_schedule is not None:  # the rate of the epoch's first step
                entry["lr"] = float(lr_schedule((epoch - 1) * steps))
            histories[s].append(entry)
            shown[s] = entry | {"examples_per_second": steps * batch_size / dt}
            seed = f"seed {s}: " if batched else ""
            EPOCH_LOG.info(seed + epoch_line(epoch, epochs, shown[s]))
            # the same columns live and when a resumed run replays its history
            writers[s].write_scalars(epoch, _flat_scalars(entry))
            if not finite:
                diverged[s] = epoch
        if bar:
            bar.update(epoch, shown[0])
        if ckpt and ckpt.due(epoch, epoch == epochs):
            meta = {"epoch": epoch, "histories": histories, "diverged": diverged}
            ckpt.save(state, meta)
    if bar and bar.tty and len(histories[0]) != epochs:
        bar.close()

    wall = time.perf_counter() - start
    results = []
    for s in range(num_seeds):
        last = histories[s][-1] if histories[s] else {}
        final = {
            k: last.get(k) for k in last if k.startswith(("train_", "test_", "val_"))
        }
        results.append(
            {
                "final": final,
                "selected": _select_on_validation(histories[s]),
                "prediction": (
                    {
                        "mode": last.get("prediction_mode"),
                        "chosen_on": "val" if x_val is not None else "train",
                        "candidates": list(candidates),
                    }
                    if candidates
                    else None
                ),
                "history": histories[s],
                "status": "ok" if diverged[s] is None else "diverged",
                "diverged_epoch": diverged[s],
                "examples_per_second": (
                    steady_examples / steady_time if steady_time > 0 else None
                ),
                "seeds_in_program": num_seeds,
                "wall_seconds": wall,
                "steps_per_epoch": steps,
                "params": per_seed(state.params, s),
                "rule_state": per_seed(state.rule_state, s),
            }
        )
    return results


def seed_axis(keys: jax.Array) -> Callable:
    """``over(f, in_axes)``: ``f`` over a leading seed axis (``in_axes``: 0 or None
    per argument), such that each seed's numbers do not depend on the other seeds.

    ``jax.vmap`` for the ``threefry2x32`` PRNG. Any other implementation (``rbg``,
    ``unsafe_rbg``: ``jax_default_prng_impl``) gets a ``lax.map``, one seed after the
    other in the same program: JAX batches their ``rng_bit_generator`` by drawing
    every seed's bits from one of the keys (jax-ml/jax#19085, PR #20094), so under
    ``vmap`` a seed's run would change with the seeds beside it.
    """
    impl = str(jax.random.key_impl(keys))
    if impl == "threefry2x32":
        return lambda f, in_axes: jax.vmap(f, in_axes=in_axes)
    print(
        f"PRNG {impl}: the seeds run one after another in one program (lax.map), "
        "as vmap would draw every seed's random bits from one key"
    )
    return _map_over_seeds


def _map_over_seeds(f: Callable, in_axes: tuple[int | None, ...]) -> Callable:
    """``jax.vmap(f, in_axes)`` computed as a ``lax.map`` over the seed axis."""

    def mapped(*args):
        def one(per_seed):
            it = iter(per_seed)
            return f(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

        return jax.lax.map(one, tuple(a for a, ax in zip(args, in_axes) if ax == 0))

    return mapped


def choose_headline(
    modes: Sequence[str] | None, splits: dict[str, dict[str, Any]]
) -> str | None:
    """Set each split's ``accuracy`` to the prediction mode (one of ``modes``) with the
    best validation accuracy -- training accuracy without a ``val`` split; never
    test -- and return that mode (the first of equals). ``None`` modes: the rule has
    one headline, nothing to choose. ``splits``: ``{"train"|"val"|"test": eval
    results}`` (``accuracy/<mode>`` keys), modified in place.
    """
    if not modes:
        return None
    on = splits.get("val", splits["train"])
    best = max(modes, key=lambda m: float(on[f"accuracy/{m}"]))
    for res in splits.values():
        res["accuracy"] = res[f"accuracy/{best}"]
    return best


def _select_on_validation(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch with the best validation accuracy, and its test numbers.

    Model selection on a split carved from train, never on test (some published
    benchmarks select and report on the same test split, which is optimistic).
    ``None`` when there is no validation split.
    """
    scored = [e for e in history if e.get("val_accuracy") is not None]
    if not scored:
        return None
    best = max(scored, key=lambda e: e["val_accuracy"])  # first of equals
    keys = ("epoch", "val_accuracy", "val_loss", "test_accuracy", "test_loss")
    if "prediction_mode" in best:  # the rule's headline mode at that epoch
        keys += ("prediction_mode",)
    return {k: best.get(k) for k in keys}


def _history_entry(
    epoch, dt, tr, te, step_metrics, probe_metrics, va=None
) -> dict[str, Any]:
    step_metrics, probe_metrics = dict(step_metrics), dict(probe_metrics)
    entry: dict[str, Any] = {}
    splits = (("train", tr), ("test", te)) + ((("val", va),) if va is not None else ())
    for prefix, res in splits:
        for k, v in res.items():
            entry[f"{prefix}_{k}"] = v
    entry["step_loss"] = step_metrics.pop("loss")
    finite = bool(step_metrics.pop("finite"))
    for k in ("alignment_deg", "grad_norm", "update_norm"):
        entry[k] = probe_metrics.pop(k)
    for k, v in step_metrics.items():
        entry[f"rule/{k}"] = v
    entry = _to_python(entry)
    entry["epoch"] = epoch
    entry["epoch_seconds"] = dt
    entry["finite"] = finite = (
        finite and entry["step_loss"] is not None and entry["train_loss"] is not None
    )
    if not finite:  # a diverged epoch predicts nothing, on any split
        for k in entry:
            if "accuracy" in k:
                entry[k] = None
    return entry
