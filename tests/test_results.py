"""bp_alternatives.results: the results.json record, its writer and reader, the
previous layout (a file written before schema_version existed), and the one list of
config keys that do not identify a run."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from bp_alternatives import results
from bp_alternatives.report.render import to_markdown
from bp_alternatives.report.runs import load_runs
from bp_alternatives.report.table import build_table, column_labels

# written by `python -m experiments.train rule=bp trainer.epochs=1` before results.json
# had a schema_version (the layout this reader calls version 1)
V1_DIR = os.path.join(os.path.dirname(__file__), "data", "results_v1")
V1 = os.path.join(V1_DIR, "rule=bp", "results.json")


def test_a_results_json_from_before_the_version_field_loads_into_the_table():
    with open(V1) as f:
        raw = json.load(f)
    assert "schema_version" not in raw
    r = results.read(V1)
    assert r.schema_version == 1 and r.status == "ok" and r.rule == "bp"
    assert r.final == raw["final"] and r.history == raw["history"]
    assert r.provenance == raw["provenance"] and r.config == raw["config"]
    table = build_table(load_runs([V1_DIR]))
    cell = table.cells[("bp", "digits")]
    error = 100 * (1 - raw["final"]["test_accuracy"])
    assert cell.test_error == (pytest.approx(error), None)
    assert f"| bp | {error:.2f} (n=1) |" in to_markdown(table)


def test_written_record_carries_the_version_and_reads_back_equal(tmp_path):
    record = dataclasses.replace(results.read(V1), schema_version=2)
    path = str(tmp_path / "results.json")
    results.write(path, record)
    with open(path) as f:
        raw = json.load(f)
    assert next(iter(raw)) == "schema_version" and raw["schema_version"] == 2
    assert "error" not in raw and "traceback" not in raw  # only a failed run's
    assert results.read(path) == record
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file


def test_failed_record_keeps_its_error(tmp_path):
    failed = results.Results(
        status="failed",
        rule="bp",
        dataset=None,
        seed=0,
        config={"rule": {"name": "bp"}},
        error="ValueError: boom",
        traceback="Traceback ...",
    )
    path = str(tmp_path / "results.json")
    results.write(path, failed)
    back = results.read(path)
    assert back.error == "ValueError: boom" and back.final == {} and back.history == []
    assert results.read_finished(path) is None  # not finished: train it again


@pytest.mark.parametrize(
    "change, field",
    [
        ({"schema_version": results.SCHEMA_VERSION + 1}, "'schema_version'"),
        ({"status": "done"}, "'status'"),
        ({"rule": None}, "'rule'"),
        ({"final": {"test_accuracy": None}}, "'final.test_accuracy'"),
        ({"history": {}}, "'history'"),
    ],
)
def test_reader_names_the_file_and_the_bad_field(tmp_path, change, field):
    with open(V1) as f:
        raw = json.load(f) | change
    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(results.ResultsError, match=field) as e:
        results.read(str(path))
    assert str(path) in str(e.value)
    assert results.read_finished(str(path)) is None


def test_keys_that_do_not_identify_a_run_split_no_column_and_no_fingerprint():
    with open(V1) as f:
        config = json.load(f)["config"]
    other = json.loads(json.dumps(config))
    other["trainer"]["eval_chunk"] = 128
    other["trainer"]["progress"] = not config["trainer"]["progress"]
    other["out_dir"] = "/elsewhere"
    assert results.strip_not_identifying(other) == results.strip_not_identifying(config)
    assert "eval_chunk" not in results.strip_not_identifying(config)["trainer"]
    assert "epochs" in results.strip_not_identifying(config)["trainer"]
    different = json.loads(json.dumps(config))
    different["trainer"]["epochs"] = 2
    assert results.strip_not_identifying(different) != results.strip_not_identifying(
        config
    )

    runs = load_runs([V1_DIR]) * 2
    runs[1] = dataclasses.replace(runs[1], config=other)
    assert column_labels(runs) == ["digits", "digits"]
    runs[1] = dataclasses.replace(runs[1], config=different)
    assert column_labels(runs) == [
        "digits (trainer.epochs=1)",
        "digits (trainer.epochs=2)",
    ]
