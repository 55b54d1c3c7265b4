"""Hydra sweeps (-m) on the basic, joblib and submitit_local launchers: run directories
named by their overrides, a failing job recorded without stopping the others, the
sweep summary, and the comparison table read back from the sweep."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from bp_alternatives.compare import build_table, load_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny runs; the shrinking overrides are left out of the run directory names.
TINY = [
    "model.hidden=[8]",
    "trainer.epochs=2",
    "trainer.batch_size=256",
    "trainer.progress=false",
    "hydra.job.config.override_dirname.exclude_keys=["
    "model.hidden,trainer.epochs,trainer.batch_size,trainer.progress]",
]


def sweep(
    sweep_dir, *overrides: str, timeout: int = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            *overrides,
            *TINY,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read(path) -> dict:
    with open(path) as f:
        return json.load(f)


def test_basic_launcher_two_rules_two_seeds_and_the_table(tmp_path):
    proc = sweep(tmp_path, "rule=bp,manual_bp", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {
        "rule=bp,seed=0",
        "rule=bp,seed=1",
        "rule=manual_bp,seed=0",
        "rule=manual_bp,seed=1",
    }
    assert {d for d in os.listdir(tmp_path) if "=" in d} == runs
    errors: dict[str, list[float]] = {}
    for d in sorted(runs):  # seed 0 before seed 1 for each rule
        res = read(tmp_path / d / "results.json")
        rule, seed = (kv.split("=")[1] for kv in d.split(","))
        assert (res["rule"], res["seed"], res["status"]) == (rule, int(seed), "ok")
        assert res["config"]["run_name"] == d
        errors.setdefault(rule, []).append(100 * (1 - res["final"]["test_accuracy"]))
    assert "sweep: 4 runs: 4 ok, 0 failed" in proc.stdout
    summary = (tmp_path / "sweep_summary.md").read_text()
    assert summary.count("| ok |") == 4

    # the comparison table of that sweep, checked against the files it read
    table = build_table(load_runs([str(tmp_path)]))
    assert table.rows == ["bp", "manual_bp"] and table.columns == ["digits"]
    for rule, errs in errors.items():
        mean, std = table.cells[(rule, "digits")].test_error
        assert mean == pytest.approx(statistics.mean(errs), abs=1e-9)
        assert std == pytest.approx(statistics.stdev(errs), abs=1e-9)
    # manual_bp computes the same gradient as bp: same numbers, seed by seed
    assert errors["bp"] == pytest.approx(errors["manual_bp"], abs=1e-3)


def _check_failure_recorded(sweep_dir, proc) -> None:
    ok_dir = sweep_dir / "model.activation=tanh,rule=bp"
    bad_dir = sweep_dir / "model.activation=swish,rule=bp"
    assert read(ok_dir / "results.json")["status"] == "ok"  # the other job ran
    bad = read(bad_dir / "results.json")
    assert bad["status"] == "failed" and bad["rule"] == "bp"
    # "<ExceptionType>: <message>", the message naming the bad value
    assert "Error: " in bad["error"] and "swish" in bad["error"]
    assert "valid activations" in bad["error"]
    assert "Traceback" in bad["traceback"]
    assert bad["config"]["model"]["activation"] == "swish"
    assert proc.returncode == 1, proc.stderr[-3000:]  # after every job has run
    assert "sweep: 2 runs: 1 ok, 1 failed" in proc.stdout
    assert f"FAILED model.activation=swish,rule=bp: {bad['error']}" in proc.stdout
    summary = (sweep_dir / "sweep_summary.md").read_text()
    assert "| model.activation=swish,rule=bp | failed |" in summary
    assert bad["error"] in summary


def test_failing_job_is_recorded_and_does_not_stop_the_others(tmp_path):
    # the failing job comes first: the basic launcher must still run the second
    proc = sweep(tmp_path, "rule=bp", "model.activation=swish,tanh")
    _check_failure_recorded(tmp_path, proc)


def test_an_option_shared_by_the_swept_rules_applies_to_each(tmp_path):
    proc = sweep(tmp_path, "rule=fa,dfa,bp", "rule.scale=2.0")
    for rule in ("fa", "dfa"):
        res = read(tmp_path / f"rule.scale=2.0,rule={rule}" / "results.json")
        assert res["status"] == "ok", res.get("error")
        assert res["config"]["rule"]["scale"] == 2.0
    bp = read(tmp_path / "rule.scale=2.0,rule=bp" / "results.json")
    assert bp["status"] == "ok", bp.get("error")  # bp has no scale: trains without
    assert "scale" not in bp["config"]["rule"]
    assert "rule.scale left out of rule=bp: not one of its options" in proc.stderr
    assert proc.returncode == 0 and "sweep: 3 runs: 3 ok, 0 failed" in proc.stdout


def test_a_rule_option_no_swept_rule_takes_is_refused():
    """drop_unshared_rule_options: an option leaves only the swept rules that do not
    take it, and only when another swept rule does; a misspelt one always stays, for
    check_config to name it."""
    from bp_alternatives.config import ConfigError, drop_unshared_rule_options
    from bp_alternatives.experiment import check_config
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["rule=bp", "rule.scale=2.0", "rule.scal=1.0"])
    assert drop_unshared_rule_options(cfg, ["fa", "dfa", "bp"]) == ["scale"]
    assert "scale" not in cfg.rule and cfg.rule.scal == 1.0
    for swept in (["bp", "manual_bp"], []):  # no swept rule has it; a single run
        cfg = compose_cfg(["rule=bp", "rule.scale=2.0"])
        assert drop_unshared_rule_options(cfg, swept) == []
        with pytest.raises(ConfigError, match="rule.scale is not an option of bp"):
            check_config(cfg)
    cfg = compose_cfg(["rule=fa", "rule.scale=2.0"])
    assert drop_unshared_rule_options(cfg, ["fa", "bp"]) == []
    assert cfg.rule.scale == 2.0


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers(tmp_path, launcher):
    proc = sweep(
        tmp_path,
        f"hydra/launcher={launcher}",
        "rule=bp,manual_bp",
        "seed=0",
        "model.activation=tanh,swish",
    )
    dirs = {d for d in os.listdir(tmp_path) if "=" in d}
    assert len(dirs) == 4, (dirs, proc.stderr[-3000:])
    statuses = {}
    for d in dirs:
        res = read(tmp_path / d / "results.json")
        statuses[d] = res["status"]
        assert f"rule={res['rule']}" in d and f"seed={res['seed']}" in d
    assert statuses == {d: ("failed" if "swish" in d else "ok") for d in dirs}
    assert proc.returncode == 1
    assert "sweep: 4 runs: 2 ok, 2 failed" in proc.stdout
    if launcher == "submitit_local":  # really went through submitit
        assert os.listdir(tmp_path / ".submitit")


def test_summary_reports_jobs_that_left_no_record(tmp_path):
    """A job killed before it could write (Slurm time limit, OOM) still shows up."""
    from bp_alternatives.sweep import JobContext, record, summarise

    for name in ("rule=bp", "rule=fa"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
    ctx = JobContext(
        str(tmp_path / "rule=bp"), True, str(tmp_path), "rule=bp", ["rule=bp"], 0
    )
    record(ctx, {"status": "ok", "final": {"test_accuracy": 0.5}}, 1.0)
    head, bad = summarise(str(tmp_path))
    assert head == "2 runs: 1 ok, 0 failed, 1 no record"
    assert [r["dir"] for r in bad] == ["rule=fa"]
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "| 0 | rule=bp | ok | 0.5000 |  |" in text
    assert "| rule=fa | no record |" in text
