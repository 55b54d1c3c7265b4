"""``bpa-compare`` / ``python -m bp_alternatives.compare`` /
``python -m experiments.compare``: paper-style tables and plots from a directory of
``results.json`` files.

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

A config may also set ``column: <label>`` to name its column and ``row: <label>`` to
name its row (``report.table``). The work is done in ``bp_alternatives.report``:
``runs`` (loading, through ``bp_alternatives.results``), ``table``, ``render``
(Markdown, LaTeX, CSV), ``stats``, ``plots`` and ``wandb_log``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bp_alternatives.atomic import write_atomic
from bp_alternatives.report import stats
from bp_alternatives.report.plots import plot_all, restore_predictor
from bp_alternatives.report.render import (
    CSV_FIELDS,
    FORMATS,
    SUFFIX,
    csv_rows,
    to_csv,
    to_latex,
    to_markdown,
    write_outputs,
)
from bp_alternatives.report.runs import (
    RESULTS,
    STATUSES,
    CompareError,
    RunRecord,
    find_results,
    load_run,
    load_runs,
)
from bp_alternatives.report.table import (
    BELOW_CHANCE,
    DEFAULT_EXTRAS,
    EXTRA_ALIASES,
    EXTRAS,
    Cell,
    Table,
    build_table,
    column_labels,
    duplicate_seeds,
    row_labels,
)
from bp_alternatives.report.wandb_log import log_to_wandb

# the names other modules import from here; the report's own home is report/
__all__ = [
    "BELOW_CHANCE",
    "CSV_FIELDS",
    "RESULTS",
    "SUFFIX",
    "Cell",
    "CompareError",
    "RunRecord",
    "Table",
    "build_table",
    "column_labels",
    "csv_rows",
    "duplicate_seeds",
    "find_results",
    "load_run",
    "load_runs",
    "log_to_wandb",
    "default_out_dir",
    "main",
    "plot_all",
    "restore_predictor",
    "row_labels",
    "to_csv",
    "to_latex",
    "to_markdown",
    "write_outputs",
]


def _parser() -> argparse.ArgumentParser:
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
        help="where table.{md,tex,csv} and the plots go (default: DIR/compare; "
        "several DIRs: compare-<A>+<B> in their common parent)",
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
    return p


def default_out_dir(dirs: Sequence[str]) -> str:
    """Where the tables and plots go without ``--plots-dir``: ``DIR/compare`` for
    one directory; for several, ``compare-<A>+<B>...`` in their common parent, so
    the combined table never overwrites a sweep's own ``compare/``."""
    if len(dirs) == 1:
        return os.path.join(dirs[0], "compare")
    paths = [os.path.abspath(d) for d in dirs]
    names = "+".join(os.path.basename(p.rstrip(os.sep)) or "root" for p in paths)
    return os.path.join(os.path.commonpath(paths), f"compare-{names}"[:200])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.compare DIR [DIR ...] [--format md|latex|csv]
    [--out FILE] [--plots-dir DIR | --no-plots] [--extras ...] [--wandb MODE]``."""
    args = _parser().parse_args(argv)

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
        write_atomic(args.out, text)
    else:
        print(text, end="")

    out_dir = args.plots_dir or default_out_dir(args.dirs)
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
    sys.exit(main())
