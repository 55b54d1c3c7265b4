"""Reliability, in process: values refused at config check, damaged checkpoints and
sweep summaries survived, refusals that write nothing, the run directory's lock and
stale temporary files, data errors at their real place, and a download deadline.
(The command-line ends of these: tests/test_reliability_cli.py.)"""

from __future__ import annotations

import errno
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from bp_alternatives import guard
from bp_alternatives.cli import error_block
from bp_alternatives.config import ConfigError, validate_config
from bp_alternatives.data import DataError
from bp_alternatives.data import files as df
from bp_alternatives.data.prepare import prepare
from bp_alternatives.rundir import RunDirError
from bp_alternatives.sweep_records import read_records, summarise
from bp_alternatives.train.checkpoint import Checkpointer
from tests.conftest import compose_cfg

# --- values refused before anything loads -------------------------------------------


@pytest.mark.parametrize(
    "override,field",
    [
        ("optim.b1=1.5", "optim.b1"),
        ("optim.b1=-0.1", "optim.b1"),
        ("optim.b2=1.0", "optim.b2"),
        ("optim.eps=-1.0", "optim.eps"),
        ("optim.eps=0", "optim.eps"),
        ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("optim.momentum=1.0", "optim.momentum"),
        ("optim.lr=inf", "optim.lr"),
        ("optim.warmup_steps=-1", "optim.warmup_steps"),
        ("optim.decay_factor=0", "optim.decay_factor"),
        ("trainer.seeds=[]", "trainer.seeds"),
        ("trainer.seeds=[1,1,2]", "trainer.seeds"),
        ("data.test_size=1.5", "data.test_size"),
        ("data.test_size=-5", "data.test_size"),
        ("data.val_fraction=1.0", "data.val_fraction"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_field_value_and_fix(override, field):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    block = error_block(err.value)
    assert block.startswith(f"error: {field}")
    assert override.split("=", 1)[1] in block.replace(" ", "")
    assert "\n  fix: " in block


def test_a_duplicate_seed_fix_keeps_each_seed_once():
    with pytest.raises(ConfigError) as err:
        validate_config(compose_cfg(["trainer.seeds=[3,1,3]"]))
    assert err.value.fix == "trainer.seeds=[3,1]"


def test_valid_values_pass():
    validate_config(compose_cfg(["optim.b1=0", "optim.b2=0.99", "trainer.seeds=[0,1]"]))


@pytest.mark.parametrize("override", ["data.train_subset=0", "data.timeout=0"])
def test_file_dataset_values_are_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        validate_config(compose_cfg(["data=fashion_mnist", override]))


def test_data_root_pointing_at_a_file_is_refused(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        validate_config(compose_cfg(["data=fashion_mnist", f"data.root={f}"]))


# --- data errors at their real place -------------------------------------------------


def _signals(n_train=20, n_test=5):
    rng = np.random.RandomState(0)
    return {
        "x_train": rng.randn(n_train, 8).astype(np.float32),
        "y_train": rng.randint(0, 3, n_train).astype(np.uint8),
        "x_test": rng.randn(n_test, 8).astype(np.float32),
        "y_test": rng.randint(0, 3, n_test).astype(np.uint8),
    }


def test_a_nan_is_reported_at_its_real_index_not_zero():
    arrays = _signals()
    arrays["x_train"][7, 3] = np.nan
    with pytest.raises(DataError, match="train split: non-finite input .* index 7"):
        prepare("sig", arrays, 3, standardise=True)


def test_an_empty_training_split_is_a_data_error_naming_the_options():
    with pytest.raises(DataError, match="val_fraction=0.99 .* no training examples"):
        prepare("sig", _signals(n_train=20), 3, val_fraction=0.99, train_subset=3)
    from bp_alternatives.data import load_digits

    with pytest.raises(DataError, match="test_size=1797"):
        load_digits(test_size=1797)


def test_a_cache_whose_counts_differ_is_rebuilt_not_an_index_error(tmp_path):
    arrays = _signals()
    arrays["y_train"] = arrays["y_train"][:10]
    path = tmp_path / "c.npz"
    assert df.save_cache(path, arrays, verified=True)
    assert df.load_cache(path, df.SPLIT_KEYS, need_verified=True) is None


# --- checkpoints: checksum, the last two kept ----------------------------------------


def _state(v):
    return {"w": np.full((3,), float(v), np.float32)}


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"",  # empty
        lambda b: os.urandom(len(b)),  # garbage
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # one bit of the state
    ],
    ids=["truncated", "empty", "garbage", "bitflip"],
)
def test_a_damaged_checkpoint_falls_back_to_the_previous(tmp_path, capsys, damage):
    ck = Checkpointer(str(tmp_path), every=1, tag="t")
    ck.save(_state(1), {"epoch": 1})
    ck.save(_state(2), {"epoch": 2})
    state, meta = ck.load(_state(0))
    assert meta["epoch"] == 2 and state["w"][0] == 2
    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(damage(path.read_bytes()))
    state, meta = ck.load(_state(0))
    assert meta["epoch"] == 1 and state["w"][0] == 1
    err = capsys.readouterr().err
    assert f"{path} is damaged" in err
    assert "resuming from the previous checkpoint" in err
    assert not path.exists() and (tmp_path / "checkpoint.msgpack.damaged").exists()
    ck.save(_state(3), {"epoch": 3})  # the damaged one is not rotated in
    assert ck.load(_state(0))[1]["epoch"] == 3
    assert "damaged" not in capsys.readouterr().err
    path.write_bytes(b"junk")
    (tmp_path / "checkpoint.prev.msgpack").write_bytes(b"")
    assert ck.load(_state(0)) is None
    assert "training from epoch 1" in capsys.readouterr().err


# --- sweep bookkeeping ---------------------------------------------------------------


def _job(sweep, name, status=None, acc=0.9):
    d = sweep / name
    (d / ".hydra").mkdir(parents=True)
    if status:
        final = {"test_accuracy": acc}
        res = {"status": status, "rule": "bp", "final": final, "history": []}
        (d / "results.json").write_text(json.dumps(res))
    return d


def test_a_damaged_summary_line_is_skipped_and_rebuilt_from_run_dirs(tmp_path, capsys):
    _job(tmp_path, "rule=bp", "ok")
    _job(tmp_path, "rule=fa", "failed")
    line = {"job": 0, "dir": "rule=bp", "status": "ok", "test_accuracy": 0.9}
    (tmp_path / "sweep_summary.jsonl").write_text(
        json.dumps(line) + "\n" + '{"job": 1, "dir": "rule=f\n' + "\x00garbage\n"
    )
    head, bad = summarise(str(tmp_path))
    assert head == "2 runs: 1 ok, 1 failed"
    assert [r["dir"] for r in bad] == ["rule=fa"]
    err = capsys.readouterr().err
    assert "sweep_summary.jsonl line 2 is damaged" in err
    assert "line 3 is damaged" in err


def test_a_killed_job_under_a_value_with_a_slash_is_counted(tmp_path):
    _job(tmp_path, "rule=bp", "ok")
    _job(tmp_path, "data.root=data/a")  # killed: .hydra/ and nothing else
    records = {r["dir"]: r["status"] for r in read_records(str(tmp_path))}
    assert records == {"rule=bp": "ok", "data.root=data/a": "no record"}


# --- run directories: refusal, lock, stale temporary files --------------------------


def test_a_refusal_leaves_every_file_as_it_was(tmp_path):
    cfg = compose_cfg(["rule=fa"])
    res = {"status": "ok", "rule": "fa", "final": {"test_accuracy": 0.5}}
    res |= {"history": [], "config": json.loads(json.dumps(dict(cfg), default=str))}
    from omegaconf import OmegaConf

    res["config"] = OmegaConf.to_container(cfg, resolve=True)
    (tmp_path / "results.json").write_text(json.dumps(res))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    guard.check_run_dir(str(tmp_path), cfg)  # the same config: no refusal
    with pytest.raises(RunDirError, match="rule.name: 'fa' -> 'bp'"):
        guard.check_run_dir(str(tmp_path), compose_cfg(["rule=bp"]))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_second_process_in_a_run_dir_is_refused_naming_the_holder(tmp_path):
    with guard.run_dir_lock(str(tmp_path)):
        with pytest.raises(RunDirError, match=f"in use by pid {os.getpid()} on "):
            guard.check_run_dir(str(tmp_path), compose_cfg([]))
        with pytest.raises(RunDirError, match="in use by pid"):
            with guard.run_dir_lock(str(tmp_path)):
                pass
    with guard.run_dir_lock(str(tmp_path)):  # free again once released
        pass
    (tmp_path / ".lock").write_text("pid 1 on another-host since 2026-01-01\n")
    with guard.run_dir_lock(str(tmp_path)):  # a first process of several hosts
        with open(tmp_path / ".lock", "w") as f:
            f.write("pid 1 on another-host since 2026-01-01\n")
        guard.check_run_dir(str(tmp_path), compose_cfg([]))


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    stale = tmp_path / "seed=0" / f".checkpoint.tmp.{dead}.1.msgpack"
    stale.parent.mkdir()
    stale.write_bytes(b"x" * 100)
    live = tmp_path / f".results.tmp.{os.getpid()}.1.json"
    live.write_text("{}")
    other = tmp_path / "results.json"
    other.write_text("{}")
    assert guard.clean_stale_temps(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()


@pytest.mark.parametrize(
    "code,words",
    [(errno.EROFS, "is read-only"), (errno.ENOSPC, "no space left on the device")],
)
def test_a_read_only_or_full_disk_is_a_user_error(tmp_path, code, words):
    e = OSError(code, os.strerror(code), str(tmp_path / "train.log"))
    err = guard.writable_error(e)
    assert isinstance(err, RunDirError) and words in str(err) and err.fix
    assert guard.writable_error(OSError(errno.EIO, "io")) is None


# --- a download that trickles ---------------------------------------------------------


class _Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client gave up: what the test wants
            pass

    def log_message(self, *args):
        pass


def test_a_trickling_download_hits_the_whole_download_deadline(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = False  # server_close() joins the handler
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        start = time.monotonic()
        path, errors = df.download(
            df.FileSpec("f.bin"), [url], tmp_path, timeout=5, deadline=1, verify=False
        )
        took = time.monotonic() - start
    finally:
        server.shutdown()
        server.server_close()
    assert path is None and "data.deadline=1 s" in errors[0], errors
    assert took < 5
    assert not list(tmp_path.iterdir())  # nothing left behind


# --- results.json whose metric is not a number ---------------------------------------


@pytest.mark.parametrize("acc", ["NaN", '"0.9"', "null"])
def test_a_non_number_metric_is_counted_as_failed_in_the_table(tmp_path, acc):
    from bp_alternatives.compare import build_table, load_runs, to_markdown

    for seed, a in ((0, "0.9"), (1, acc)):
        d = tmp_path / f"seed={seed}"
        d.mkdir()
        (d / "results.json").write_text(
            '{"status": "ok", "rule": "bp", "dataset": "digits", "seed": '
            f'{seed}, "final": {{"test_accuracy": {a}}}, "history": []}}'
        )
    runs = load_runs([str(tmp_path)])
    bad = [r for r in runs if r.seed == 1][0]
    assert bad.status == "failed" and "not a finite number" in bad.error
    assert "1 failed" in to_markdown(build_table(runs))


def test_compare_of_two_dirs_keeps_each_own_table(tmp_path):
    from bp_alternatives.compare import default_out_dir

    a, b = tmp_path / "a", tmp_path / "b"
    assert default_out_dir([str(a)]) == str(a / "compare")
    assert default_out_dir([str(a), str(b)]) == str(tmp_path / "compare-a+b")


def test_job_context_stub_is_enough_for_records(tmp_path):
    """``record`` needs only the fields it reads (the sweep's JobContext)."""
    from bp_alternatives.sweep_records import record

    ctx = SimpleNamespace(
        out_dir=str(tmp_path / "rule=bp"),
        sweep_dir=str(tmp_path),
        num=0,
        overrides=["rule=bp"],
    )
    record(ctx, {"status": "ok", "final": {"test_accuracy": 0.5}}, 1.0)
    assert read_records(str(tmp_path))[0]["status"] == "ok"
