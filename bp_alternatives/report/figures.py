"""The protocol's figures (``report.style`` owns the look): test error over epochs
and at the end, the alignment angle per stage, the exact gradient norm per stage,
and the search (validation metric against learning rate). Each figure is a PNG and a
PDF with its caption in a ``.txt`` beside it.

Bands are 95% confidence intervals of the mean over seeds (Student's t,
``report.stats.summarise``), never min-max; on a log axis the mean and interval are
those of the log values (a geometric mean), so a band never crosses zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bp_alternatives.report import style
from bp_alternatives.report.stats import summarise

ZERO_DEG = 0.5  # an angle below this at every epoch is 0 up to float rounding


def by_rule(runs: Sequence) -> dict[str, list]:
    """Runs (``runs.RunRecord``) with a history, grouped by row, in rule order."""
    out: dict[str, list] = {}
    for r in runs:
        if r.history:
            out.setdefault(str(r.config.get("row") or r.rule), []).append(r)
    return {k: out[k] for k in sorted(out, key=style.rule_key)}


def series(
    runs: Sequence,
    key: str,
    stage: int | None = None,
    scale=None,
    log: bool = False,
    band: str = "ci",
):
    """Per epoch: (epochs, mean, low, high) of ``history[key]`` (its ``stage``-th
    entry) over ``runs``, skipping missing and non-finite values; ``scale`` maps each
    value first; ``log``: statistics of log10 of the (positive) values, returned
    exponentiated. ``band``: ``"ci"`` (the mean's 95% t-interval) or ``"range"``
    (min and max over runs)."""
    per_epoch: dict[int, list[float]] = {}
    for run in runs:
        for i, entry in enumerate(run.history):
            v = entry.get(key)
            if stage is not None:
                v = v[stage] if isinstance(v, list) and stage < len(v) else None
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if math.isfinite(v):
                v = scale(v) if scale else v
                if log and v <= 0:
                    continue
                v = math.log10(v) if log else v
                per_epoch.setdefault(int(entry.get("epoch", i + 1)), []).append(v)
    epochs = sorted(per_epoch)
    if band == "range":
        vals = [per_epoch[e] for e in epochs]
        out = [[sum(v) / len(v) for v in vals], [min(v) for v in vals]]
        out.append([max(v) for v in vals])
    else:
        stats = [summarise(per_epoch[e]) for e in epochs]
        out = [
            [s["mean"] for s in stats],
            [s["ci_low"] if s["n"] > 1 else s["mean"] for s in stats],
            [s["ci_high"] if s["n"] > 1 else s["mean"] for s in stats],
        ]
    if log:
        out = [[10.0**v for v in seq] for seq in out]
    return (epochs, *out)


def plain_log(axis, subs: tuple[float, ...] = (1.0, 2.0, 5.0)) -> None:
    """A log axis labelled with plain numbers at ``subs`` times each power of ten
    (0.1, 0.2, 0.5, 1, ...), minor labels off."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def _error(acc: float) -> float:
    return 100.0 * (1.0 - acc)


def _n_seeds(groups: Mapping[str, list]) -> str:
    ns = sorted({len(v) for v in groups.values()})
    return "/".join(map(str, ns))


def test_error(plt, groups: Mapping[str, list], out_dir: str) -> list[str]:
    """Left: test error (%) per epoch, log axis, 95% CI band. Right: the reported
    test error (best-validation epoch) per rule, mean with its 95% CI."""
    fig, (ax, dots) = plt.subplots(
        1, 2, figsize=(9, 3.4), layout="constrained", width_ratios=(3, 2)
    )
    for label, runs in groups.items():
        st = style.rule_style(label)
        ep, mean, lo, hi = series(runs, "test_accuracy", scale=_error, log=True)
        ax.plot(ep, mean, color=st["color"], linestyle=st["linestyle"], label=label)
        ax.fill_between(ep, lo, hi, color=st["color"], alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.set_ylabel("test error (%)")
    ax.set_title("test error per epoch")
    style.integer_epochs(ax)
    labels = list(groups)
    for i, label in enumerate(labels):
        st = style.rule_style(label)
        errs = [r.test_error for r in groups[label] if r.test_error is not None]
        if not errs:
            continue
        s = summarise(errs)
        lo, hi = (s["ci_low"], s["ci_high"]) if s["n"] > 1 else (s["mean"],) * 2
        dots.errorbar(
            [s["mean"]],
            [i],
            xerr=[[s["mean"] - lo], [hi - s["mean"]]],
            color=st["color"],
            marker=st["marker"],
            capsize=3,
        )
    dots.set_yticks(range(len(labels)), labels)
    dots.invert_yaxis()
    dots.set_xlabel("test error (%)")
    dots.set_title("reported (mean, 95% CI)")
    style.legend_below(fig, [ax])
    caption = (
        "Test error (%) over epochs (left, log scale: geometric mean over seeds, band "
        "the 95% confidence interval of the mean of log10 error, Student's t) and as "
        "reported in the table (right: at each run's best-validation epoch; mean and "
        f"its 95% t-interval). {_n_seeds(groups)} seeds per rule."
    )
    paths = style.save(fig, out_dir, "test_error", caption)
    plt.close(fig)
    return paths


def num_stages(runs: Sequence, key: str) -> int:
    return max(
        (len(e[key]) for r in runs for e in r.history if isinstance(e.get(key), list)),
        default=0,
    )


def _max_angle(runs: Sequence, stage: int) -> float:
    vals = [
        e["alignment_deg"][stage]
        for r in runs
        for e in r.history
        if isinstance(e.get("alignment_deg"), list)
        and stage < len(e["alignment_deg"])
        and isinstance(e["alignment_deg"][stage], int | float)
    ]
    return max(vals, default=0.0)


def alignment(plt, groups: Mapping[str, list], out_dir: str) -> list[str]:
    """One panel per rule whose angle is not identically 0: the angle of each
    stage's update to the exact gradient, with the 90° reference; one y-scale."""
    shown, zero_rules, zero_stages = {}, [], set()
    for label, runs in groups.items():
        n = num_stages(runs, "alignment_deg")
        live = [s for s in range(n) if _max_angle(runs, s) >= ZERO_DEG]
        if live:
            shown[label] = (runs, live, n)
            zero_stages |= {s + 1 for s in range(n) if s not in live}
        elif n:
            zero_rules.append(label)
    if not shown:
        return []
    fig, axes = style.panel_grid(plt, len(shown), (3.2, 2.6), 0.5, sharey=True)
    for ax, (label, (runs, live, n)) in zip(axes, shown.items()):
        colors = style.stage_colors(n)
        for s in live:
            ep, mean, lo, hi = series(runs, "alignment_deg", stage=s)
            ax.plot(ep, mean, color=colors[s], label=f"stage {s + 1}")
            ax.fill_between(ep, lo, hi, color=colors[s], alpha=0.2, linewidth=0)
        ax.axhline(
            90, color="0.4", linestyle=":", linewidth=1, label="90° (orthogonal)"
        )
        ax.set_title(label)
        style.integer_epochs(ax)
    axes[0].set_ylim(0, 100)
    for ax in axes[:: min(len(axes), 3)]:
        ax.set_ylabel("angle to the exact gradient (°)")
    style.legend_below(fig, axes)
    caption = (
        "Angle between each stage's update direction and the exact gradient "
        "(degrees; 0 = the gradient, 90 = orthogonal to it), on a fixed probe batch "
        f"each epoch; mean over {_n_seeds(groups)} seeds with its 95% confidence "
        "interval (Student's t). Stages numbered from the input; one y-scale."
    )
    if zero_rules:
        caption += (
            f" Not drawn: {', '.join(zero_rules)} (angle 0 at every stage and epoch, "
            f"below {ZERO_DEG}°: the exact gradient up to rounding)."
        )
    if zero_stages:
        caption += (
            f" Stage(s) {', '.join(map(str, sorted(zero_stages)))} not drawn where "
            "their angle is 0 (the read-out gets its true local gradient)."
        )
    paths = style.save(fig, out_dir, "alignment", caption)
    plt.close(fig)
    return paths


def grad_norm(plt, groups: Mapping[str, list], out_dir: str) -> list[str]:
    """One panel per rule: the exact gradient's norm per stage over epochs (log
    scale, one y-scale), stages coloured in order by a sequential colormap."""
    shown = {k: v for k, v in groups.items() if num_stages(v, "grad_norm")}
    if not shown:
        return []
    fig, axes = style.panel_grid(plt, len(shown), (3.2, 2.6), 0.5, sharey=True)
    for ax, (label, runs) in zip(axes, shown.items()):
        n = num_stages(runs, "grad_norm")
        for s, color in enumerate(style.stage_colors(n)):
            ep, mean, lo, hi = series(runs, "grad_norm", stage=s, log=True)
            ax.plot(ep, mean, color=color, label=f"stage {s + 1}")
            ax.fill_between(ep, lo, hi, color=color, alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        plain_log(ax.yaxis)
        ax.set_title(label)
        style.integer_epochs(ax)
    for ax in axes[:: min(len(axes), 3)]:
        ax.set_ylabel("exact gradient norm")
    style.legend_below(fig, axes)
    caption = (
        "Norm of the exact gradient of the loss with respect to each stage's "
        "parameters (log scale; stage 1 = the input stage, lighter = deeper), on a "
        f"fixed probe batch each epoch; geometric mean over {_n_seeds(groups)} seeds, "
        "band the 95% confidence interval of the mean of log10 norm (Student's t); "
        "one y-scale across panels."
    )
    paths = style.save(fig, out_dir, "grad_norm", caption)
    plt.close(fig)
    return paths


def search(plt, found: Mapping[str, Mapping[str, Any]], out_dir: str) -> list[str]:
    """One panel per rule: each trial's validation error (%) against its learning
    rate (both log), the chosen trial ringed."""
    found = {k: v for k, v in found.items() if _lr_trials(v)}
    if not found:
        return []
    fig, axes = style.panel_grid(
        plt, len(found), (3.2, 2.6), 0.5, sharey=True, sharex=True
    )
    for ax, (rule, f) in zip(axes, found.items()):
        st = style.rule_style(rule)
        trials = _lr_trials(f)
        xs = [t["params"]["optim.lr"] for t in trials]
        ys = [_error(t["value"]) for t in trials]
        ax.scatter(xs, ys, color=st["color"], marker=st["marker"], s=22, zorder=3)
        best = f["chosen"]
        ax.scatter(
            [best["params"]["optim.lr"]],
            [_error(best["value"])],
            s=140,
            facecolors="none",
            edgecolors="k",
            linewidths=1.2,
            zorder=4,
            label="chosen",
        )
        ax.set(xscale="log", yscale="log", title=rule, xlabel="learning rate")
        spec = (f.get("space") or {}).get("optim.lr") or {}
        if "low" in spec and "high" in spec:  # the whole searched range
            ax.set_xlim(float(spec["low"]) / 1.3, float(spec["high"]) * 1.3)
        plain_log(ax.xaxis, subs=(1.0,))  # decades: the labels do not collide
        plain_log(ax.yaxis)
        # sharex hides the labels above the last row, also above a hidden spare panel
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[:: min(len(axes), 3)]:
        ax.set_ylabel("validation error (%)")
    style.legend_below(fig, axes[:1])
    f0 = next(iter(found.values()))
    caption = (
        "The search: each finished trial's validation error (%, "
        f"100 × (1 - {f0['metric']}) at its best-validation epoch) against its "
        "learning rate; ringed: the chosen trial. Budget per rule (trials × epochs): "
        + "; ".join(
            f"{r}: {f['budget']['trials']} × {f['budget']['epochs']}"
            for r, f in found.items()
        )
        + ". Other searched options (e.g. sg's synthesizer lr) are not on this axis; "
        "search.json lists every point."
    )
    paths = style.save(fig, out_dir, "search", caption)
    plt.close(fig)
    return paths


def _lr_trials(found: Mapping[str, Any]) -> list:
    return [
        t
        for t in found.get("trials", [])
        if t.get("value") is not None and "optim.lr" in (t.get("params") or {})
    ]


def write_all(
    runs: Sequence, found: Mapping[str, Mapping[str, Any]] | None, out_dir: str
) -> list[str]:
    """Every figure into ``out_dir``; return the paths."""
    plt = style.pyplot()
    groups = by_rule(runs)
    paths = test_error(plt, groups, out_dir)
    paths += alignment(plt, groups, out_dir)
    paths += grad_norm(plt, groups, out_dir)
    if found:
        paths += search(plt, found, out_dir)
    return paths
