"""Per-epoch history entries: evaluation results and step metrics as JSON numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def to_python(tree: dict) -> dict:
    """Arrays -> floats / lists; NaN and inf -> None (valid JSON)."""

    def conv(v):
        v = np.asarray(v)
        if v.ndim == 0:
            f = float(v)
            return f if math.isfinite(f) else None
        return [conv(e) for e in v]

    return {k: conv(v) for k, v in tree.items()}


def flat_scalars(entry: dict) -> dict[str, float]:
    """History entry -> scalars for a metric writer, named as in the history
    (README "Metric names"); a per-stage list ``k`` becomes ``k/stage<l>``;
    ``None`` and strings are left out."""
    out = {}
    for k, v in entry.items():
        if v is None or isinstance(v, str):
            continue
        if isinstance(v, list):
            for l, e in enumerate(v):
                if e is not None:
                    out[f"{k}/stage{l}"] = e
        else:
            out[k] = v
    return out


def history_entry(
    epoch: int,
    dt: float,
    splits: dict[str, dict],
    step_metrics: dict,
    probe_metrics: dict,
) -> dict[str, Any]:
    """One epoch's history entry: ``<split>_<metric>`` for each of ``splits``
    (``train``, ``test``, optionally ``val``), ``step_loss`` (mean over the epoch's
    steps), the probe's ``alignment_deg`` / ``grad_norm`` / ``update_norm``, the
    rule's step metrics as ``rule/<name>``, ``epoch``, ``epoch_seconds`` and
    ``finite``; a non-finite epoch has every accuracy ``None``."""
    step_metrics, probe_metrics = dict(step_metrics), dict(probe_metrics)
    entry: dict[str, Any] = {}
    for prefix in ("train", "test", "val"):
        for k, v in splits.get(prefix, {}).items():
            entry[f"{prefix}_{k}"] = v
    entry["step_loss"] = step_metrics.pop("loss")
    finite = bool(step_metrics.pop("finite"))
    for k in ("alignment_deg", "grad_norm", "update_norm"):
        entry[k] = probe_metrics.pop(k)
    for k, v in step_metrics.items():
        entry[f"rule/{k}"] = v
    entry = to_python(entry)
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


def select_on_validation(history: list[dict[str, Any]]) -> dict[str, Any] | None:
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
