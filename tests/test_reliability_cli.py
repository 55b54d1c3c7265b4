"""Reliability at the command line: a refused re-run into a finished run or sweep
directory changes no file, a sweep whose joblib worker is killed still ends with its
summary, and a read-only or full disk under Hydra's own files is one clear block.
Tiny runs: a 16-unit MLP, 1 epoch on digits."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from bp_alternatives import sweep
from bp_alternatives.cli import hydra_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "model.hidden=[16]",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.checkpoint_every=0",
]


def train(*overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    flags = ["-m"] if multirun else []
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *flags, *TINY, *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(directory) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory``: its bytes and modification time (ns)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, directory)] = (f.read(), os.stat(p).st_mtime_ns)
    return out


def assert_refused(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.startswith("error: ") and words in proc.stderr
    assert "\n  fix: " in proc.stderr


def test_a_refused_rerun_into_a_finished_run_changes_no_file(tmp_path):
    run_dir = tmp_path / "run"
    first = train("rule=fa", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    stale = run_dir / ".results.tmp.999999999.1.json"  # left by a killed writer
    stale.write_text("{")
    before = snapshot(run_dir)
    proc = train("rule=bp", f"hydra.run.dir={run_dir}")
    assert_refused(proc, "holds a finished run of a different configuration")
    assert "rule.name: 'fa' -> 'bp'" in proc.stderr
    assert snapshot(run_dir) == before
    again = train("rule=fa", f"hydra.run.dir={run_dir}")  # the same config: allowed
    assert again.returncode == 0 and "already finished" in again.stdout
    assert not stale.exists()


def test_a_refused_sweep_rerun_changes_no_file(tmp_path):
    """The README's advice: leave trainer.epochs out of the directory names; a
    re-run with other epochs maps onto the finished jobs and is refused whole."""
    exclude = "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(
        k.split("=")[0] for k in TINY
    )
    args = ["rule=bp,fa", f"hydra.sweep.dir={tmp_path}"]
    first = train(*args, exclude + "]", multirun=True)
    assert first.returncode == 0, first.stderr[-3000:]
    before = snapshot(tmp_path)
    proc = train(*args, "trainer.epochs=2", exclude + "]", multirun=True)
    assert_refused(proc, "holds a finished run of a different configuration")
    assert "trainer.epochs: 1 -> 2" in proc.stderr
    assert snapshot(tmp_path) == before


def test_a_killed_joblib_worker_ends_the_sweep_with_its_summary(tmp_path):
    """A worker killed (as by the OOM killer) makes joblib raise
    TerminatedWorkerError; the sweep still writes and prints its summary, where
    the job is counted (under a directory nested by the '/' in a value), exit 1."""
    proc = train(
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "data._target_=bp_alternatives.data.load_digits,tests.reliability_helpers.killed",
        "+tag=a/b",
        f"hydra.sweep.dir={tmp_path}",
        multirun=True,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "sweep: aborted by TerminatedWorkerError" in proc.stderr
    summary = (tmp_path / "sweep_summary.md").read_text()
    assert "no record" in summary and "+tag=a/b" in summary, summary


@pytest.mark.parametrize(
    "code,status,words",
    [
        (errno.EROFS, 2, "is read-only"),
        (errno.ENOSPC, 2, "no space left on the device"),
        (errno.EIO, None, None),
    ],
)
def test_a_read_only_or_full_disk_under_hydra_is_one_block(
    tmp_path, capsys, monkeypatch, code, status, words
):
    """What Hydra raises while it opens the job's log or saves its config."""
    monkeypatch.setattr(sweep, "_active", None)

    def main():
        raise OSError(code, os.strerror(code), str(tmp_path / "train.log"))

    if status is None:  # any other OSError is a bug: its traceback is kept
        with pytest.raises(OSError):
            hydra_cli(main)()
        return
    with pytest.raises(SystemExit) as ex:
        hydra_cli(main)()
    assert ex.value.code == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and str(tmp_path) in err


def test_a_sweep_aborted_by_a_full_disk_still_gets_its_summary(
    tmp_path, capsys, monkeypatch
):
    (tmp_path / "rule=bp" / ".hydra").mkdir(parents=True)
    monkeypatch.setattr(sweep, "_active", str(tmp_path))

    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "config.yaml")

    with pytest.raises(SystemExit) as ex:
        hydra_cli(main)()
    assert ex.value.code == 2
    assert "1 no record" in (tmp_path / "sweep_summary.md").read_text()
    err = capsys.readouterr().err
    assert "sweep: aborted by OSError" in err and "no space left" in err
