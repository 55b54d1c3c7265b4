"""docs/tutorial.py (the Python API without Hydra) runs from start to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_tutorial_runs_and_compares_two_rules(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "docs", "tutorial.py"), str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = dict(re.findall(r"^(bp|fa): test error ([\d.]+)%", proc.stdout, re.M))
    assert set(errors) == {"bp", "fa"}, proc.stdout
    assert all(0 <= float(e) < 20 for e in errors.values()), errors
    assert re.search(r"^bp: .* alignment 0/0 deg", proc.stdout, re.M), proc.stdout
    assert os.path.getsize(tmp_path / "tutorial_test_error.png") > 0
