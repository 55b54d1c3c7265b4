"""The figures of docs/article_claims.md, from ``scripts/article_claims.py``'s JSON
files and the ``article_claims_*`` sweeps (``results.json`` files read through
``bp_alternatives.report.runs``). Colours, line styles and markers per rule come from
``bp_alternatives.report.style``."""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from typing import Any

from bp_alternatives.report import style
from bp_alternatives.report.runs import RunRecord, load_runs

MIB = 2**20


def _rows(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return json.load(f)["rows"]


def _label(rule: str) -> str:
    return rule.replace("manual_bp", "manual bp")


def _cost_panel(ax, ok: list[dict[str, Any]]) -> None:
    """Bars of update / forward per rule: FLOPs (solid), CPU time (hatched), each
    labelled with its value; log scale from 1 (the forward pass alone)."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    for off, key, hatch in ((-0.2, "flops_ratio", None), (0.2, "cpu_ratio", "//")):
        for x, r in enumerate(ok):
            v = r.get(key)
            if v is None:
                continue
            ax.bar(
                x + off,
                v - 1,
                bottom=1,
                width=0.4,
                color=style.rule_style(r["rule"])["color"],
                edgecolor="0.2",
                hatch=hatch,
            )
            ax.text(x + off, v * 1.04, f"{v:.1f}", ha="center", va="bottom", size=6)
    ax.axhline(2, color="0.4", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(1, 100)
    ax.yaxis.set_major_locator(FixedLocator([1, 2, 3, 5, 10, 20, 50, 100]))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    labels = [_label(r["rule"]) for r in ok]
    ax.set_xticks(range(len(ok)), labels, rotation=30, ha="right")
    ax.set_ylabel("one training direction / one forward pass")
    ax.legend(
        handles=[
            Patch(facecolor="white", edgecolor="0.2", label="XLA FLOPs"),
            Patch(facecolor="white", edgecolor="0.2", hatch="//", label="CPU time"),
            plt_line(ax, "2 = backward costs the same as forward"),
        ],
        loc="upper left",
    )


def plot_cost(path: str, out_dir: str) -> list[str]:
    """claims_cost: training direction / forward pass, FLOPs and CPU time, per rule
    and architecture (log scale), the article's claim as a line at 2."""
    plt = style.pyplot()
    rows = _rows(path)
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = plt.subplots(1, len(archs), figsize=(5.4 * len(archs), 3.9))
    for ax, arch in zip(axes, archs):
        ok = [r for r in rows if r["arch"] == arch and "error" not in r]
        _cost_panel(ax, ok)
        skipped = [r["rule"] for r in rows if r["arch"] == arch and "error" in r]
        note = f"\n(not supported: {', '.join(skipped)})" if skipped else ""
        ax.set_title(f"{arch}, batch {ok[0]['batch_size']}{note}")
    caption = (
        "Cost of one training direction (rule.update: forward, loss, and the rule's "
        "backward or replacement) over one forward pass, per rule: XLA's compiled "
        "FLOP count (solid) and CPU time on 2 shared CPU cores (hatched; the "
        "median over 9 alternating rounds of the per-round ratio); "
        "log scale. Dotted line: a backward pass costing the same as the forward. "
        "XLA counts a loop body once, so pc's and ep's FLOP bars leave out their "
        "inference / relaxation iterations; their CPU time includes them."
    )
    return style.save(fig, out_dir, "claims_cost", caption)


def plot_memory(paths: list[str], out_dir: str) -> list[str]:
    """claims_memory: compiled working memory (temp) of rule.update vs depth."""
    plt = style.pyplot()
    rows = [r for path in paths for r in _rows(path) if "error" not in r]
    fig, ax = plt.subplots(figsize=(7.6, 3.8))
    by_rule: dict[str, list] = defaultdict(list)
    for r in rows:
        by_rule[r["rule"]].append(r)
    for rule in sorted(by_rule, key=style.rule_key):
        rs = sorted(by_rule[rule], key=lambda r: r["depth"])
        s = style.rule_style(rule)
        if "remat" in rule:  # bp's variants: bp's colour family, own line and marker
            per_stage = rule == "bp (remat)"
            s.update(
                color=style.OKABE_ITO["sky blue"],
                linestyle="--" if per_stage else ":",
                marker="o" if per_stage else "x",
            )
        d = [r["depth"] for r in rs]
        ax.plot(d, [r["temp_size_in_bytes"] / MIB for r in rs], label=rule, **s)
    ref = sorted(by_rule["bp"], key=lambda r: r["depth"])
    ax.plot(
        [r["depth"] for r in ref],
        [r["activation_bytes"] / MIB for r in ref],
        color="0.5",
        lw=4,
        alpha=0.3,
        label="one float32 per hidden unit\nper example",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks([r["depth"] for r in ref], [str(r["depth"]) for r in ref])
    ax.set_xlabel("hidden stages L (width 256)")
    ax.set_ylabel("XLA temp buffers of one update (MiB)")
    ax.set_title(f"MLP 784-[256 x L]-10 tanh, batch {ref[0]['batch_size']}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    caption = (
        "Working memory (XLA compiled memory_analysis temp_size: buffers live "
        "during the update besides inputs and outputs) of one training direction "
        "vs depth, per rule (fa's curve lies on bp's, bp (remat)'s on dfa's); "
        "bp (remat) wraps every stage in jax.checkpoint, bp (remat per sqrt(L) "
        "stages) segments of about sqrt(L) "
        "stages (scripts/article_claims.py). "
        "Grey band: one float32 per hidden unit per example (the activations "
        "backprop stores)."
    )
    return style.save(fig, out_dir, "claims_memory", caption)


def _act(r: RunRecord) -> str:
    return str(r.config["model"]["activation"])


def _error_bars(ax, runs: list[RunRecord], acts: list[str]) -> None:
    """Test error per rule, one bar per activation (the first solid, the next
    hatched); a run that diverged gets a label instead of a bar."""
    from matplotlib.patches import Patch

    rules = sorted({r.rule for r in runs}, key=style.rule_key)
    hatches = [None, "//", ".."]
    for i, act in enumerate(acts):
        by_rule = {r.rule: r for r in runs if _act(r) == act}
        for j, rule in enumerate(rules):
            x, r = j + (i - (len(acts) - 1) / 2) * 0.4, by_rule.get(rule)
            if r is not None and r.test_error is not None:
                ax.bar(
                    x,
                    r.test_error,
                    width=0.4,
                    color=style.rule_style(rule)["color"],
                    edgecolor="0.2",
                    hatch=hatches[i],
                )
            elif r is not None:
                ax.text(x, 2, r.status, rotation=90, ha="center", va="bottom")
    ax.axhline(90, color="0.4", ls=":", lw=1)
    handles = [
        Patch(facecolor="white", edgecolor="0.2", hatch=hatches[i], label=act)
        for i, act in enumerate(acts)
    ]
    handles.append(plt_line(ax, "chance (90%)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    ax.set_xticks(range(len(rules)), [_label(r) for r in rules])
    ax.set_ylim(0, 100)


def plt_line(ax, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.4", ls=":", lw=1, label=label)


def plot_vanishing(sweep: str, out_dir: str) -> list[str]:
    """claims_vanishing: per-stage update norm after epoch 1 per rule, one panel per
    activation, and the test errors."""
    plt = style.pyplot()
    runs = [r for r in load_runs([sweep]) if r.history]
    acts = sorted({_act(r) for r in runs}, key=lambda a: a != "sigmoid")
    fig, axes = plt.subplots(1, len(acts) + 1, figsize=(4.4 * (len(acts) + 1), 3.6))
    fig.subplots_adjust(wspace=0.32)
    for ax, act in zip(axes, acts):
        for r in sorted(
            (r for r in runs if _act(r) == act), key=lambda r: style.rule_key(r.rule)
        ):
            norms = r.history[0]["update_norm"]
            stages = range(1, len(norms) + 1)
            ax.plot(stages, norms, label=_label(r.rule), **style.rule_style(r.rule))
        ax.set_yscale("log")
        ax.set_xticks(list(stages))
        ax.set_xlabel("stage (1 = first hidden, 9 = read-out)")
        ax.set_ylabel("norm of the stage's update direction")
        ax.set_title(f"{act}: per-stage update norm, epoch 1")
        ax.legend(loc="best")
    _error_bars(axes[-1], runs, acts)
    axes[-1].set_ylabel("test error after 20 epochs (%)")
    axes[-1].set_title("test error after 20 epochs")
    caption = (
        "Vanishing gradients per rule: digits, 64-[32 x 8]-10, xavier init, SGD 0.1, "
        "20 epochs, seed 0 (experiment=article_claims_vanishing). Left panels: norm "
        "of each stage's update direction on the probe batch (256 training "
        "examples) after epoch 1 (for bp the exact gradient). Right: test error "
        "after 20 epochs."
    )
    return style.save(fig, out_dir, "claims_vanishing", caption)


def _mean_std(values: list[float]) -> tuple[float, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), sd


def _scaling_series(runs: list[RunRecord], x_of) -> dict[str, dict]:
    """rule -> {x: ([test errors], [mean hidden-stage alignment])} over seeds."""
    out: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for r in runs:
        if r.test_error is None:
            continue
        x = x_of(r.config["model"]["hidden"])
        out[r.rule][x][0].append(r.test_error)
        hidden_align = [a for a in (r.final_alignment or ())[:-1] if a is not None]
        if hidden_align:
            out[r.rule][x][1].append(statistics.mean(hidden_align))
    return out


def _plot_scaling_column(axes, runs, x_of, xlabel: str) -> None:
    series = _scaling_series(runs, x_of)
    for rule in sorted(series, key=style.rule_key):
        xs = sorted(series[rule])
        s = style.rule_style(rule)
        for ax, k in zip(axes, (0, 1)):
            pts = [
                (x, *_mean_std(series[rule][x][k])) for x in xs if series[rule][x][k]
            ]
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    yerr=[p[2] for p in pts],
                    label=_label(rule),
                    capsize=2,
                    **s,
                )
    for ax in axes:
        ax.set_xscale("log", base=2)
        ticks = sorted({x_of(r.config["model"]["hidden"]) for r in runs})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("test error (%)")
    axes[0].axhline(90, color="0.4", ls=":", lw=1, label="chance (90%)")
    axes[1].set_ylabel("angle to the exact gradient (deg)\nmean over hidden stages")
    axes[1].axhline(90, color="0.4", ls=":", lw=1)
    axes[1].text(axes[1].get_xlim()[0], 91, " 90 = orthogonal", va="bottom", size=7)


def plot_scaling(depth: str, width: str | None, out_dir: str) -> list[str]:
    """claims_scaling: test error and alignment vs depth (left) and, where the
    width sweep has runs, vs width (right)."""
    plt = style.pyplot()
    width_runs = load_runs([width]) if width and os.path.isdir(width) else []
    ncols = 2 if width_runs else 1
    fig, axes = plt.subplots(
        2, ncols, figsize=(4.8 * ncols, 6.6), sharey="row", squeeze=False
    )
    _plot_scaling_column(
        axes[:, 0], load_runs([depth]), len, "hidden stages (width 100)"
    )
    axes[0, 0].set_title("deeper")
    if width_runs:
        _plot_scaling_column(
            axes[:, 1], width_runs, lambda h: h[0], "width (4 hidden stages)"
        )
        axes[0, 1].set_title("wider")
        for ax in axes[:, 1]:  # rows share their y axis with the left column
            ax.set_ylabel("")
    axes[0, 0].legend()
    caption = (
        "Scaling per rule on MNIST-1D (4000 train / 1000 test), ReLU MLP, Adam 1e-3, "
        "batch 100, 20 epochs (a small budget), mean +- std over 2 seeds "
        "(experiment=article_claims_depth, article_claims_width). Top: test error "
        "after the last epoch. Bottom: angle between the rule's direction and the "
        "exact gradient on the probe batch after the last epoch, mean over the "
        "hidden stages (90 = orthogonal)."
    )
    return style.save(fig, out_dir, "claims_scaling", caption)


def plot_all(a) -> list[str]:
    """Every figure whose inputs ``a`` (the ``plot`` sub-command's arguments) name."""
    out = []
    if a.cost:
        out += plot_cost(a.cost, a.figures)
    if a.memory:
        out += plot_memory(a.memory, a.figures)
    if a.vanishing:
        out += plot_vanishing(a.vanishing, a.figures)
    if a.depth:
        out += plot_scaling(a.depth, a.width, a.figures)
    return [p for p in out if os.path.exists(p)]
