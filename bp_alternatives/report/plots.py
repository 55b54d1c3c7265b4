"""The comparison's plots, one set per table column (PNG and PDF, matplotlib's Agg
backend): learning curves per row with a min-max band over seeds, the alignment angle
per stage over epochs, the per-stage exact gradient norm over epochs on a log scale
(the vanishing-gradient picture) and, for models with 2-D inputs (``data=xor``), the
decision boundary of each row, drawn from the trained state the run left in its
directory (``restore.restore``: ``checkpoint.msgpack``, written at the last epoch
when ``trainer.checkpoint_every > 0``)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import jax
import numpy as np

from bp_alternatives.report import style
from bp_alternatives.report.figures import num_stages, series
from bp_alternatives.report.runs import RunRecord
from bp_alternatives.report.table import Table, build_table, column_labels, row_labels
from bp_alternatives.restore import restore

STAGE_PLOTS = (  # history key, y label, log scale, file name
    ("alignment_deg", "alignment with the gradient (deg)", False, "alignment"),
    ("grad_norm", "exact gradient norm", True, "grad_norm"),
)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_") or "all"


def _save(plt, fig, out_dir: str, name: str) -> list[str]:
    paths = style.save(fig, out_dir, name, dpi=120, tight=False)
    plt.close(fig)
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
        for key, title, log, name in STAGE_PLOTS:
            paths += _plot_stages(
                plt, by_row, c, (key, title, log), out_dir, f"{name}_{slug}"
            )
        if any(x.input_width == 2 for v in by_row.values() for x in v):
            paths += _plot_boundaries(
                plt, by_row, c, out_dir, f"decision_boundary_{slug}"
            )
    return paths


def restore_predictor(run: RunRecord):
    """``(dataset, scores_fn)`` of a finished run (``restore.restore`` of its
    directory); ``scores_fn(x) -> [B, C]`` is the rule's prediction (the ``predict``
    mode its headline used at the last epoch, e.g. FF's goodness of the chosen
    stages; else the first) or the model's output. ``None`` if the run left no state
    (``trainer.checkpoint_every=0``) or a state of another shape (``trainer.seeds``:
    one batched state per job). The state is the last epoch's, also where the table
    reports a best-validation epoch."""
    if run.status != "ok":
        return None
    restored = restore(os.path.dirname(run.path))
    return None if restored is None else (restored.data, jax.jit(restored.scores))


def _boundary_grid(x: np.ndarray):
    """A 200 x 200 grid over the training points plus a margin: (xx, yy, points)."""
    pad = 0.25 * max(float(np.ptp(x[:, 0])), float(np.ptp(x[:, 1])), 1e-3)
    g0 = np.linspace(x[:, 0].min() - pad, x[:, 0].max() + pad, 200)
    g1 = np.linspace(x[:, 1].min() - pad, x[:, 1].max() + pad, 200)
    xx, yy = np.meshgrid(g0, g1)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


def _draw_boundary(ax, xx, yy, s: np.ndarray, first: bool) -> None:
    """The decision boundary of scores ``s`` on the grid: solid for the first seed
    (shaded by its margin), dashed for the others."""
    from matplotlib.colors import TwoSlopeNorm

    if s.shape[-1] == 2:  # the margin: > 0 where class 1 wins
        z = (s[:, 1] - s[:, 0]).reshape(xx.shape)
        level = [0.0]
    else:  # several classes: the predicted class
        z = s.argmax(-1).reshape(xx.shape).astype(np.float64)
        level = list(np.arange(s.shape[-1] - 1) + 0.5)
    if first:
        norm = TwoSlopeNorm(0.0) if s.shape[-1] == 2 and z.min() < 0 < z.max() else None
        ax.contourf(xx, yy, z, levels=20, cmap="RdBu_r", norm=norm, alpha=0.6)
    if z.min() < min(level) or z.max() > max(level):
        ax.contour(
            xx,
            yy,
            z,
            levels=level,
            colors="k",
            linewidths=1.5 if first else 0.8,
            linestyles="solid" if first else "dashed",
        )


def _plot_boundaries(plt, by_row, column: str, out_dir: str, name: str) -> list[str]:
    """One panel per row: the first seed's score margin (shading) and decision
    boundary (solid), every other seed's boundary (dashed), the training points."""
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
    fig, axes = style.panel_grid(plt, len(panels), (4, 3.6))
    for ax, (label, restored) in zip(axes, panels):
        data = restored[0][1][0]
        x, y = np.asarray(data.x_train), np.asarray(data.y_train)
        xx, yy, grid = _boundary_grid(x)
        for i, (_, (_, scores_fn)) in enumerate(restored):
            _draw_boundary(ax, xx, yy, np.asarray(scores_fn(grid), np.float64), i == 0)
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="RdBu_r", edgecolors="k", s=60, zorder=3)
        seeds = ", ".join(str(r.seed) for r, _ in restored)
        ax.set(title=f"{label} (seeds {seeds})", xlabel="x1", ylabel="x2")
    fig.suptitle(
        f"{column}: decision boundary (solid: seed "
        f"{panels[0][1][0][0].seed}'s, shaded by its margin; dashed: others)"
    )
    return _save(plt, fig, out_dir, name)


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
            ep, mean, lo, hi = series(runs, key, band="range")
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
    return _save(plt, fig, out_dir, name)


def _plot_stages(
    plt, by_row, column: str, what: tuple[str, str, bool], out_dir: str, name: str
) -> list[str]:
    """One panel per row: history ``key`` per stage over epochs (``what``: key, y
    label, log scale), min-max band over seeds."""
    key, title, log = what
    with_key = {r: v for r, v in by_row.items() if num_stages(v, key)}
    if not with_key:
        return []
    # gradient norms: one scale (sharey), so rows compare at a glance
    fig, axes = style.panel_grid(plt, len(with_key), (4, 3.2), sharey=log)
    for ax, (label, runs) in zip(axes, with_key.items()):
        for s in range(num_stages(runs, key)):
            ep, mean, lo, hi = series(runs, key, stage=s, band="range")
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
    return _save(plt, fig, out_dir, name)
