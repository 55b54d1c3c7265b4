"""The README's main job: one command runs the sweep and prints the table with all six
rules and where the plots are."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.experiment_helpers import (
    REPO,
)

# --------------------------------------------------------------- the main job


def _sweep(sweep_dir, *overrides: str, timeout: int = 900):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            *overrides,
            "trainer.progress=false",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_main_job_prints_the_table_of_all_six_rules(tmp_path):
    """The README's one command, shrunk (1 seed, 1 epoch, 16-16 hidden units): the
    sweep ends with the table -- a row per rule, numbers from the results.json
    files -- and says where the plots are."""
    proc = _sweep(
        tmp_path,
        "experiment=compare_digits",
        "seed=0",
        "trainer.epochs=1",
        "model.hidden=[16,16]",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    rows = {ln.split(" | ")[0][2:]: ln for ln in lines[2:]}
    assert list(rows) == ["bp", "manual_bp", "fa", "dfa", "ff", "sg"]
    assert lines[0].startswith("| rule | digits (relu [16, 16], adam 0.0003, 1 ep) |")
    for rule, line in rows.items():
        (res_dir,) = [d for d in os.listdir(tmp_path) if f",rule={rule}," in d]
        with open(tmp_path / res_dir / "results.json") as f:
            res = json.load(f)
        err = 100 * (1 - res["final"]["test_accuracy"])
        # ff's cell also names its prediction stages and read-out: "[goodness_...]"
        assert line.split(" | ")[1].split(" [")[0] == f"{err:.2f} (n=1)"
    assert "sweep: 6 runs: 6 ok, 0 failed" in out
    plots = tmp_path / "compare"
    assert "compare: tables and 6 plot files" in out and f"in {plots}/" in out
    assert {p.name for p in plots.glob("*.png")} == {
        f"{k}_digits_relu_16_16_adam_0.0003_1_ep.png"
        for k in ("learning_curves", "alignment", "grad_norm")
    }
    assert (plots / "table.md").read_text() in out


@pytest.mark.slow
def test_sweep_comparison_can_be_turned_off(tmp_path):
    proc = _sweep(
        tmp_path,
        "rule=bp",
        "model.hidden=[8]",
        "trainer.epochs=1",
        "hydra.callbacks.sweep_summary.compare=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep: 1 runs: 1 ok, 0 failed" in proc.stdout
    assert "| rule |" not in proc.stdout and not (tmp_path / "compare").exists()
