"""The comparison table as text: Markdown, LaTeX and CSV (one tidy row per cell,
also the W&B table), and every output file of a comparison (:func:`write_outputs`)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

from bp_alternatives.atomic import write_atomic
from bp_alternatives.report import stats
from bp_alternatives.report.plots import plot_all
from bp_alternatives.report.runs import RunRecord
from bp_alternatives.report.table import BELOW_CHANCE, Cell, Table


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
                approx = "" if p is None or cell.paper_verified else " (approx.)"
                line.append("–" if p is None else f"{p:.2f}{approx}")
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


def write_outputs(
    runs: Sequence[RunRecord], table: Table, out_dir: str, plots: bool = True
) -> list[str]:
    """Write ``table.{md,tex,csv}``, the table with statistics
    (``stats.{md,csv}``, ``paper.tex``: ``report.stats``) and (``plots``) the plots
    into ``out_dir``; return the plot paths."""
    os.makedirs(out_dir, exist_ok=True)
    for fmt, fn in FORMATS.items():
        write_atomic(os.path.join(out_dir, f"table.{SUFFIX[fmt]}"), fn(table))
    for name, text in stats.render_all(table).items():
        write_atomic(os.path.join(out_dir, name), text)
    return plot_all(runs, out_dir, table) if plots else []
