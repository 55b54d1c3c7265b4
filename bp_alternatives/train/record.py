"""What the training loop records per epoch and seed: the headline choice, the
history entries (logged, written, appended), the checkpoint's metadata and the resume
from it, and each seed's results."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.monitoring

from bp_alternatives.progress import EPOCH_LOG, epoch_line
from bp_alternatives.train.history import (
    flat_scalars,
    history_entry,
    select_on_validation,
)
from bp_alternatives.train.sharding import replicate_tree
from bp_alternatives.writers import MetricWriter


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


# JAX's monitoring events for the parts of compiling a jitted function.
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Seconds JAX spent compiling (its ``jax.monitoring`` duration events) while
    :meth:`listening`; ``total`` only grows."""

    def __init__(self) -> None:
        self.total = 0.0

    def _on_event(self, event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            self.total += duration

    @contextlib.contextmanager
    def listening(self) -> Iterator[CompileClock]:
        jax.monitoring.register_event_duration_secs_listener(self._on_event)
        try:
            yield self
        finally:
            jax.monitoring.unregister_event_duration_listener(self._on_event)


@dataclasses.dataclass
class Record:
    """What the loop has recorded so far, per seed; saved in checkpoints."""

    histories: list[list[dict[str, Any]]]
    diverged: list[int | None]
    shown: list[dict[str, Any]]  # each seed's last epoch, as displayed
    steady_time: float = 0.0
    steady_examples: int = 0
    # wall seconds of this run by what they went to (compile: all tracing,
    # lowering and XLA compilation or persistent-cache reads of the run, set at its
    # end; train and eval exclude the compilation they triggered)
    seconds: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"compile": 0.0, "train": 0.0, "eval": 0.0}
    )
    clock: CompileClock = dataclasses.field(default_factory=CompileClock)


@contextlib.contextmanager
def timed(record: Record, part: str) -> Iterator[None]:
    """Add the wall time of the block, less the compilation inside it (counted by
    ``record.clock``), to ``record.seconds[part]``."""
    clock = record.clock
    c0, t0 = clock.total, time.perf_counter()
    try:
        yield
    finally:
        record.seconds[part] += time.perf_counter() - t0 - (clock.total - c0)


def resume(ckpt, state, record: Record, writers, replicated) -> tuple[Any, int]:
    """(state, first epoch to train) from the checkpoint in ``ckpt``, if any; the
    restored epochs are replayed to the writers, which start empty, so metrics.csv
    and a W&B run hold the whole history, not only the epochs after the resume."""
    restored = ckpt.load(state) if ckpt else None
    if restored is None:
        return state, 1
    state, meta = restored
    state = replicate_tree(state, replicated) if replicated is not None else state
    record.histories, record.diverged = meta["histories"], meta["diverged"]
    print(f"resuming from the checkpoint of epoch {meta['epoch']}")
    for s, history in enumerate(record.histories):
        for entry in history:
            writers[s].write_scalars(entry["epoch"], flat_scalars(entry))
    return state, meta["epoch"] + 1


class Recorder(NamedTuple):
    """What recording an epoch needs besides the epoch's own numbers."""

    candidates: tuple[str, ...]  # the rule's headline modes (rules.headline_candidates)
    writers: list[MetricWriter]
    batched: bool
    epochs: int
    steps: int  # per epoch
    batch_size: int
    lr_schedule: Callable[[int], Any] | None


def record_epoch(
    rec: Recorder,
    record: Record,
    epoch: int,
    dt: float,
    evals: dict[str, Any],
    step_metrics,
    probe_metrics,
) -> None:
    """Each live seed's history entry of ``epoch``: logged, written, appended; a seed
    whose epoch was not finite is marked diverged."""
    batched, steps, lr_schedule = rec.batched, rec.steps, rec.lr_schedule
    for s in range(len(record.histories)):
        if record.diverged[s] is not None:
            continue
        splits = {k: per_seed(v, s, batched) for k, v in evals.items()}
        mode = choose_headline(rec.candidates, splits)
        entry = history_entry(
            epoch,
            dt,
            splits,
            per_seed(step_metrics, s, batched),
            per_seed(probe_metrics, s, batched),
        )
        if mode is not None:
            entry["prediction_mode"] = mode
        finite = entry.pop("finite")
        if lr_schedule is not None:  # the rate of the epoch's first step
            entry["lr"] = float(lr_schedule((epoch - 1) * steps))
        record.histories[s].append(entry)
        speed = steps * rec.batch_size / dt
        record.shown[s] = entry | {"examples_per_second": speed}
        seed = f"seed {s}: " if batched else ""
        EPOCH_LOG.info(seed + epoch_line(epoch, rec.epochs, record.shown[s]))
        # the same columns live and when a resumed run replays its history
        rec.writers[s].write_scalars(epoch, flat_scalars(entry))
        if not finite:
            record.diverged[s] = epoch


def per_seed(tree, s: int, batched: bool):
    return jax.tree_util.tree_map(lambda a: a[s] if batched else a, tree)


def seed_results(rec, record, state, s, chosen_on, wall) -> dict[str, Any]:
    """Seed ``s``'s results dict (:func:`~bp_alternatives.train.fit.fit`)."""
    history, diverged = record.histories[s], record.diverged[s]
    last = history[-1] if history else {}
    final = {k: last.get(k) for k in last if k.startswith(("train_", "test_", "val_"))}
    prediction = None
    if rec.candidates:
        prediction = {
            "mode": last.get("prediction_mode"),
            "chosen_on": chosen_on,
            "candidates": list(rec.candidates),
        }
    steady = record.steady_time
    return {
        "final": final,
        "selected": select_on_validation(history),
        "prediction": prediction,
        "history": history,
        "status": "ok" if diverged is None else "diverged",
        "diverged_epoch": diverged,
        "examples_per_second": record.steady_examples / steady if steady > 0 else None,
        "seeds_in_program": len(record.histories),
        "wall_seconds": wall,
        "time_split": time_split(record, wall),
        "steps_per_epoch": rec.steps,
        "params": per_seed(state.params, s, rec.batched),
        "rule_state": per_seed(state.rule_state, s, rec.batched),
    }


def time_split(record: Record, wall: float) -> dict[str, float]:
    """``{compile, train, eval, other}_seconds`` and ``wall_seconds`` of the run (the
    program's, shared by the seeds in it); ``other``: data placement, initial state,
    recording, checkpoints."""
    split = {f"{k}_seconds": v for k, v in record.seconds.items()}
    split["other_seconds"] = max(0.0, wall - sum(split.values()))
    split["wall_seconds"] = wall
    return split


def checkpoint_meta(epoch: int, record: Record) -> dict[str, Any]:
    """A checkpoint's metadata: what :func:`resume` reads back."""
    return {"epoch": epoch, "histories": record.histories, "diverged": record.diverged}
