"""The headline accuracy: chosen among a rule's prediction modes on held-out data
(never test), recorded in results.json, named in the comparison table; a headline
below chance is flagged in the one-line summary and in the table."""

from __future__ import annotations

import json
import os

import pytest

from bp_alternatives.report.render import to_markdown
from bp_alternatives.report.runs import load_runs
from bp_alternatives.report.table import BELOW_CHANCE, build_table
from bp_alternatives.rundir import summary_line
from bp_alternatives.train import choose_headline

MODES = ("stages1", "stage0", "stages0-1")


def _split(**acc):
    return {f"accuracy/{m}": v for m, v in acc.items()} | {"accuracy": -1.0}


def test_headline_is_the_best_mode_on_validation_never_on_test():
    splits = {
        "train": _split(stages1=0.9, stage0=0.5, **{"stages0-1": 0.6}),
        "val": _split(stages1=0.2, stage0=0.8, **{"stages0-1": 0.8}),
        "test": _split(stages1=0.1, stage0=0.3, **{"stages0-1": 0.99}),
    }
    # val decides (train and test prefer other modes); of equals, the first
    assert choose_headline(MODES, splits) == "stage0"
    assert [splits[k]["accuracy"] for k in ("train", "val", "test")] == [0.5, 0.8, 0.3]
    # no validation split: the training split decides
    del splits["val"]
    assert choose_headline(MODES, splits) == "stages1"
    assert splits["test"]["accuracy"] == 0.1
    # a rule with one headline: nothing chosen, nothing changed
    assert choose_headline(None, splits) is None
    assert splits["test"]["accuracy"] == 0.1


def _results(acc: float, prediction: dict | None = None) -> dict:
    final = {"test_accuracy": acc, "test_loss": 2.3, "test_accuracy/readout": 0.905}
    return {
        "rule": "ff",
        "dataset": "digits",
        "seed": 0,
        "status": "ok",
        "num_classes": 10,
        "final": final,
        "prediction": prediction,
        "examples_per_second": 100.0,
    }


def test_summary_line_names_the_mode_and_warns_below_chance():
    pred = {"mode": "goodness_stage0", "chosen_on": "train", "candidates": []}
    line = summary_line(_results(0.919, pred), "r.json")
    assert "test_accuracy=0.919 (goodness_stage0, chosen on train)" in line
    assert "WARNING" not in line and "\n" not in line
    line = summary_line(_results(0.028), "r.json")
    assert "\n" not in line  # one line, the warning on it
    assert "WARNING: test_accuracy 0.028 is below chance (1/10 = 0.100)" in line
    assert "readout 0.905" in line


def _write(path, rule, acc, prediction=None, readout=None):
    entry = {"epoch": 1, "test_accuracy": acc, "train_accuracy": acc}
    if prediction:
        entry["prediction_mode"] = prediction["mode"]
        entry["test_accuracy/readout"] = readout
        entry[f"test_accuracy/{prediction['mode']}"] = acc
    res = {
        "rule": rule,
        "dataset": "digits",
        "seed": 0,
        "status": "ok",
        "num_classes": 10,
        "final": {"test_accuracy": acc},
        "history": [entry],
        "prediction": prediction,
        "config": {"rule": {"name": rule}, "data": {"name": "digits"}},
    }
    os.makedirs(path)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(res, f)


def test_table_names_the_prediction_mode_and_marks_below_chance(tmp_path):
    pred = {
        "mode": "goodness_stage0",
        "chosen_on": "train",
        "candidates": ["goodness_stage1", "goodness_stage0", "goodness_stages0-1"],
    }
    _write(tmp_path / "ff", "ff", 0.9, pred, readout=0.95)
    _write(tmp_path / "bp", "bp", 0.05)
    table = build_table(load_runs([str(tmp_path)]))
    md = to_markdown(table)
    ff_row = next(line for line in md.splitlines() if line.startswith("| ff"))
    bp_row = next(line for line in md.splitlines() if line.startswith("| bp"))
    # which stages predict, and the read-out's error beside the headline's
    assert "10.00 (n=1) [goodness_stage0 (1); readout 5.00]" in ff_row
    assert BELOW_CHANCE in bp_row and BELOW_CHANCE not in ff_row
    assert f"{BELOW_CHANCE} below chance" in md and "prediction mode(s)" in md


@pytest.mark.parametrize("acc", [0.1, 0.11])
def test_chance_itself_is_not_below_chance(tmp_path, acc):
    _write(tmp_path / "bp", "bp", acc)
    table = build_table(load_runs([str(tmp_path)]))
    assert BELOW_CHANCE not in to_markdown(table)
