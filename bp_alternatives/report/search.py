"""The protocol's report: the table with statistics (:mod:`.stats`), the search
summary and the figures (:mod:`.figures`) in ``<out_dir>/report/``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bp_alternatives.compare import build_table, load_runs
from bp_alternatives.report import figures, stats


def write_report(out_dir: str, found: Mapping[str, Mapping[str, Any]]) -> str:
    """The table with statistics, the search summary and the figures in
    ``<out_dir>/report/``; return the Markdown table."""
    report = os.path.join(out_dir, "report")
    os.makedirs(report, exist_ok=True)
    runs = load_runs([os.path.join(out_dir, "eval")])
    table = build_table(runs)
    files = stats.render_all(table) | {"search.md": search_markdown(found)}
    for name, text in files.items():
        with open(os.path.join(report, name), "w") as f:
            f.write(text)
    figures.write_all(runs, found, report)
    print(f"\n{files['search.md']}\n{files['stats.md']}\n[protocol] report: {report}/")
    return files["stats.md"]


def search_markdown(found: Mapping[str, Mapping[str, Any]]) -> str:
    """One line per rule: the budget, the chosen point and its validation value."""
    lines = [
        "| rule | trials × epochs | finished | chosen | validation |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rule, f in found.items():
        done = sum(t["value"] is not None for t in f["trials"])
        chosen = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in f["chosen"]["params"].items()
        )
        chosen += "".join(
            f", {k}={v} (fixed)" for k, v in (f.get("fixed") or {}).items()
        )
        lines.append(
            f"| {rule} | {f['budget']['trials']} × {f['budget']['epochs']} | {done} | "
            f"{chosen} | {f['metric']}={f['chosen']['value']:.4f} |"
        )
    return "\n".join(lines) + "\n"
