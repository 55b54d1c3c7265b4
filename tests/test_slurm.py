"""A real Slurm sweep: a one-node cluster from Debian's packages on loopback
(scripts/slurm_local.sh), a two-job sweep submitted through
hydra/launcher=submitit_slurm, both results.json collected, the daemons stopped; and a
job of hydra/launcher=slurm that is signalled for its time limit and then pre-empted,
requeued both times, and resumes from its checkpoint to the numbers of an
uninterrupted run.

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
from hydra import compose, initialize_config_dir

from bp_alternatives.train import read_checkpoint
from tests.conftest import CONFIG_DIR
from tests.test_resume import _numbers
from tests.test_sweeps import TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "slurm_local.sh")


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


@pytest.mark.slow
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


def _launcher(name: str):
    """The composed hydra.launcher node of hydra/launcher=<name>."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"hydra/launcher={name}"], return_hydra_config=True
        )
    return cfg.hydra.launcher


def test_slurm_launcher_config_requeues():
    """hydra/launcher=slurm is submitit_slurm with requeueing on: a job that hits its
    time limit is requeued (max_num_timeout > 0; submitit_slurm's 0 ends it), and the
    job is requeueable whatever the cluster's default (sbatch --requeue)."""
    launcher = _launcher("slurm")
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.max_num_timeout == 3
    assert launcher.signal_delay_s == 120
    assert launcher.additional_parameters == {"requeue": True}
    assert launcher.timeout_min == 60  # the rest is submitit_slurm's
    assert _launcher("submitit_slurm").max_num_timeout == 0


# ~12 s of training on 2 CPU cores, a checkpoint every epoch: long enough that the job
# still trains when Slurm kills it, a few seconds after the pre-emption (submitit
# ignores the SIGTERM; KillWait and srun's wait come first).
PREEMPTED = [
    "trainer.epochs=300",
    "trainer.batch_size=4",
    "trainer.checkpoint_every=1",
    "trainer.progress=false",
    "seed=0",
]


def _wait(what: str, ready, proc: subprocess.Popen, log, timeout: float = 120):
    """Poll ``ready()`` until true; fail, saying ``what``, if the sweep ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"{'sweep ended' if proc.poll() is not None else 'timed out'} "
                f"waiting for {what}; job log:\n{log()[-3000:]}"
            )
        time.sleep(0.1)


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes(slurm_conf, tmp_path):
    """The job is interrupted twice, as Slurm does it: (1) USR2, the signal Slurm sends
    signal_delay_s before the time limit (submitit checkpoints the launcher's call and
    requeues the job: the max_num_timeout of hydra/launcher=slurm); (2) pre-emption by
    a job in the higher-priority partition (Slurm kills and requeues it itself). Each
    time the job runs again in the same directory and resumes from its checkpoint; the
    sweep ends ok with the numbers of an uninterrupted run."""
    env = dict(os.environ, SLURM_CONF=slurm_conf)
    parts = subprocess.run(
        ["sinfo", "-h", "-o", "%P %c"], capture_output=True, text=True, env=env
    )
    assert parts.returncode == 0 and "urgent" in parts.stdout, (
        parts.stdout + parts.stderr
    )
    node_cpus = parts.stdout.split()[1]
    sweep_dir, clean = tmp_path / "sweep", tmp_path / "clean"
    run_dir = sweep_dir / "seed=0"
    out = open(tmp_path / "sweep.txt", "w")
    errors = open(tmp_path / "reference.txt", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            "hydra/launcher=slurm",
            # <= 10 min: submitit counts any USR2 as the time limit's, so this one is
            # requeued only because max_num_timeout > 0
            "hydra.launcher.timeout_min=10",
            "hydra.launcher.cpus_per_task=1",
            *PREEMPTED,
            "hydra.job.config.override_dirname.exclude_keys=["
            "trainer.epochs,trainer.batch_size,trainer.checkpoint_every,"
            "trainer.progress]",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    reference, job = None, None
    try:
        job_dir = _wait(
            "the job's submitit folder",
            # a directory named by the job id (submitit also writes <uuid>.pkl files
            # there, some of whose names start with a digit)
            lambda: next(
                (
                    p
                    for p in sweep_dir.glob(".submitit/*")
                    if p.is_dir() and p.name.isdigit()
                ),
                None,
            ),
            proc,
            lambda: (tmp_path / "sweep.txt").read_text(),
        )
        job = job_dir.name
        log_path = job_dir / f"{job}_0_log.out"

        def log() -> str:
            return log_path.read_text() if log_path.exists() else ""

        def epoch() -> int:
            path = run_dir / "checkpoint.msgpack"
            return read_checkpoint(str(path))[0]["epoch"] if path.exists() else 0

        def resumed() -> list[int]:
            found = re.findall(r"resuming from the checkpoint of epoch (\d+)", log())
            return [int(e) for e in found]

        def scontrol(*args: str) -> str:
            res = subprocess.run(
                ["scontrol", *args], capture_output=True, text=True, env=env
            )
            assert res.returncode == 0, res.stderr
            return res.stdout

        # (1) the time limit's signal, once the job has a checkpoint
        first = _wait("a first checkpoint", epoch, proc, log)
        assert first < 300, "the job finished before it was signalled"
        signalled = subprocess.run(
            ["scancel", "--signal=USR2", job], capture_output=True, text=True, env=env
        )
        assert signalled.returncode == 0, signalled.stderr
        _wait("submitit's requeue", lambda: "Requeued job" in log(), proc, log)
        # the uninterrupted run, on this machine, while the job waits to restart
        reference = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.train",
                *PREEMPTED,
                f"hydra.run.dir={clean}",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        at = _wait("the requeued job to resume", resumed, proc, log)[0]
        # (2) pre-emption, once the requeued run has written a checkpoint of its own
        _wait("a checkpoint after the resume", lambda: epoch() > at, proc, log)
        urgent = subprocess.run(
            ["sbatch", "-p", "urgent", "-c", node_cpus, "-o", "/dev/null"]
            + ["-J", "urgent", "--wrap", "true"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert urgent.returncode == 0, urgent.stderr
        again = _wait(
            "the pre-empted job to resume (did it finish before it was killed?)",
            lambda: resumed()[1:],
            proc,
            log,
        )[0]
        assert again > at
        status = proc.wait(timeout=300)
        assert status == 0, (tmp_path / "sweep.txt").read_text()[-3000:]
        status = reference.wait(timeout=300)
        assert status == 0, (tmp_path / "reference.txt").read_text()[-2000:]
    finally:
        if proc.poll() is None and job is not None:  # the test failed: no job left
            subprocess.run(["scancel", job], env=env, capture_output=True)
        for p in (proc, reference):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        out.close()
        errors.close()

    text = log()
    assert "this job is timed-out" in text, text[-3000:]
    assert f"Requeued job {job} (2 remaining timeouts)" in text, text[-3000:]
    assert text.count(f"Starting with JobEnvironment(job_id={job},") == 3
    assert "sweep: 1 runs: 1 ok, 0 failed" in (tmp_path / "sweep.txt").read_text()
    # Slurm itself requeued it once more (the pre-emption), and the job was submitted
    # requeueable with the time limit's signal
    assert "Restarts=2" in scontrol("show", "job", job)
    submission = (job_dir / f"{job}_submission.sh").read_text()
    assert "#SBATCH --requeue" in submission
    assert "#SBATCH --signal=USR2@120" in submission
    with open(run_dir / "results.json") as f1, open(clean / "results.json") as f2:
        interrupted, uninterrupted = json.load(f1), json.load(f2)
    assert interrupted["status"] == "ok"
    assert [e["epoch"] for e in interrupted["history"]] == list(range(1, 301))
    assert _numbers(interrupted) == _numbers(uninterrupted)
