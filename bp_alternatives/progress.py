"""Training progress: a live display on a terminal, one plain line per epoch elsewhere,
and every epoch's line in the run directory's ``train.log``.

On a terminal (or in a notebook) :class:`Progress` draws a ``rich`` progress bar:
epoch and optimizer step counts, elapsed time and ETA, seconds per epoch, examples
per second, the learning rate and the latest losses/accuracies. An epoch runs as one
compiled ``lax.scan``, so the step count advances an epoch at a time. Anywhere else
(a log file, Slurm output) it writes the plain line :func:`epoch_line` per epoch.
Independently, :data:`EPOCH_LOG` receives every seed's line; :func:`log_to` sends it
to a file (``train.py``: ``<run dir>/train.log``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

EPOCH_LOG = logging.getLogger("bp_alternatives.epochs")
EPOCH_LOG.propagate = False  # the terminal shows the bar; the file gets the lines
EPOCH_LOG.setLevel(logging.INFO)


# the history's metrics in every epoch line
EPOCH_LINE_METRICS = ("train_loss", "train_accuracy", "test_accuracy")


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "nan" if v is None else format(v, spec)


def epoch_line(epoch: int, total: int, entry: dict[str, Any]) -> str:
    """``epoch 2/20 train_loss 0.1234 train_accuracy ... test_accuracy ... lr ...
    0.41 s 12,345 ex/s`` from a history entry, its metrics under their history names
    (README "Metric names"; ``examples_per_second`` and ``lr`` where present)."""
    parts = [f"epoch {epoch}/{total}"]
    parts += [f"{k} {_fmt(entry.get(k))}" for k in EPOCH_LINE_METRICS]
    if entry.get("lr") is not None:
        parts.append(f"lr {entry['lr']:.3g}")
    if entry.get("epoch_seconds") is not None:
        parts.append(f"{entry['epoch_seconds']:.2f} s")
    if entry.get("examples_per_second") is not None:
        parts.append(f"{entry['examples_per_second']:,.0f} ex/s")
    return " ".join(parts)


class Progress:
    """Per-epoch progress of one run: a rich bar on a terminal, plain lines otherwise.

    ``total``: epochs; ``steps_per_epoch``: optimizer steps in each; ``stream``: where
    to draw (default stderr).
    """

    def __init__(self, total: int, steps_per_epoch: int = 0, stream: TextIO = None):
        self.total, self.steps = total, steps_per_epoch
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.bar = None
        if self.tty:
            console = Console(file=self.stream, force_terminal=True)
            self.bar = RichProgress(
                TextColumn("epoch"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("step {task.fields[step]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console,
                auto_refresh=False,
            )
            self.task = self.bar.add_task("train", total=total, step="0", stats="")
            self.bar.start()

    def update(self, epoch: int, entry: dict[str, Any]) -> None:
        """Show epoch ``epoch`` (1-based) finished with history entry ``entry``."""
        if not self.tty:
            self.stream.write(epoch_line(epoch, self.total, entry) + "\n")
            self.stream.flush()
            return
        stats = epoch_line(epoch, self.total, entry).split(" ", 2)[2]
        self.bar.update(
            self.task,
            completed=epoch,
            step=f"{epoch * self.steps}/{self.total * self.steps}",
            stats=stats,
        )
        self.bar.refresh()
        if epoch == self.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextlib.contextmanager
def log_to(path: str) -> Iterator[None]:
    """Append :data:`EPOCH_LOG`'s lines to ``path`` while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
    EPOCH_LOG.addHandler(handler)
    try:
        yield
    finally:
        EPOCH_LOG.removeHandler(handler)
        handler.close()
