"""The table's statistics (bp_alternatives.report.stats) against scipy, on synthetic
results.json files whose per-seed test errors are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bp_alternatives.compare import main
from bp_alternatives.report import stats
from bp_alternatives.report.runs import load_runs
from bp_alternatives.report.table import build_table
from tests.test_compare import fake_results

# per-seed test accuracy: errors (%) bp 2, 3, 5, 4; fa 6, 9, 7; dfa 3.5, 2.5, 4.5, 3
ACC = {
    "bp": [0.98, 0.97, 0.95, 0.96],
    "fa": [0.94, 0.91, 0.93],
    "dfa": [0.965, 0.975, 0.955, 0.97],
}


@pytest.fixture
def runs(tmp_path):
    for rule, accs in ACC.items():
        for seed, acc in enumerate(accs):
            cfg = {"optim": {"name": "adam", "lr": 1e-3}}
            cfg["protocol"] = {"chosen": {"optim.lr": 0.001}, "trials": 4, "epochs": 2}
            cfg["protocol"]["metric"] = "val_accuracy"
            # fake_results's final accuracy is test_accuracy at its last epoch
            fake_results(tmp_path / f"{rule}-{seed}", rule, seed, acc, config=cfg)
    return load_runs([str(tmp_path)])


def _errors(rule):
    return 100 * (1 - np.asarray(ACC[rule]))


def test_mean_std_ci_p_match_scipy(runs):
    frame = stats.stats_frame(build_table(runs)).set_index("row")
    bp = _errors("bp")
    for rule in ACC:
        e = _errors(rule)
        rec = frame.loc[rule]
        assert rec["n"] == len(e)
        assert rec["mean"] == pytest.approx(e.mean())
        assert rec["std"] == pytest.approx(e.std(ddof=1))
        lo, hi = sps.t.interval(0.95, len(e) - 1, loc=e.mean(), scale=sps.sem(e))
        assert (rec["ci_low"], rec["ci_high"]) == pytest.approx((lo, hi))
        if rule == "bp":
            assert math.isnan(rec["diff"]) and math.isnan(rec["p"])
            continue
        assert rec["diff"] == pytest.approx(e.mean() - bp.mean())
        p = sps.ttest_ind(e, bp, equal_var=False).pvalue
        assert rec["p"] == pytest.approx(p)
    # fa is far from bp (p < 0.05), dfa close to it (p > 0.05): only dfa is marked
    assert frame.loc["fa", "p"] < 0.05 < frame.loc["dfa", "p"]


def test_rendered_table_marks_non_significant_and_names_the_method(runs):
    table = build_table(runs)
    md = stats.render_all(table)["stats.md"]
    lines = {line.split(" | ")[0]: line for line in md.splitlines()}
    assert stats.NOT_SIGNIFICANT in lines["| dfa"]
    assert stats.NOT_SIGNIFICANT not in lines["| fa"]
    assert "| bp | 3.50 ± 1.29 | 4 |" in lines["| bp"]
    assert "optim.lr=0.001" in lines["| bp"]  # the chosen hyperparameters
    assert "Student's t" in md and "equal_var=False" in md
    assert "4 trials × 2 epochs" in md and "val_accuracy" in md


def test_paper_latex_is_booktabs_with_dataset_over_metric(runs):
    tex = stats.render_all(build_table(runs))["paper.tex"]
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\multicolumn{5}{c}{digits}" in tex
    assert r"error (\%) & n & 95\% CI" in tex
    assert "\nFA & " in tex and "\nBP & " in tex  # short row labels
    assert "±" not in tex and "†" not in tex


def test_speed_only_on_request(runs, tmp_path, capsys):
    table = build_table(runs)
    assert "examples_per_second" not in stats.stats_frame(table)
    out = tmp_path / "out"
    assert main([str(tmp_path), "--plots-dir", str(out), "--no-plots"]) == 0
    assert "examples/s" not in capsys.readouterr().out
    args = [str(tmp_path), "--plots-dir", str(out), "--no-plots", "--extras", "speed"]
    assert main(args) == 0
    assert "examples/s" in capsys.readouterr().out
    assert main([str(tmp_path), "--paper", "--no-plots", "--plots-dir", str(out)]) == 0
    assert r"\toprule" in capsys.readouterr().out
