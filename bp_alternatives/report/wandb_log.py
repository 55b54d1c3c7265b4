"""The comparison as one aggregate W&B run (``job_type=compare``): the table as a
``wandb.Table`` and the PNG plots as ``wandb.Image``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from bp_alternatives.report.render import CSV_FIELDS, csv_rows, to_markdown
from bp_alternatives.report.table import Table
from bp_alternatives.writers import init_wandb


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
