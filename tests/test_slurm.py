"""A real Slurm sweep: a one-node cluster from Debian's packages on loopback
(scripts/slurm_local.sh), a two-job sweep submitted through
hydra/launcher=submitit_slurm, both results.json collected, the daemons stopped.

Skipped, with the reason, where Slurm is not installed or cannot be started (it needs
root); CI (.ci/run) installs it and sets BP_REQUIRE_SLURM=1, which turns those skips
into failures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.test_sweeps import TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "slurm_local.sh")

pytestmark = pytest.mark.slow


def _unavailable(reason: str):
    if os.environ.get("BP_REQUIRE_SLURM") == "1":
        pytest.fail(f"BP_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _script(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="module")
def slurm_conf():
    """Start the one-node cluster (or reuse a running one); stop it afterwards if
    this fixture started it. Yields the SLURM_CONF path."""
    missing = [
        c
        for c in ("slurmctld", "slurmd", "sbatch", "munged")
        if shutil.which(c) is None
    ]
    if missing:
        _unavailable(
            f"Slurm is not installed (no {', '.join(missing)}); "
            "install it with: scripts/slurm_local.sh install (root, apt)"
        )
    if os.geteuid() != 0:
        _unavailable("starting the local Slurm daemons needs root")
    running = _script("status").returncode == 0
    started = _script("start")
    if started.returncode != 0:
        _unavailable(f"scripts/slurm_local.sh start failed: {started.stderr[-2000:]}")
    line = started.stdout.strip().splitlines()[-1]
    assert line.startswith("export SLURM_CONF="), started.stdout
    conf = line.split("=", 1)[1]
    yield conf
    if not running:
        stopped = _script("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert _script("status").returncode == 1  # the node no longer answers


def test_two_job_sweep_through_submitit_slurm(slurm_conf, tmp_path):
    env = dict(os.environ, SLURM_CONF=slurm_conf)
    info = subprocess.run(
        ["sinfo", "-h", "-o", "%P %T %D"], capture_output=True, text=True, env=env
    )
    assert info.returncode == 0 and "local*" in info.stdout, info.stderr

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.timeout_min=10",
            "hydra.launcher.cpus_per_task=1",
            "rule=bp,manual_bp",
            *TINY,
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = {}
    for rule in ("bp", "manual_bp"):
        with open(tmp_path / f"rule={rule}" / "results.json") as f:
            results[rule] = json.load(f)
        assert results[rule]["rule"] == rule and results[rule]["status"] == "ok"
    # manual_bp computes bp's gradient: the two jobs agree
    assert results["bp"]["final"]["test_accuracy"] == pytest.approx(
        results["manual_bp"]["final"]["test_accuracy"], abs=1e-3
    )
    assert "sweep: 2 runs: 2 ok, 0 failed" in proc.stdout
    # the jobs really ran as Slurm jobs: submitit's folder is named by the job id,
    # and the job's own log records the Slurm job id it ran under
    job_dirs = sorted((tmp_path / ".submitit").iterdir())
    array_ids = [d.name for d in job_dirs if re.fullmatch(r"\d+_\d+", d.name)]
    assert len(array_ids) == 2, job_dirs
    for job in array_ids:
        log = (tmp_path / ".submitit" / job / f"{job}_0_log.out").read_text()
        assert f"Starting with JobEnvironment(job_id={job}" in log, log[-2000:]
    # and they end: the queue drains once the jobs' processes have exited
    deadline = time.monotonic() + 120
    while True:
        queue = subprocess.run(
            ["squeue", "-h"], capture_output=True, text=True, env=env
        )
        assert queue.returncode == 0, queue.stderr
        if not queue.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert queue.stdout.strip() == "", queue.stdout
