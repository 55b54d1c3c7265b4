"""The ``results.json`` contract: one typed record, one writer, one reader.

Every run directory holds a ``results.json`` (DESIGN.md): what ran (``rule``,
``dataset``, ``seed``, the resolved ``config``), how it ended (``status``: ``ok``,
``diverged`` or ``failed``; ``error`` and ``traceback`` for a failed one) and its
numbers (``final``, ``selected``, ``history``, ``examples_per_second``, ...). Metric
names follow the README's "Metric names" scheme (``test_accuracy``, ``val_loss``,
``test_accuracy/<mode>``, ``rule/<name>``, ``alignment_deg``).

:class:`Results` is that record; :func:`write` writes it atomically
(``atomic.write_atomic``) and :func:`read` parses and checks one file. Files written
before the record carried ``schema_version`` (version 1: the same keys, no version
field) read as version 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bp_alternatives.atomic import write_atomic

FILENAME = "results.json"
SCHEMA_VERSION = 2  # 1: the layout without a schema_version field
STATUSES = ("ok", "diverged", "failed")
FINISHED = ("ok", "diverged")  # a run that need not be trained again

# Config keys that do not identify a run: they change no trained number (where the
# output goes, how progress is shown or logged, how evaluation is chunked or sharded,
# what a sweep optimizes) or only label the run in the comparison table. A finished
# run or checkpoint is reused across them, and no table column is split by them.
NOT_IDENTIFYING = (
    "out_dir",
    "run_name",
    "logger",
    "hydra",
    "paper",
    "column",
    "row",
    "optimized_metric",
    "optimize_on_test",
    "trainer.progress",
    "trainer.eval_chunk",
    "trainer.data_parallel",
    "trainer.checkpoint_every",
    "trainer.compilation_cache_dir",
)


class ResultsError(ValueError):
    """A ``results.json`` that cannot be read or breaks the contract (the message
    names the file and the field)."""


@dataclass(frozen=True)
class Results:
    """One run's ``results.json``.

    ``final``: the metrics of the last epoch; ``selected``: those of the epoch with
    the best ``val_accuracy`` (``None`` without a validation split); ``history``: one
    entry per epoch (``epoch``, ``<split>_<metric>``, ``alignment_deg`` and
    ``grad_norm`` per stage, ``rule/<name>``, ...); ``prediction``: the headline mode
    of a rule with several (``mode``, ``chosen_on``, ``candidates``).
    """

    status: str
    rule: str | None
    dataset: str | None
    seed: Any
    config: dict[str, Any]
    final: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    selected: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    loss: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: dict[str, Any] | None = None
    num_classes: int | None = None
    examples_per_second: float | None = None
    seeds_in_program: int | None = None
    wall_seconds: float | None = None
    # {compile, train, eval, other}_seconds and wall_seconds (train.record.time_split)
    time_split: dict[str, float] | None = None
    device: dict[str, Any] | None = None
    diverged_epoch: int | None = None
    provenance: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: ``schema_version`` first; ``error`` and ``traceback``
        only when set."""
        d = {"schema_version": self.schema_version}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "schema_version" and not (
                f.name in ("error", "traceback") and v is None
            ):
                d[f.name] = v
        return d


def strip_not_identifying(config: Mapping[str, Any]) -> dict[str, Any]:
    """A nested config without the :data:`NOT_IDENTIFYING` keys (a copy)."""
    out = json.loads(json.dumps(dict(config), default=str))
    for dotted in NOT_IDENTIFYING:
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def write(path: str, results: Results) -> None:
    """Write ``results`` to ``path`` atomically: a reader sees the previous file or
    the new one, never half."""
    write_atomic(path, json.dumps(results.to_dict(), indent=2))


def read(path: str, strict: bool = True) -> Results:
    """Parse and check one ``results.json`` (this version or version 1).

    Raises :class:`ResultsError` naming the file and the field: not JSON, not an
    object, a ``status`` outside :data:`STATUSES`, a finished run without a string
    ``rule``, an object ``final`` or a list ``history``, an ok run without a number
    and finite ``final.test_accuracy`` (with ``strict=False`` such a run is
    returned: the comparison counts it as failed), or a ``schema_version`` newer
    than this code.
    """
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: malformed {FILENAME} (not JSON: {e})") from e
    except OSError as e:
        raise ResultsError(f"{path}: cannot read ({e})") from e
    return from_dict(raw, path, strict)


def _finite(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def from_dict(raw: Any, path: str = FILENAME, strict: bool = True) -> Results:
    """The record of a parsed ``results.json`` object; checks as :func:`read`."""

    def bad(what: str) -> ResultsError:
        return ResultsError(f"{path}: malformed {FILENAME}: {what}")

    if not isinstance(raw, dict):
        raise bad(f"expected an object, got {type(raw).__name__}")
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise bad(
            f"'schema_version' is {version!r}; this bp_alternatives reads versions "
            f"1..{SCHEMA_VERSION} (a newer file: update bp_alternatives)"
        )
    status = raw.get("status")
    if status not in STATUSES:
        raise bad(f"'status' is {status!r}, expected one of {list(STATUSES)}")
    final, history = raw.get("final"), raw.get("history")
    if status != "failed":
        if not isinstance(raw.get("rule"), str):
            raise bad(f"'rule' is {raw.get('rule')!r}, expected a string")
        if not isinstance(final, dict):
            raise bad("'final' missing or not an object")
        if not isinstance(history, list) or not all(
            isinstance(e, dict) for e in history
        ):
            raise bad("'history' missing or not a list of objects")
    acc = final.get("test_accuracy") if isinstance(final, dict) else None
    if status == "ok" and not _finite(acc) and strict:
        raise bad(
            f"'final.test_accuracy' is {acc!r} in an ok run (missing, or not a "
            "finite number)"
        )
    known = {f.name for f in dataclasses.fields(Results)}
    kwargs = {k: v for k, v in raw.items() if k in known}
    kwargs["schema_version"] = version
    kwargs["final"] = final if isinstance(final, dict) else {}
    kwargs["history"] = history if isinstance(history, list) else []
    kwargs["config"] = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    for k in ("rule", "dataset", "seed"):
        kwargs.setdefault(k, None)
    for k in ("selected", "prediction", "model", "provenance"):
        if not isinstance(kwargs.get(k), dict):
            kwargs[k] = None
    return Results(**kwargs)


def read_finished(path: str) -> Results | None:
    """The record in ``path`` if it is a finished run (:data:`FINISHED`); ``None``
    when the file is missing, unreadable, malformed or of a failed run."""
    if not os.path.exists(path):
        return None
    try:
        res = read(path)
    except ResultsError:
        return None
    return res if res.status in FINISHED else None
