"""The package as a user installs it: a wheel in a fresh virtualenv outside the
checkout runs ``bpa-train`` and ``bpa-compare`` with the configs it ships."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from bp_alternatives.rules import RULES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # builds a wheel and a virtualenv (~1 min)


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def test_wheel_in_a_fresh_virtualenv_trains_and_compares(tmp_path):
    # a copy of the source: building in the checkout would leave build/ behind
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            "outputs",
            "multirun",
            "wandb",
            "build",
            "dist",
            ".venv",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".hypothesis",
            ".ruff_cache",
        ),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # setuptools able to build a wheel here: no download (else pip fetches it)
    can_build = importlib.util.find_spec("setuptools.command.bdist_wheel") or (
        importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel")
    )
    isolation = ["--no-build-isolation"] if can_build else []
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *isolation,
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "dist").glob("bp_alternatives-*.whl")
    # the dependencies come from this interpreter's site-packages (the lock's
    # versions in CI), the package only from the wheel
    venv = tmp_path / "venv"
    _run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        tmp_path,
        env,
    )
    bin_ = venv / "bin"
    _run(
        [str(bin_ / "pip"), "install", "--no-deps", "--no-index", str(wheel)],
        tmp_path,
        env,
    )
    shutil.rmtree(src)  # nothing of the checkout's copy can be imported from here on
    where = _run(
        [
            str(bin_ / "python"),
            "-c",
            "import os, bp_alternatives as b; print(os.path.dirname(b.__file__))",
        ],
        tmp_path,
        env,
    ).stdout.strip()
    assert where.startswith(str(venv)), where
    assert os.path.exists(
        os.path.join(where, "configs", "experiment", "compare_digits.yaml")
    )

    help_ = _run([str(bin_ / "bpa-train"), "--help"], tmp_path, env).stdout
    assert "rule: " + ", ".join(sorted(RULES)) in help_
    help_ = _run([str(bin_ / "bpa-protocol"), "--help"], tmp_path, env).stdout
    assert "protocol_digits" in help_
    run_dir = tmp_path / "run"
    out = _run(
        [
            str(bin_ / "bpa-train"),
            "trainer.epochs=1",
            "model.hidden=[16]",
            "trainer.progress=false",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        env,
    ).stdout
    assert "status=ok" in out
    with open(run_dir / "results.json") as f:
        res = json.load(f)
    assert res["status"] == "ok" and len(res["history"]) == 1
    assert (run_dir / "train.log").read_text().count("epoch 1/1") == 1
    table = _run([str(bin_ / "bpa-compare"), str(run_dir), "--no-plots"], tmp_path, env)
    assert "| bp |" in table.stdout
