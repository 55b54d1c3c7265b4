"""Paper-style tables and plots from a directory of ``results.json`` files.

``python -m experiments.compare DIR`` reads every ``results.json`` under ``DIR`` (a
sweep directory, or several) and builds the comparison table of the papers: rows are
rules (with their variants), columns are datasets / configurations, cells are the test
error in percent, mean ± sample standard deviation over seeds, with the number of
seeds. Runs that diverged or failed are counted in the cell ("1 diverged"), never
averaged into a NaN. A "paper" column sits beside a configuration whose config names
published numbers::

    paper:                       # in an experiment config
      source: "Nøkland (2016), Table 1"
      test_error: {bp: 1.48, fa: 1.85, dfa: 1.82}   # or one number for every rule
      note: "..."                # appended to the caption

A config may also set ``column: <label>`` to name its column; otherwise the column is
the dataset plus the config values that differ between that dataset's runs (seeds,
rules, loggers and output paths aside), and a row is the rule plus the rule options
that differ between its runs (``bp (remat=true)``), or the config's ``row: <label>``
(e.g. ``row: "bp (${model.activation})"`` to give each activation its own row).

Plots (PNG and PDF, matplotlib's Agg backend), one set per column: learning curves per
rule with a min-max band over seeds, the alignment angle per stage over epochs, the
per-stage exact gradient norm over epochs on a log scale (the vanishing-gradient
picture) and, for models with 2-D inputs (``data=xor``), the decision boundary of each
row, drawn from the trained parameters the run left in its directory
(``checkpoint.msgpack``, written at the last epoch when
``trainer.checkpoint_every > 0``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bp_alternatives.atomic import atomic_path, write_atomic
from bp_alternatives.report import stats
from bp_alternatives.report.style import rule_key

RESULTS = "results.json"
CHECKPOINT = "checkpoint.msgpack"  # the trainer's last state (TrainState)
STATUSES = ("ok", "diverged", "failed")
EXTRAS = ("examples_per_second", "alignment")
# machine-dependent numbers (examples/s) only on request: --extras speed
DEFAULT_EXTRAS = ("alignment",)
EXTRA_ALIASES = {"speed": "examples_per_second"}
BELOW_CHANCE = "†"  # marks a cell whose test error is worse than guessing

# Config keys that never distinguish one table column from another.
_NOT_A_COLUMN = (
    "rule",
    "seed",
    "logger",
    "out_dir",
    "run_name",
    "paper",
    "column",
    "row",
    "data.name",
    "optimized_metric",
    "optimize_on_test",
    "hydra",
    "trainer.progress",
    "trainer.eval_chunk",
    "trainer.seeds",
    "trainer.data_parallel",
    "trainer.checkpoint_every",
    "trainer.compilation_cache_dir",
)


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


# ---------------------------------------------------------------------------- loading


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
    """Parse and check one ``results.json``; ``CompareError`` names the file and the
    field when it is malformed."""
    try:
        with open(path) as f:
            r = json.load(f)
    except json.JSONDecodeError as e:
        raise CompareError(f"{path}: malformed {RESULTS} (not JSON: {e})") from e
    except OSError as e:
        raise CompareError(f"{path}: cannot read ({e})") from e

    def bad(what: str) -> CompareError:
        return CompareError(f"{path}: malformed {RESULTS}: {what}")

    if not isinstance(r, dict):
        raise bad(f"expected an object, got {type(r).__name__}")
    status = r.get("status")
    if status not in STATUSES:
        raise bad(f"'status' is {status!r}, expected one of {list(STATUSES)}")
    rule = r.get("rule")
    if status != "failed" and not isinstance(rule, str):
        raise bad(f"'rule' is {rule!r}, expected a string")
    final = r.get("final")
    history = r.get("history")
    if status != "failed":
        if not isinstance(final, dict):
            raise bad("'final' missing or not an object")
        if not isinstance(history, list) or not all(
            isinstance(e, dict) for e in history
        ):
            raise bad("'history' missing or not a list of objects")
    final = final if isinstance(final, dict) else {}
    history = history if isinstance(history, list) else []
    test_acc = final.get("test_accuracy")
    if status == "ok" and not isinstance(test_acc, int | float):
        raise bad("'final.test_accuracy' missing or not a number in an ok run")
    # a run with a validation split reports the test numbers of the epoch selected on
    # it (results.json "selected", written by the trainer), not of the last epoch
    selected = r.get("selected") if isinstance(r.get("selected"), dict) else {}
    if status == "ok" and _num(selected.get("test_accuracy")) is not None:
        test_acc = selected["test_accuracy"]
    else:
        selected = {}
    config = r.get("config") if isinstance(r.get("config"), dict) else {}
    align = history[-1].get("alignment_deg") if history else None
    model = r.get("model") if isinstance(r.get("model"), dict) else {}
    shape, widths = model.get("input_shape"), model.get("widths")
    if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
        input_width = math.prod(shape)  # cnn, lenet
    elif model.get("name", "mlp") == "mlp" and isinstance(widths, list) and widths:
        input_width = widths[0] if isinstance(widths[0], int) else None
    else:
        input_width = None
    num_classes = r.get("num_classes")
    if not isinstance(num_classes, int) and isinstance(widths, list) and widths:
        num_classes = widths[-1] if isinstance(widths[-1], int) else None
    mode, others = _prediction(r, history, selected.get("epoch"))
    return RunRecord(
        path=path,
        rule=rule if isinstance(rule, str) else "?",
        dataset=str(r.get("dataset") or _get(config, "data.name") or "?"),
        seed=r.get("seed"),
        status=status,
        test_error=_error_pct(test_acc),
        selected_epoch=selected.get("epoch"),
        train_error=_error_pct(final.get("train_accuracy")),
        examples_per_second=_num(r.get("examples_per_second")),
        final_alignment=tuple(_num(a) for a in align)
        if isinstance(align, list)
        else None,
        history=tuple(history),
        config=config,
        error=r.get("error"),
        input_width=input_width,
        num_classes=num_classes if isinstance(num_classes, int) else None,
        prediction_mode=mode,
        other_errors=others,
    )


def _prediction(
    r: Mapping[str, Any], history: list, epoch: Any
) -> tuple[str | None, tuple[tuple[str, float], ...]]:
    """(headline prediction mode, test error % of the non-candidate modes) at the
    reported epoch (``epoch``: the selected one, else the last)."""
    pred = r.get("prediction")
    if not isinstance(pred, Mapping) or not history:
        return None, ()
    entry = next((e for e in history if e.get("epoch") == epoch), history[-1])
    candidates = pred.get("candidates") or ()
    others = []
    for k, v in entry.items():
        m = k.removeprefix("test_accuracy/")
        if m != k and m not in candidates and (err := _error_pct(v)) is not None:
            others.append((m, err))
    mode = entry.get("prediction_mode", pred.get("mode"))
    return (mode if isinstance(mode, str) else None), tuple(others)


def load_runs(dirs: Sequence[str]) -> list[RunRecord]:
    """Every run under ``dirs``."""
    return [load_run(p) for p in find_results(dirs)]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _error_pct(acc: Any) -> float | None:
    a = _num(acc)
    return None if a is None else 100.0 * (1.0 - a)


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for k in dotted.split("."):
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node


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


def row_labels(runs: Sequence[RunRecord]) -> list[str]:
    """The table row of each run: ``config.row`` if set, else the rule plus the rule
    options that differ between runs of that rule (``bp (remat=true)``)."""
    flats = [_flatten(r.config.get("rule") or {}) for r in runs]
    by_rule: dict[str, list[int]] = {}
    labels = [r.rule for r in runs]
    for i, r in enumerate(runs):
        explicit = r.config.get("row")
        if explicit:
            labels[i] = str(explicit)
        else:
            by_rule.setdefault(r.rule, []).append(i)
    for idx in by_rule.values():
        keys = _varying([flats[i] for i in idx], excluded=("name",))
        for i in idx:
            if keys:
                opts = ", ".join(f"{k}={flats[i].get(k, 'unset')}" for k in keys)
                labels[i] = f"{runs[i].rule} ({opts})"
    return labels


def column_labels(runs: Sequence[RunRecord]) -> list[str]:
    """The table column of each run: ``config.column`` if set, else the dataset plus
    the config values that differ between that dataset's runs."""
    labels: list[str] = [""] * len(runs)
    by_dataset: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        explicit = r.config.get("column")
        if explicit:
            labels[i] = str(explicit)
        else:
            by_dataset.setdefault(r.dataset, []).append(i)
    for dataset, idx in by_dataset.items():
        flats = [_flatten(runs[i].config) for i in idx]
        keys = _varying(flats, _NOT_A_COLUMN)
        for i, f in zip(idx, flats):
            opts = ", ".join(f"{k}={f.get(k, 'unset')}" for k in keys)
            labels[i] = f"{dataset} ({opts})" if keys else dataset
    return labels


# ------------------------------------------------------------------------------ table


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
            te = _num(te)
            if te is not None:
                return te, p.get("source"), p.get("note")
        return None, None, None

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
        for cell in self.cells.values():
            _, src, note = cell.paper
            if src and src not in sources:
                sources.append(src)
            if note and note not in notes:
                notes.append(note)
        if sources:
            text += " Paper: " + "; ".join(sources) + "."
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


def _cell_text(cell: Cell | None, latex: bool = False) -> str:
    if cell is None or not cell.runs:
        return "–"
    te = cell.test_error
    note = cell.status_note()
    if te is None:  # nothing finished: say how the runs ended
        return note or "–"
    mean, std = te
    n = len(cell.ok)
    pm = r"\pm" if latex else "±"
    num = f"{mean:.2f}" if std is None else f"{mean:.2f} {pm} {std:.2f}"
    if latex:
        num = f"${num}$"
    text = f"{num} ({n})" if latex else f"{num} (n={n})"
    text = f"{text}, {note}" if note else text
    if cell.prediction_note():
        text += f" [{cell.prediction_note()}]"
    return f"{text} {BELOW_CHANCE}" if cell.below_chance else text


def _fmt_eps(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _fmt_align(v: list[float | None] | None) -> str:
    if not v:
        return "–"
    return "/".join("–" if a is None else f"{a:.0f}" for a in v)


def _header_and_rows(table: Table, latex: bool) -> tuple[list[str], list[list[str]]]:
    paper_cols = set(table.paper_columns)
    many = len(table.columns) > 1
    header = ["rule"]
    for c in table.columns:
        header.append(c)
        if c in paper_cols:
            header.append(f"{c}: paper" if many else "paper")
        if "examples_per_second" in table.extras:
            header.append(f"{c}: examples/s" if many else "examples/s")
        if "alignment" in table.extras:
            name = "final alignment (deg/stage)"
            header.append(f"{c}: {name}" if many else name)
    body = []
    for r in table.rows:
        line = [r]
        for c in table.columns:
            cell = table.cells.get((r, c))
            line.append(_cell_text(cell, latex))
            if c in paper_cols:
                p = cell.paper[0] if cell else None
                line.append("–" if p is None else f"{p:.2f}")
            if "examples_per_second" in table.extras:
                line.append(_fmt_eps(cell.examples_per_second if cell else None))
            if "alignment" in table.extras:
                line.append(_fmt_align(cell.alignment if cell else None))
        body.append(line)
    return header, body


def to_markdown(table: Table) -> str:
    header, body = _header_and_rows(table, latex=False)

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [
        "| " + " | ".join(esc(h) for h in header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in body]
    return "\n".join(lines) + f"\n\n{table.caption}\n"


_LATEX_ESCAPES = {
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    BELOW_CHANCE: r"\dag{}",
}


def _tex(s: str) -> str:
    if s.startswith("$") or "$" in s:  # a cell with math: escape only outside $...$
        parts = s.split("$")
        return "$".join(p if i % 2 else _tex(p) for i, p in enumerate(parts))
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s).replace("–", "--")


def to_latex(table: Table) -> str:
    header, body = _header_and_rows(table, latex=True)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\hline",
        " & ".join(_tex(h) for h in header) + r" \\",
        r"\hline",
    ]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in body]
    lines += [
        r"\hline",
        r"\end{tabular}",
        r"\caption{" + _tex(table.caption).replace("±", r"$\pm$") + "}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "row",
    "rule",
    "column",
    "dataset",
    "n_runs",
    "n_ok",
    "n_diverged",
    "n_failed",
    "test_error_mean",
    "test_error_std",
    "train_error_mean",
    "examples_per_second",
    "final_alignment_deg",
    "paper_test_error",
    "paper_source",
    "seeds",
)


def csv_rows(table: Table) -> list[dict[str, Any]]:
    """One tidy row per cell (the CSV and the W&B table)."""
    out = []
    for r in table.rows:
        for c in table.columns:
            cell = table.cells.get((r, c))
            if cell is None:
                continue
            te = cell.test_error
            paper, source, _ = cell.paper
            out.append(
                {
                    "row": r,
                    "rule": cell.runs[0].rule,
                    "column": c,
                    "dataset": cell.runs[0].dataset,
                    "n_runs": len(cell.runs),
                    "n_ok": len(cell.ok),
                    "n_diverged": cell.n_diverged,
                    "n_failed": cell.n_failed,
                    "test_error_mean": None if te is None else te[0],
                    "test_error_std": None if te is None else te[1],
                    "train_error_mean": cell.train_error,
                    "examples_per_second": cell.examples_per_second,
                    "final_alignment_deg": _fmt_align(cell.alignment)
                    if cell.alignment
                    else None,
                    "paper_test_error": paper,
                    "paper_source": source,
                    "seeds": " ".join(str(x.seed) for x in cell.runs),
                }
            )
    return out


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in csv_rows(table):
        w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


FORMATS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}
SUFFIX = {"md": "md", "latex": "tex", "csv": "csv"}


# ------------------------------------------------------------------------------ plots


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_") or "all"


def _series(runs: Sequence[RunRecord], key: str, stage: int | None = None):
    """Per epoch: (epochs, mean, min, max) of ``history[key]`` (or its ``stage``-th
    entry) over ``runs``, skipping missing / non-finite values."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for i, entry in enumerate(run.history):
            v = entry.get(key)
            if stage is not None:
                v = v[stage] if isinstance(v, list) and stage < len(v) else None
            v = _num(v)
            if v is not None:
                by_epoch.setdefault(int(entry.get("epoch", i + 1)), []).append(v)
    epochs = sorted(by_epoch)
    vals = [by_epoch[e] for e in epochs]
    return (
        epochs,
        [sum(v) / len(v) for v in vals],
        [min(v) for v in vals],
        [max(v) for v in vals],
    )


def _num_stages(runs: Sequence[RunRecord], key: str) -> int:
    return max(
        (len(e[key]) for r in runs for e in r.history if isinstance(e.get(key), list)),
        default=0,
    )


def _atomic_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_atomic(path, text)


def _save(fig, out_dir: str, name: str) -> list[str]:
    """The figure as PNG and PDF, each rendered to a temp file and renamed: a killed
    comparison never leaves half an image under the final name."""
    paths = []
    for ext in ("png", "pdf"):
        p = os.path.join(out_dir, f"{name}.{ext}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=120)
        paths.append(p)
    return paths


def plot_all(
    runs: Sequence[RunRecord], out_dir: str, table: Table | None = None
) -> list[str]:
    """Write the plots for every column of the table; return the file paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table or build_table(runs, extras=())
    rows, cols = row_labels(runs), column_labels(runs)
    os.makedirs(out_dir, exist_ok=True)
    paths: list[str] = []
    for c in table.columns:
        by_row = {
            r: [run for run, rr, cc in zip(runs, rows, cols) if rr == r and cc == c]
            for r in table.rows
        }
        by_row = {r: v for r, v in by_row.items() if any(x.history for x in v)}
        if not by_row:
            continue
        slug = _slug(c)
        paths += _plot_curves(plt, by_row, c, out_dir, f"learning_curves_{slug}")
        for key, title, log, name in (
            ("alignment_deg", "alignment with the gradient (deg)", False, "alignment"),
            ("grad_norm", "exact gradient norm", True, "grad_norm"),
        ):
            paths += _plot_stages(
                plt, by_row, c, key, title, log, out_dir, f"{name}_{slug}"
            )
        if any(x.input_width == 2 for v in by_row.values() for x in v):
            paths += _plot_boundaries(
                plt, by_row, c, out_dir, f"decision_boundary_{slug}"
            )
    return paths


def restore_predictor(run: RunRecord):
    """``(dataset, scores_fn)`` of a finished run, rebuilt from its resolved config
    (``bp_alternatives.train.build_data`` / ``build_model`` / ``build_rule``) and the
    trained state the trainer left beside its ``results.json``
    (:data:`CHECKPOINT`, the last epoch's ``TrainState``); ``scores_fn(x) -> [B, C]``
    is the rule's prediction (the ``predict`` mode its headline used at the last
    epoch, e.g. FF's goodness of the chosen stages; else the first) or the
    model's output. ``None`` if the run left no state (``trainer.checkpoint_every=0``)
    or a state of another shape (``trainer.seeds``: one batched state per job). The
    state is the last epoch's, also where the table reports a best-validation epoch."""
    path = os.path.join(os.path.dirname(run.path), CHECKPOINT)
    if run.status != "ok" or not os.path.exists(path):
        return None
    import jax
    from flax import serialization
    from omegaconf import OmegaConf

    from bp_alternatives.model import init_params, output
    from bp_alternatives.train import build_data, build_model, build_rule, run_steps
    from bp_alternatives.trainer import read_checkpoint

    cfg = OmegaConf.create(run.config)
    data = build_data(cfg)
    model = build_model(cfg, data)
    _, rule = build_rule(cfg, model, *run_steps(cfg, data))
    _, raw = read_checkpoint(path)
    key = jax.random.PRNGKey(0)

    def restore(template, state_dict):
        tree = serialization.from_state_dict(template, state_dict)
        shapes = [jax.numpy.shape(a) for a in jax.tree_util.tree_leaves(tree)]
        if shapes != [jax.numpy.shape(a) for a in jax.tree_util.tree_leaves(template)]:
            raise ValueError("shape mismatch")
        return tree

    try:
        params = restore(init_params(model, key), raw["params"])
        if rule.predict is None:
            return data, jax.jit(lambda x: output(model, params, x))
        state = restore(rule.init(key, params), raw["rule_state"])
    except (KeyError, ValueError):
        return None

    # the mode the run's headline used at its last epoch (the state restored here);
    # a rule with one prediction: its first mode
    mode = run.history[-1].get("prediction_mode") if run.history else None

    def scores(x):
        pred = rule.predict(params, state, x)
        modes = {**pred.headline, **pred.others}
        return modes[mode] if mode in modes else next(iter(modes.values()))

    return data, jax.jit(scores)


def _panel_grid(plt, n: int, height: float, **kwargs):
    """(figure, its first ``n`` axes): up to 3 panels a row, ``height`` inches each
    row; the grid's spare axes are hidden."""
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(4 * ncols, height * nrows),
        squeeze=False,
        layout="constrained",
        **kwargs,
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _plot_boundaries(plt, by_row, column: str, out_dir: str, name: str) -> list[str]:
    """One panel per row: the first seed's score margin (shading) and decision
    boundary (solid), every other seed's boundary (dashed), the training points."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    panels = []
    for label, runs in by_row.items():
        restored = [
            (run, p)
            for run in sorted(runs, key=lambda r: str(r.seed))
            if run.input_width == 2 and (p := restore_predictor(run)) is not None
        ]
        if restored:
            panels.append((label, restored))
    if not panels:
        return []
    fig, axes = _panel_grid(plt, len(panels), 3.6)
    for ax, (label, restored) in zip(axes, panels):
        data = restored[0][1][0]
        x, y = np.asarray(data.x_train), np.asarray(data.y_train)
        pad = 0.25 * max(float(np.ptp(x[:, 0])), float(np.ptp(x[:, 1])), 1e-3)
        g0 = np.linspace(x[:, 0].min() - pad, x[:, 0].max() + pad, 200)
        g1 = np.linspace(x[:, 1].min() - pad, x[:, 1].max() + pad, 200)
        xx, yy = np.meshgrid(g0, g1)
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
        for i, (_, (_, scores_fn)) in enumerate(restored):
            s = np.asarray(scores_fn(grid), np.float64)
            if s.shape[-1] == 2:  # the margin: > 0 where class 1 wins
                z = (s[:, 1] - s[:, 0]).reshape(xx.shape)
                level = [0.0]
            else:  # several classes: the predicted class
                z = s.argmax(-1).reshape(xx.shape).astype(np.float64)
                level = list(np.arange(s.shape[-1] - 1) + 0.5)
            if i == 0:
                if s.shape[-1] == 2 and z.min() < 0 < z.max():
                    ax.contourf(
                        xx,
                        yy,
                        z,
                        levels=20,
                        cmap="RdBu_r",
                        norm=TwoSlopeNorm(0.0),
                        alpha=0.6,
                    )
                else:
                    ax.contourf(xx, yy, z, levels=20, cmap="RdBu_r", alpha=0.6)
            if z.min() < min(level) or z.max() > max(level):
                ax.contour(
                    xx,
                    yy,
                    z,
                    levels=level,
                    colors="k",
                    linewidths=1.5 if i == 0 else 0.8,
                    linestyles="solid" if i == 0 else "dashed",
                )
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=60, zorder=3)
        seeds = ", ".join(str(r.seed) for r, _ in restored)
        ax.set(title=f"{label} (seeds {seeds})", xlabel="x1", ylabel="x2")
    fig.suptitle(
        f"{column}: decision boundary (solid: seed "
        f"{panels[0][1][0][0].seed}'s, shaded by its margin; dashed: others)"
    )
    paths = _save(fig, out_dir, name)
    plt.close(fig)
    return paths


def _plot_curves(plt, by_row, column: str, out_dir: str, name: str) -> list[str]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for i, (label, runs) in enumerate(by_row.items()):
        color = f"C{i % 10}"
        diverged = [r for r in runs if r.status == "diverged"]
        legend = f"{label} ({len(runs)})"
        if diverged:  # its last epoch holds no finite loss: say so in the legend
            legend += f", {len(diverged)} diverged"
        for ax, key, scale in (
            (axes[0], "test_accuracy", True),
            (axes[1], "train_loss", False),
        ):
            ep, mean, lo, hi = _series(runs, key)
            if not ep:
                if ax is axes[0]:  # keep the row in the legend
                    ax.plot([], [], color=color, label=legend)
                continue
            if scale:  # accuracy -> error (%)
                mean, lo, hi = ([100 * (1 - v) for v in s] for s in (mean, hi, lo))
            marker = "o" if len(ep) == 1 else None  # a one-epoch series is a point
            ax.plot(ep, mean, color=color, label=legend, marker=marker)
            ax.fill_between(ep, lo, hi, color=color, alpha=0.2, linewidth=0)
    axes[0].set(xlabel="epoch", ylabel="test error (%)", title=column)
    axes[1].set(xlabel="epoch", ylabel="train loss", title=column)
    if any(line.get_ydata().min() > 0 for line in axes[1].get_lines()):
        axes[1].set_yscale("log")
    axes[0].legend(fontsize="small")
    paths = _save(fig, out_dir, name)
    plt.close(fig)
    return paths


def _plot_stages(
    plt, by_row, column: str, key: str, title: str, log: bool, out_dir: str, name: str
) -> list[str]:
    with_key = {r: v for r, v in by_row.items() if _num_stages(v, key)}
    if not with_key:
        return []
    # gradient norms: one scale (sharey), so rows compare at a glance
    fig, axes = _panel_grid(plt, len(with_key), 3.2, sharey=log)
    for ax, (label, runs) in zip(axes, with_key.items()):
        for s in range(_num_stages(runs, key)):
            ep, mean, lo, hi = _series(runs, key, stage=s)
            if log:  # a log axis shows positive values only
                keep = [i for i, v in enumerate(lo) if v > 0]
                ep, mean, lo, hi = (
                    [seq[i] for i in keep] for seq in (ep, mean, lo, hi)
                )
            if not ep:
                continue
            ax.plot(ep, mean, color=f"C{s % 10}", label=f"stage {s}")
            ax.fill_between(ep, lo, hi, color=f"C{s % 10}", alpha=0.2, linewidth=0)
        if log and ax.get_lines():
            ax.set_yscale("log")
        if key == "alignment_deg":  # 0 = the gradient, 90 = orthogonal to it
            ax.set_ylim(0, max(95.0, ax.get_ylim()[1]))
        ax.set(xlabel="epoch", ylabel=title, title=label)
        if ax.get_lines():
            ax.legend(fontsize="x-small")
    fig.suptitle(column)
    paths = _save(fig, out_dir, name)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------- W&B aggregate


def log_to_wandb(
    table: Table,
    plot_paths: Sequence[str],
    *,
    mode: str = "offline",
    project: str = "bp-alternatives",
    entity: str | None = None,
    group: str | None = None,
    directory: str = ".",
    config: Mapping[str, Any] | None = None,
    init_timeout: float = 30.0,
) -> str | None:
    """Log the table (a ``wandb.Table``) and the PNG plots (``wandb.Image``) to one
    aggregate run (``job_type=compare``); return the run's directory. ``mode`` and
    ``init_timeout`` as in ``writers.init_wandb`` (online falls back to offline)."""
    import wandb

    from bp_alternatives.writers import init_wandb

    run = init_wandb(
        mode=mode,
        init_timeout=init_timeout,
        project=project,
        entity=entity,
        group=group,
        job_type="compare",
        name=f"compare-{group}" if group else "compare",
        dir=directory,
        config=dict(config or {}),
    )
    try:
        rows = csv_rows(table)
        wt = wandb.Table(
            columns=list(CSV_FIELDS), data=[[r[k] for k in CSV_FIELDS] for r in rows]
        )
        images = {
            f"plots/{os.path.splitext(os.path.basename(p))[0]}": wandb.Image(p)
            for p in plot_paths
            if p.endswith(".png")
        }
        run.log({"comparison": wt, **images})
        run.summary["caption"] = table.caption
        run.summary["markdown"] = to_markdown(table)
        return getattr(run, "dir", None)
    finally:
        run.finish()


# -------------------------------------------------------------------------------- CLI


def write_outputs(
    runs: Sequence[RunRecord], table: Table, out_dir: str, plots: bool = True
) -> list[str]:
    """Write ``table.{md,tex,csv}``, the table with statistics
    (``stats.{md,csv}``, ``paper.tex``: ``report.stats``) and (``plots``) the plots
    into ``out_dir``; return the plot paths."""
    os.makedirs(out_dir, exist_ok=True)
    for fmt, fn in FORMATS.items():
        _atomic_text(os.path.join(out_dir, f"table.{SUFFIX[fmt]}"), fn(table))
    for name, text in stats.render_all(table).items():
        _atomic_text(os.path.join(out_dir, name), text)
    return plot_all(runs, out_dir, table) if plots else []


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.compare DIR [DIR ...] [--format md|latex|csv]
    [--out FILE] [--plots-dir DIR | --no-plots] [--extras ...] [--wandb MODE]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m experiments.compare",
        description="Paper-style table and plots from every results.json under DIR.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep or run directories")
    p.add_argument("--format", choices=sorted(FORMATS), default="md")
    p.add_argument(
        "--paper",
        action="store_true",
        help="print the table with statistics as booktabs LaTeX (dataset over metric)",
    )
    p.add_argument("--out", help="write the table here instead of printing it")
    p.add_argument(
        "--plots-dir",
        help="where table.{md,tex,csv} and the plots go (default: DIR/compare)",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument(
        "--extras",
        default=",".join(DEFAULT_EXTRAS),
        help="extra columns, comma-separated from "
        f"{list(EXTRAS) + list(EXTRA_ALIASES)}, or 'none' (speed: examples/s)",
    )
    p.add_argument(
        "--wandb",
        choices=["online", "offline", "disabled"],
        help="also log the table and plots to one aggregate W&B run",
    )
    p.add_argument("--wandb-project", default="bp-alternatives")
    p.add_argument("--wandb-entity", default=None)
    p.add_argument("--wandb-group", default=None)
    args = p.parse_args(argv)

    extras = [] if args.extras in ("", "none") else args.extras.split(",")
    try:
        runs = load_runs(args.dirs)
        table = build_table(runs, extras=extras)
    except (CompareError, ValueError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2

    for message in duplicate_seeds(table):
        print(f"compare: warning: {message}", file=sys.stderr)
    text = FORMATS[args.format](table)
    if args.paper or args.format == "md":
        rendered = stats.render_all(table)
        text = (
            rendered["paper.tex"] if args.paper else f"{text}\n{rendered['stats.md']}"
        )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        _atomic_text(args.out, text)
    else:
        print(text, end="")

    out_dir = args.plots_dir or os.path.join(args.dirs[0], "compare")
    plots = write_outputs(runs, table, out_dir, plots=not args.no_plots)
    counts = {s: sum(r.status == s for r in runs) for s in STATUSES}
    print(
        f"\n{len(runs)} runs ({counts['ok']} ok, {counts['diverged']} diverged, "
        f"{counts['failed']} failed)"
        + (f"; table written to {args.out}" if args.out else "")
        + f"; tables{' and plots' if plots else ''} in {out_dir}/"
        + (f" ({len(plots)} plot files)" if plots else "")
    )
    if args.wandb:
        group = args.wandb_group or os.path.basename(os.path.abspath(args.dirs[0]))
        log_to_wandb(
            table,
            plots,
            mode=args.wandb,
            project=args.wandb_project,
            entity=args.wandb_entity,
            group=group,
            directory=out_dir,
            config={"dirs": [os.path.abspath(d) for d in args.dirs]},
        )
    return 0


if __name__ == "__main__":  # python -m bp_alternatives.compare: bpa-compare
    import sys

    sys.exit(main())
