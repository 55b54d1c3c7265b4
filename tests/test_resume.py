"""Killed runs resume from their checkpoint; finished runs and sweeps do not retrain."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bp_alternatives.experiment import run
from bp_alternatives.train import (
    Checkpointer,
    CheckpointMismatchError,
    read_checkpoint,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMD = [
    sys.executable,
    "-m",
    "experiments.train",
    "trainer.epochs=40",
    "trainer.checkpoint_every=1",
    "trainer.progress=false",
    "logger=csv",
]


def _numbers(res):
    """results.json minus what legitimately differs between runs (timings)."""
    hist = [
        {k: v for k, v in e.items() if k != "epoch_seconds"} for e in res["history"]
    ]
    return res["final"], hist, res["status"]


def test_killed_run_resumes_to_the_same_results(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen(
            [*CMD, f"hydra.run.dir={killed}"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 300
        while not (killed / "checkpoint.msgpack").exists():
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-2000:]
            assert time.time() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "results.json").exists(), "run ended before it was killed"
    killed_at = read_checkpoint(str(killed / "checkpoint.msgpack"))[0]["epoch"]
    assert killed_at < 40
    resumed = subprocess.run(
        [*CMD, f"hydra.run.dir={killed}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from the checkpoint of epoch" in resumed.stdout
    subprocess.run(
        [*CMD, f"hydra.run.dir={clean}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )
    with open(killed / "results.json") as f1, open(clean / "results.json") as f2:
        assert _numbers(json.load(f1)) == _numbers(json.load(f2))

    # metrics.csv holds every epoch, those before the kill replayed on resume, with
    # the columns and numbers of the uninterrupted run's (timings aside)
    def table(d):
        with open(d / "metrics.csv") as f:
            return [
                {k: v for k, v in r.items() if "seconds" not in k}
                for r in csv.DictReader(f)
            ]

    resumed_rows, clean_rows = table(killed), table(clean)
    assert [int(r["step"]) for r in resumed_rows] == list(range(1, 41))
    assert resumed_rows == clean_rows


def test_checkpoint_of_another_config_is_refused(cfg_factory, tmp_path, capsys):
    """An interrupted run's checkpoint is never continued under another config."""
    cfg = cfg_factory("model.hidden=[16]", "trainer.epochs=2")
    run(cfg)
    os.remove(tmp_path / "results.json")  # as if killed after its last checkpoint
    with pytest.raises(CheckpointMismatchError, match="different configuration"):
        run(cfg_factory("model.hidden=[16]", "trainer.epochs=2", "optim.lr=0.5"))
    # settings that change no number (checkpoint_every) resume the same checkpoint
    res = run(
        cfg_factory(
            "model.hidden=[16]", "trainer.epochs=2", "trainer.checkpoint_every=1"
        )
    )
    assert "resuming from the checkpoint of epoch 2" in capsys.readouterr().out
    assert [e["epoch"] for e in res["history"]] == [1, 2]


def test_checkpoint_epoch_and_state_are_one_file(tmp_path, monkeypatch):
    """Killed between writing the state and the readable copy: load() still returns
    the new state with its own epoch, never one epoch's state with another's."""
    import bp_alternatives.train.checkpoint as checkpoint

    ck = Checkpointer(str(tmp_path), every=1, tag="a")
    ck.save({"w": np.zeros(2)}, {"epoch": 1})
    real = checkpoint.write_atomic

    def die_on_the_json(path, data):
        if path.endswith(".json"):
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(checkpoint, "write_atomic", die_on_the_json)
    with pytest.raises(KeyboardInterrupt):
        ck.save({"w": np.ones(2)}, {"epoch": 2})
    state, meta = ck.load({"w": np.zeros(2)})
    assert meta["epoch"] == 2 and state["w"].tolist() == [1.0, 1.0]
    with pytest.raises(CheckpointMismatchError):
        Checkpointer(str(tmp_path), every=1, tag="b").load({"w": np.zeros(2)})


def test_finished_run_is_not_retrained(cfg_factory, tmp_path, capsys):
    cfg = cfg_factory("model.hidden=[16]", "trainer.epochs=2")
    first = run(cfg)
    mtime = os.path.getmtime(tmp_path / "results.json")
    again = run(cfg)
    assert "already finished, not retraining" in capsys.readouterr().out
    assert again["final"] == first["final"]
    assert os.path.getmtime(tmp_path / "results.json") == mtime
    # a different config in the same directory is refused, not silently mixed
    with pytest.raises(ValueError, match="different configuration"):
        run(cfg_factory("model.hidden=[17]", "trainer.epochs=2"))


def test_rerun_of_a_finished_sweep_retrains_nothing(tmp_path):
    sweep = [
        sys.executable,
        "-m",
        "experiments.train",
        "-m",
        "rule=bp,manual_bp",
        "model.hidden=[16]",
        "trainer.epochs=2",
        f"hydra.sweep.dir={tmp_path}",
    ]
    subprocess.run(sweep, cwd=REPO, check=True, capture_output=True, timeout=600)
    files = sorted(str(p) for p in tmp_path.rglob("results.json"))
    assert len(files) == 2
    mtimes = [os.path.getmtime(p) for p in files]
    proc = subprocess.run(sweep, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0
    assert proc.stdout.count("already finished, not retraining") == 2
    assert [os.path.getmtime(p) for p in files] == mtimes


def test_results_json_is_written_atomically(cfg_factory, tmp_path, monkeypatch):
    """A crash while writing leaves the previous results.json intact."""
    import bp_alternatives.rundir as rundir

    cfg = cfg_factory("model.hidden=[16]", "trainer.epochs=1")
    run(cfg)
    before = (tmp_path / "results.json").read_text()

    def crash(obj, f, **kw):
        f.write('{"half": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        rundir.write_json(str(tmp_path / "results.json"), {"x": 1})
    assert (tmp_path / "results.json").read_text() == before


def test_same_config_and_seed_give_bit_identical_results(cfg_factory, tmp_path):
    cfg = cfg_factory("rule=manual_bp", "model.hidden=[32]", "trainer.epochs=3")
    a = run(cfg, out_dir=str(tmp_path / "a"))
    b = run(cfg, out_dir=str(tmp_path / "b"))
    assert _numbers(a) == _numbers(b)  # exact equality, not approx
    c = run(
        cfg_factory(
            "rule=manual_bp", "model.hidden=[32]", "trainer.epochs=3", "seed=1"
        ),
        out_dir=str(tmp_path / "c"),
    )
    assert _numbers(a) != _numbers(c)
