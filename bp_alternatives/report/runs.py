"""The runs to compare: every ``results.json`` under some directories, each read
through :mod:`bp_alternatives.results` into the :class:`RunRecord` the table and
plots use."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bp_alternatives import results as results_io

RESULTS = results_io.FILENAME
STATUSES = results_io.STATUSES


class CompareError(Exception):
    """No results to compare, or a malformed ``results.json`` (the message names it)."""


@dataclass(frozen=True)
class RunRecord:
    """What the table and plots need from one ``results.json``."""

    path: str
    rule: str
    dataset: str
    seed: Any
    status: str  # ok | diverged | failed
    # percent, 100 * (1 - test accuracy) at the epoch selected on the validation split
    # (results.json "selected") if the run had one, else at the last epoch ("final")
    test_error: float | None
    train_error: float | None
    examples_per_second: float | None
    final_alignment: tuple[float | None, ...] | None  # degrees per stage, last epoch
    history: tuple[dict[str, Any], ...]
    config: dict[str, Any]
    error: str | None
    selected_epoch: int | None = None  # the best-validation epoch, if selected
    input_width: int | None = None  # the model's input features (MLPs: widths[0])
    num_classes: int | None = None  # chance accuracy is 1 / num_classes
    # a rule that chooses its headline among prediction modes (results.json
    # "prediction", e.g. forward-forward's stage ranges): the mode at the reported
    # epoch, and the test error % of its other modes (not candidates) at that epoch
    prediction_mode: str | None = None
    other_errors: tuple[tuple[str, float], ...] = ()
    provenance: Mapping[str, Any] | None = None  # versions and commit of the run


def find_results(dirs: Sequence[str]) -> list[str]:
    """Every ``results.json`` under ``dirs`` (sorted); a missing directory is an
    error, and so is finding none at all."""
    paths: list[str] = []
    for d in dirs:
        if not os.path.isdir(d):
            raise CompareError(f"{d}: no such directory")
        for root, subdirs, files in os.walk(d):
            subdirs.sort()
            if RESULTS in files:
                paths.append(os.path.join(root, RESULTS))
    if not paths:
        raise CompareError(
            f"no {RESULTS} under {', '.join(dirs)} (run a sweep first: "
            "python -m experiments.train -m rule=bp,manual_bp seed=0,1)"
        )
    return sorted(set(paths))


def load_run(path: str) -> RunRecord:
    """Read one ``results.json`` (``results.read``: this layout or the previous
    one); ``CompareError`` names the file and the field when it is malformed."""
    try:
        r = results_io.read(path, strict=False)
    except results_io.ResultsError as e:
        raise CompareError(str(e)) from e
    test_acc = r.final.get("test_accuracy")
    if r.status == "ok" and num(test_acc) is None:  # NaN, a string, missing
        r = dataclasses.replace(
            r,
            status="failed",
            error=f"{path}: 'final.test_accuracy' is {test_acc!r}, not a finite "
            "number; counted as failed",
        )
    # a run with a validation split reports the test numbers of the epoch selected on
    # it (results.json "selected", written by the trainer), not of the last epoch
    selected = r.selected or {}
    if r.status == "ok" and num(selected.get("test_accuracy")) is not None:
        test_acc = selected["test_accuracy"]
    else:
        selected = {}
    align = r.history[-1].get("alignment_deg") if r.history else None
    input_width, num_classes = _model_sizes(r)
    mode, others = _prediction(r, selected.get("epoch"))
    return RunRecord(
        path=path,
        rule=r.rule if isinstance(r.rule, str) else "?",
        dataset=str(r.dataset or _get(r.config, "data.name") or "?"),
        seed=r.seed,
        status=r.status,
        test_error=error_pct(test_acc),
        selected_epoch=selected.get("epoch"),
        train_error=error_pct(r.final.get("train_accuracy")),
        examples_per_second=num(r.examples_per_second),
        final_alignment=tuple(num(a) for a in align)
        if isinstance(align, list)
        else None,
        history=tuple(r.history),
        config=r.config,
        error=r.error,
        input_width=input_width,
        num_classes=num_classes,
        prediction_mode=mode,
        other_errors=others,
        provenance=r.provenance,
    )


def _model_sizes(r: results_io.Results) -> tuple[int | None, int | None]:
    """(input features, classes) from the run's model spec and ``num_classes``."""
    model = r.model or {}
    shape, widths = model.get("input_shape"), model.get("widths")
    if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
        input_width = math.prod(shape)  # cnn, lenet
    elif model.get("name", "mlp") == "mlp" and isinstance(widths, list) and widths:
        input_width = widths[0] if isinstance(widths[0], int) else None
    else:
        input_width = None
    num_classes = r.num_classes
    if not isinstance(num_classes, int) and isinstance(widths, list) and widths:
        num_classes = widths[-1] if isinstance(widths[-1], int) else None
    return input_width, num_classes if isinstance(num_classes, int) else None


def _prediction(
    r: results_io.Results, epoch: Any
) -> tuple[str | None, tuple[tuple[str, float], ...]]:
    """(headline prediction mode, test error % of the non-candidate modes) at the
    reported epoch (``epoch``: the selected one, else the last)."""
    pred, history = r.prediction, r.history
    if not isinstance(pred, Mapping) or not history:
        return None, ()
    entry = next((e for e in history if e.get("epoch") == epoch), history[-1])
    candidates = pred.get("candidates") or ()
    others = []
    for k, v in entry.items():
        m = k.removeprefix("test_accuracy/")
        if m != k and m not in candidates and (err := error_pct(v)) is not None:
            others.append((m, err))
    mode = entry.get("prediction_mode", pred.get("mode"))
    return (mode if isinstance(mode, str) else None), tuple(others)


def load_runs(dirs: Sequence[str]) -> list[RunRecord]:
    """Every run under ``dirs``."""
    return [load_run(p) for p in find_results(dirs)]


def num(v: Any) -> float | None:
    """``v`` as a finite float, else ``None`` (bools, strings, NaN, inf)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def error_pct(acc: Any) -> float | None:
    """Accuracy in [0, 1] -> error in percent (``None`` stays ``None``)."""
    a = num(acc)
    return None if a is None else 100.0 * (1.0 - a)


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for k in dotted.split("."):
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node
