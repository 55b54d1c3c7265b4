"""The comparison table with statistics: mean ± std, n, a 95% confidence interval and
a Welch test against backprop per cell, and the hyperparameters of each row.

``stats_frame(table)`` turns a ``table.Table`` into one ``pandas.DataFrame`` row per
(table row, table column); ``to_markdown`` / ``to_latex`` / ``to_csv`` render it, and
``to_latex(..., paper=True)`` is the paper style (booktabs rules, dataset over metric
as a two-level header, short row labels).

Statistics (``scipy.stats``), on the per-seed test errors (%) of a cell's finished
runs:

- ``std``: sample standard deviation (``ddof=1``);
- 95% CI: ``mean ± t_{0.975, n-1} · std / sqrt(n)`` (Student's t distribution,
  ``scipy.stats.t.interval``);
- ``diff``: the cell's mean minus the baseline row's mean (``bp``) in the same
  column, ``p``: Welch's two-sided t-test (``scipy.stats.ttest_ind(equal_var=False)``);
  a dagger marks a difference not significant at ``alpha`` (5%).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from bp_alternatives.report.style import rule_key

if TYPE_CHECKING:
    from bp_alternatives.report.table import Table

BASELINE = "bp"
ALPHA = 0.05
CONFIDENCE = 0.95
NOT_SIGNIFICANT = "†"
SHORT = {"bp": "BP", "manual_bp": "BP (manual)", "fa": "FA", "dfa": "DFA"}
SHORT |= {"ff": "FF", "sg": "SG"}
PROVENANCE_VERSIONS = ("bp_alternatives", "jax", "jaxlib", "flax", "optax")


def summarise(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """``n``, ``mean``, sample ``std`` and the t-interval ``ci_low`` / ``ci_high`` of
    ``values``; std and interval are NaN for fewer than two values."""
    x = np.asarray(values, np.float64)
    n = len(x)
    out = {"n": n, "mean": float(x.mean()) if n else math.nan}
    out |= {"std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if n >= 2:
        std = float(x.std(ddof=1))
        out |= {"std": std, "ci_low": out["mean"], "ci_high": out["mean"]}
        if std > 0:  # no spread: the interval is the point
            sem = std / n**0.5
            lo, hi = sps.t.interval(confidence, n - 1, loc=out["mean"], scale=sem)
            out |= {"ci_low": float(lo), "ci_high": float(hi)}
    return out


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(mean(a) - mean(b), two-sided Welch p-value); p is NaN with fewer than two
    values on a side or no variance on both."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return diff, math.nan
    return diff, float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def hyperparameters(config: dict[str, Any]) -> str:
    """The row's hyperparameters: what the protocol chose (``config.protocol.chosen``)
    and held fixed for the rule (``config.protocol.fixed``, marked so), else the
    optimizer and its learning rate."""
    p = config.get("protocol") or {}
    if p.get("chosen"):
        fixed = [f"{k}={_g(v)} (fixed)" for k, v in (p.get("fixed") or {}).items()]
        chosen = [f"{k}={_g(v)}" for k, v in p["chosen"].items()]
        return ", ".join(chosen + fixed)
    optim = config.get("optim") or {}
    if not optim:
        return "–"
    return f"{optim.get('name', '?')} lr={_g(optim.get('lr'))}"


def _g(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def stats_frame(table: Table, baseline: str = BASELINE) -> pd.DataFrame:
    """One row per (table row, table column) holding runs: ``row``, ``column``,
    ``n``, ``mean``, ``std``, ``ci_low``, ``ci_high`` (test error, %), ``diff`` and
    ``p`` against the ``baseline`` row of the same column (NaN for the baseline
    itself or where it has no runs), ``hyperparameters``, ``diverged``, ``failed``
    and, with ``examples_per_second`` in ``table.extras``, ``examples_per_second``."""
    records = []
    for c in table.columns:
        base = table.cells.get((baseline, c))
        base_errors = [r.test_error for r in base.ok] if base else []
        for r in table.rows:
            cell = table.cells.get((r, c))
            if cell is None:
                continue
            errors = [x.test_error for x in cell.ok]
            rec = {"row": r, "column": c} | summarise(errors)
            diff, p = (
                welch(errors, base_errors)
                if r != baseline and base_errors and errors
                else (math.nan, math.nan)
            )
            rec |= {"diff": diff, "p": p}
            rec["hyperparameters"] = hyperparameters(cell.runs[0].config)
            rec |= {"diverged": cell.n_diverged, "failed": cell.n_failed}
            if "examples_per_second" in table.extras:
                rec["examples_per_second"] = cell.examples_per_second
            records.append(rec)
    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------------- rendering


def _fmt(v: float, spec: str = ".2f") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, spec)


def _error_text(rec: pd.Series) -> str:
    if rec["n"] == 0:
        return "–"
    text = _fmt(rec["mean"])
    if math.isfinite(rec["std"]):
        text += f" ± {_fmt(rec['std'])}"
    return text


def _ci_text(rec: pd.Series) -> str:
    if not math.isfinite(rec["ci_low"]):
        return "–"
    return f"[{_fmt(rec['ci_low'])}, {_fmt(rec['ci_high'])}]"


def _diff_text(rec: pd.Series) -> str:
    return "–" if not math.isfinite(rec["diff"]) else f"{rec['diff']:+.2f}"


def _p_text(rec: pd.Series, alpha: float = ALPHA) -> str:
    p = rec["p"]
    if not math.isfinite(p):
        return "–"
    text = f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"
    return text + (NOT_SIGNIFICANT if p >= alpha else "")


def _status(rec: pd.Series) -> str:
    parts = [f"{rec[k]} {k}" for k in ("diverged", "failed") if rec[k]]
    return ", ".join(parts)


def display_frame(frame: pd.DataFrame, paper: bool = False) -> pd.DataFrame:
    """The rendered cells: index = row label, columns = (dataset, metric)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    rows: list[str] = []
    for _, rec in frame.iterrows():
        label = SHORT.get(rec["row"], rec["row"]) if paper else rec["row"]
        if label not in rows:
            rows.append(label)
        c = rec["column"]
        error = _error_text(rec)
        if _status(rec):
            error += f" ({_status(rec)})"
        cols = {
            "error (%)": error,
            "n": str(rec["n"]),
            "95% CI": _ci_text(rec),
            "Δ bp": _diff_text(rec),
            "p": _p_text(rec),
        }
        if "examples_per_second" in frame:
            v = rec["examples_per_second"]
            cols["examples/s"] = "–" if v is None or v != v else f"{v:,.0f}"
        for metric, text in cols.items():
            out.setdefault((c, metric), {})[label] = text
    hp = frame.drop_duplicates("row").set_index("row")["hyperparameters"]
    out[("", "hyperparameters")] = {
        (SHORT.get(r, r) if paper else r): (_short_keys(v) if paper else v)
        for r, v in hp.items()
    }
    df = pd.DataFrame(out).reindex(rows).fillna("–")
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["dataset", "metric"])
    df.index.name = "rule"
    return df


def _short_keys(text: str) -> str:
    """``optim.lr=0.001, rule.synth_lr=1e-4`` -> ``lr=0.001, synth_lr=1e-4``."""
    return re.sub(r"\b(optim|rule)\.", "", text)


def caption(frame: pd.DataFrame, table: Table, baseline: str = BASELINE) -> str:
    """What the numbers are: selection, statistics, search budget, versions."""
    text = (
        "Test error (%) on the test split: mean ± sample standard deviation over n "
        "seeds (n = seeds that finished; diverged and failed runs are counted beside "
        "the number, never averaged into it). 95% CI: Student's t interval "
        "(scipy.stats.t, n - 1 degrees of freedom). Δ bp: difference of means to "
        f"{baseline} in the same column; p: Welch's two-sided t-test "
        "(scipy.stats.ttest_ind, equal_var=False); "
        f"{NOT_SIGNIFICANT}: not significant at {ALPHA:.0%}."
    )
    runs = [r for cell in table.cells.values() for r in cell.runs]
    if runs and all(r.selected_epoch is not None for r in runs):
        text += (
            " Each run reports the test error at its epoch of best validation "
            "accuracy (validation split carved from train)."
        )
    text += search_note(runs)
    versions = versions_note(runs)
    if versions:
        text += f" Versions: {versions}."
    return text


def search_note(runs) -> str:
    """The protocol's search, from the runs' ``config.protocol`` (empty if none)."""
    budgets = {}
    for r in runs:
        p = r.config.get("protocol") or {}
        if p.get("trials") is not None:
            budgets[r.rule] = (p["trials"], p.get("epochs"), p.get("metric"))
    if not budgets:
        return ""
    metric = next(iter(budgets.values()))[2]
    per = "; ".join(
        f"{k}: {budgets[k][0]} trials × {budgets[k][1]} epochs"
        for k in sorted(budgets, key=rule_key)
    )
    return (
        " Hyperparameters chosen per rule by an Optuna TPE search on the validation "
        f"split ({metric}; the test split is never read by the search); budget {per}."
    )


def versions_note(runs) -> str:
    """The library versions and commit the runs were made with (``provenance`` in
    their results.json), each distinct value once."""
    seen: dict[str, list[str]] = {}
    for r in runs:
        prov = r.provenance or {}
        versions = prov.get("versions") or {}
        items = [(k, versions.get(k)) for k in PROVENANCE_VERSIONS]
        commit = prov.get("git_commit")
        if commit:
            items.append(
                ("commit", commit[:10] + ("+dirty" if prov.get("git_dirty") else ""))
            )
        for k, v in items:
            if v and str(v) not in seen.setdefault(k, []):
                seen[k].append(str(v))
    return ", ".join(f"{k} {'/'.join(v)}" for k, v in seen.items() if v)


def to_markdown(frame: pd.DataFrame, table: Table) -> str:
    df = display_frame(frame)
    many = len(table.columns) > 1
    header = ["rule"] + [(f"{c}: {m}" if many and c else m) for c, m in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, row in df.iterrows():
        cells = [label, *row.tolist()]
        lines.append("| " + " | ".join(s.replace("|", "\\|") for s in cells) + " |")
    return "\n".join(lines) + f"\n\n{caption(frame, table)}\n"


def to_latex(frame: pd.DataFrame, table: Table, paper: bool = True) -> str:
    """Booktabs LaTeX (``Styler.to_latex(hrules=True)``), dataset over metric."""
    df = display_frame(frame, paper=paper).map(_tex_escape)
    df.columns = pd.MultiIndex.from_tuples(
        [(_tex_escape(c), _tex_escape(m)) for c, m in df.columns]
    )
    df.index = [_tex_escape(i) for i in df.index]
    return df.style.to_latex(
        hrules=True,
        multicol_align="c",
        column_format="l" + "r" * (df.shape[1] - 1) + "l",
        caption=_tex_escape(caption(frame, table)),
        position_float="centering",
        environment="table",
    )


_TEX = (
    ("\\", r"\textbackslash{}"),
    ("&", r"\&"),
    ("%", r"\%"),
    ("_", r"\_"),
    ("#", r"\#"),
    ("±", r"$\pm$"),
    ("Δ", r"$\Delta$"),
    ("†", r"$^\dagger$"),
    ("×", r"$\times$"),
    ("–", "--"),
)


def _tex_escape(s: str) -> str:
    for a, b in _TEX:
        s = s.replace(a, b)
    return s


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g")


def render_all(table: Table) -> dict[str, str]:
    """File name -> text: ``stats.md``, ``stats.csv``, ``paper.tex``."""
    frame = stats_frame(table)
    if frame.empty:
        return {}
    return {
        "stats.md": to_markdown(frame, table),
        "stats.csv": to_csv(frame),
        "paper.tex": to_latex(frame, table, paper=True),
    }
