"""Metric writers: one small interface, several back-ends (none, CSV, W&B).

Metric names use ``/`` (``train/loss``, ``eval/accuracy``, ``align/angle_stage0``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any, Protocol


class MetricWriter(Protocol):
    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record scalars for one step (here: one epoch)."""

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Record the run's final numbers."""

    def close(self) -> None:
        """Flush and release resources."""


class NullWriter:
    """Writes nothing (``logger=none``)."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        del step, scalars

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        del summary

    def close(self) -> None:
        pass


class CSVWriter:
    """Appends one row per ``write_scalars`` call to ``metrics.csv`` (``logger=csv``).

    The header is the union of the keys seen so far; the file is rewritten when new keys
    appear, so it always parses with ``csv.DictReader``.
    """

    def __init__(self, directory: str, filename: str = "metrics.csv"):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, filename)
        self._rows: list[dict[str, Any]] = []
        self._fields: list[str] = ["step"]

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        row = {"step": step, **scalars}
        new = [k for k in row if k not in self._fields]
        self._fields.extend(new)
        self._rows.append(row)
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields)
            w.writeheader()
            w.writerows(self._rows)
        os.replace(tmp, self.path)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        del summary  # results.json holds the summary

    def close(self) -> None:
        pass


class WandbWriter:
    """Logs to Weights & Biases (``logger=wandb``).

    ``mode`` is ``online``, ``offline`` or ``disabled``. With ``online`` but no API key,
    it falls back to ``offline`` with a one-line notice instead of prompting or hanging;
    offline runs can be uploaded later with ``wandb sync``.
    """

    def __init__(
        self,
        project: str = "bp-alternatives",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        mode: str = "offline",
        directory: str = ".",
        config: Mapping[str, Any] | None = None,
    ):
        import wandb

        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc()):
            print("wandb: no API key found; logging offline (upload later: wandb sync)")
            mode = "offline"
        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            name=name,
            tags=list(tags or []),
            mode=mode,
            dir=directory,
            config=dict(config or {}),
            settings=wandb.Settings(init_timeout=60, silent=True),
        )

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        for k, v in summary.items():
            self.run.summary[k] = v

    def close(self) -> None:
        self.run.finish()


def _has_netrc() -> bool:
    path = os.path.expanduser("~/.netrc")
    try:
        with open(path) as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False
