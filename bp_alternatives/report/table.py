"""The comparison table: runs grouped into cells by (row, column).

A row is the rule plus the rule options that differ between its runs (``bp
(remat=true)``), or the config's ``row: <label>``; a column is the config's
``column: <label>``, else the dataset plus the config values that differ between that
dataset's runs (the table's own axes and ``results.NOT_IDENTIFYING`` aside). A cell's
number is the test error in percent, mean ± sample standard deviation over its
finished seeds; diverged and failed runs are counted beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bp_alternatives.report.runs import RunRecord, num
from bp_alternatives.report.style import rule_key
from bp_alternatives.results import NOT_IDENTIFYING

EXTRAS = ("examples_per_second", "alignment")
# machine-dependent numbers (examples/s) only on request: --extras speed
DEFAULT_EXTRAS = ("alignment",)
EXTRA_ALIASES = {"speed": "examples_per_second"}
BELOW_CHANCE = "†"  # marks a cell whose test error is worse than guessing
# what the table's rows and cells already tell apart: never a column of its own
TABLE_AXES = ("rule", "seed", "data.name", "trainer.seeds")


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b": "<value as on the command line>"}``."""
    if isinstance(tree, Mapping):
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: _fmt_value(tree)}


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_fmt_value(e) for e in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{_fmt_value(e)}" for k, e in v.items()) + "}"
    return str(v)


def _varying(flats: list[dict[str, str]], excluded: Iterable[str]) -> list[str]:
    """Keys whose value (or presence) differs between the flattened configs."""
    excluded = tuple(excluded)
    keys = sorted({k for f in flats for k in f})
    out = []
    for k in keys:
        if any(k == e or k.startswith(e + ".") for e in excluded):
            continue
        if len({f.get(k, "<unset>") for f in flats}) > 1:
            out.append(k)
    return out


def _labels(runs: Sequence[RunRecord], axis: str, group, flatten, excluded):
    """Each run's label on ``axis`` (``row`` / ``column``): the config's ``<axis>``
    if set, else ``group(run)`` plus the ``flatten(run)`` values that differ between
    the runs of that group (``excluded`` keys aside)."""
    labels = [""] * len(runs)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        explicit = r.config.get(axis)
        if explicit:
            labels[i] = str(explicit)
        else:
            groups.setdefault(group(r), []).append(i)
    for name, idx in groups.items():
        flats = [flatten(runs[i]) for i in idx]
        keys = _varying(flats, excluded)
        for i, f in zip(idx, flats):
            opts = ", ".join(f"{k}={f.get(k, 'unset')}" for k in keys)
            labels[i] = f"{name} ({opts})" if keys else name
    return labels


def row_labels(runs: Sequence[RunRecord]) -> list[str]:
    """The table row of each run: ``config.row`` if set, else the rule plus the rule
    options that differ between runs of that rule (``bp (remat=true)``)."""
    return _labels(
        runs,
        "row",
        lambda r: r.rule,
        lambda r: _flatten(r.config.get("rule") or {}),
        excluded=("name",),
    )


def column_labels(runs: Sequence[RunRecord]) -> list[str]:
    """The table column of each run: ``config.column`` if set, else the dataset plus
    the config values that differ between that dataset's runs."""
    return _labels(
        runs,
        "column",
        lambda r: r.dataset,
        lambda r: _flatten(r.config),
        excluded=TABLE_AXES + NOT_IDENTIFYING,
    )


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``; ``None`` for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass
class Cell:
    """One (row, column) of the table: the runs of that rule on that config."""

    row: str
    column: str
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def ok(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "ok" and r.test_error is not None]

    @property
    def n_diverged(self) -> int:
        return sum(r.status == "diverged" for r in self.runs)

    @property
    def n_failed(self) -> int:
        return sum(r.status == "failed" for r in self.runs)

    @property
    def test_error(self) -> tuple[float, float | None] | None:
        ok = self.ok
        return mean_std([r.test_error for r in ok]) if ok else None

    @property
    def train_error(self) -> float | None:
        v = [r.train_error for r in self.ok if r.train_error is not None]
        return sum(v) / len(v) if v else None

    @property
    def examples_per_second(self) -> float | None:
        v = [r.examples_per_second for r in self.ok if r.examples_per_second]
        return sum(v) / len(v) if v else None

    @property
    def alignment(self) -> list[float | None] | None:
        """Final alignment angle per stage (degrees), mean over the ok seeds."""
        per_run = [r.final_alignment for r in self.ok if r.final_alignment]
        if not per_run:
            return None
        stages = max(len(a) for a in per_run)
        out: list[float | None] = []
        for s in range(stages):
            v = [a[s] for a in per_run if s < len(a) and a[s] is not None]
            out.append(sum(v) / len(v) if v else None)
        return out

    @property
    def paper(self) -> tuple[float | None, str | None, str | None]:
        """(published test error %, source, note) from the runs' ``paper`` config."""
        for r in self.runs:
            p = r.config.get("paper")
            if not isinstance(p, Mapping):
                continue
            te = p.get("test_error")
            if isinstance(te, Mapping):
                te = te.get(self.row, te.get(r.rule))
            te = num(te)
            if te is not None:
                return te, p.get("source"), p.get("note")
        return None, None, None

    @property
    def paper_verified(self) -> bool:
        """Whether the runs' ``paper.verified`` says the published number was read
        in its source (the paper or its official results); absent: unverified."""
        for r in self.runs:
            p = r.config.get("paper")
            if isinstance(p, Mapping) and p.get("test_error") is not None:
                return p.get("verified") is True
        return False

    @property
    def below_chance(self) -> bool:
        """Mean test error above ``100 (1 - 1/C)`` %: worse than guessing."""
        te, c = self.test_error, {r.num_classes for r in self.ok} - {None}
        return te is not None and len(c) == 1 and te[0] > 100.0 * (1 - 1 / c.pop())

    def prediction_note(self) -> str:
        """Which prediction mode(s) the headline used (with how many seeds) and the
        rule's other predictions' mean test error, for rules that choose a mode."""
        modes = [r.prediction_mode for r in self.ok if r.prediction_mode]
        if not modes:
            return ""
        parts = [", ".join(f"{m} ({modes.count(m)})" for m in dict.fromkeys(modes))]
        errs: dict[str, list[float]] = {}
        for r in self.ok:
            for m, e in r.other_errors:
                errs.setdefault(m, []).append(e)
        parts += [f"{m} {sum(v) / len(v):.2f}" for m, v in errs.items()]
        return "; ".join(parts)

    def status_note(self) -> str:
        parts = []
        if self.n_diverged:
            parts.append(f"{self.n_diverged} diverged")
        if self.n_failed:
            parts.append(f"{self.n_failed} failed")
        return ", ".join(parts)


@dataclass
class Table:
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    extras: tuple[str, ...]

    @property
    def paper_columns(self) -> list[str]:
        return [
            c
            for c in self.columns
            if any(
                self.cells[(r, c)].paper[0] is not None
                for r in self.rows
                if (r, c) in self.cells
            )
        ]

    @property
    def caption(self) -> str:
        text = (
            "Test error (%) on the test split: mean ± sample standard deviation over "
            "seeds (n = seeds that finished). Diverged and failed runs are counted "
            "beside the number, never averaged into it."
        )
        runs = [r for cell in self.cells.values() for r in cell.runs]
        n_sel = sum(r.selected_epoch is not None for r in runs)
        if n_sel:
            text += (
                " Model selection on a validation split carved from train: the test "
                "error at the epoch with the best validation accuracy"
                + ("" if n_sel == len(runs) else " (runs without one: the last epoch)")
                + "."
            )
        sources, notes = [], []
        cells_all = list(self.cells.values())
        for cell in cells_all:
            _, src, note = cell.paper
            if src and src not in sources:
                sources.append(src)
            if note and note not in notes:
                notes.append(note)
        if sources:
            text += " Paper: " + "; ".join(sources) + "."
        if any(c.paper[0] is not None and not c.paper_verified for c in cells_all):
            text += (
                " (approx.): a published number not read in its source (a recalled "
                "or third-party value; docs/references.md), not verified."
            )
        for note in notes:
            text += " " + note.strip()
        cells = self.cells.values()
        if any(c.prediction_note() for c in cells):
            text += (
                " [...]: the prediction mode(s) behind the number (seeds using each), "
                "chosen per seed on the validation split (the training split without "
                "one), then the test error of the rule's other predictions."
            )
        if any(c.below_chance for c in cells):
            text += f" {BELOW_CHANCE} below chance: test error above 100 (1 - 1/C) %."
        return text


def build_table(
    runs: Sequence[RunRecord], extras: Sequence[str] = DEFAULT_EXTRAS
) -> Table:
    """Group ``runs`` by (row, column) into cells."""
    extras = [EXTRA_ALIASES.get(e, e) for e in extras]
    for e in extras:
        if e not in EXTRAS:
            raise ValueError(
                f"unknown extra column {e!r}; valid extras: "
                f"{list(EXTRAS) + list(EXTRA_ALIASES)}"
            )
    rows = row_labels(runs)
    cols = column_labels(runs)
    cells: dict[tuple[str, str], Cell] = {}
    for run, r, c in zip(runs, rows, cols):
        cells.setdefault((r, c), Cell(r, c)).runs.append(run)
    return Table(
        rows=sorted(set(rows), key=rule_key),
        columns=sorted(set(cols)),
        cells=cells,
        extras=tuple(extras),
    )


def duplicate_seeds(table: Table) -> list[str]:
    """Cells holding two runs with the same seed (e.g. the same sweep passed twice):
    one message per cell; such runs are not independent samples."""
    out = []
    for (r, c), cell in table.cells.items():
        seeds = [x.seed for x in cell.runs]
        dup = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        if dup:
            paths = [x.path for x in cell.runs if str(x.seed) in dup]
            out.append(
                f"{r} / {c}: seed {', '.join(dup)} appears {len(paths)} times "
                f"({', '.join(paths)})"
            )
    return out
