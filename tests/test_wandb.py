"""logger=wandb, offline: what was logged is read back from the run's .wandb file with
wandb's own reader (``wandb leet inspect --json``); the online fallbacks (no API key,
unreachable server) go offline with a one-line notice and never hang."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from bp_alternatives.compare import main
from bp_alternatives.report.render import CSV_FIELDS
from bp_alternatives.report.runs import load_run
from bp_alternatives.writers import WandbWriter
from tests.test_compare import fake_results
from tests.test_sweeps import TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wandb_file(directory) -> str:
    pattern = os.path.join(glob.escape(str(directory)), "wandb", "offline-run-*")
    files = glob.glob(os.path.join(pattern, "run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def inspect(path: str) -> tuple[dict, list[dict]]:
    """(``--summary --json``: config, summary, name...; ``--json``: every record)."""

    def leet(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", *args, path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    summary = json.loads(leet("--summary", "--json"))
    records = [json.loads(line) for line in leet("--json").splitlines() if line]
    return summary, records


def test_sweep_job_logs_config_history_and_summary(tmp_path):
    """One job of a sweep with logger=wandb: named after its overrides, grouped by
    the sweep, job_type = the rule; per-epoch metrics equal results.json's history."""
    sweep_dir = tmp_path / "my_sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            "rule=bp",
            "seed=3",
            "logger=wandb",
            "logger.tags=[t1,t2]",
            *TINY,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = sweep_dir / "logger.tags=[t1,t2],logger=wandb,rule=bp,seed=3"
    with open(run_dir / "results.json") as f:
        res = json.load(f)
    summary, records = inspect(wandb_file(run_dir))

    (run,) = [r["run"] for r in records if r["type"] == "run"]
    # nothing varies in this one-job sweep: its overrides but the logger's
    assert run["display_name"] == (
        "model.hidden=[8],rule=bp,seed=3,trainer.batch_size=256,trainer.epochs=2,"
        "trainer.progress=False"
    )
    assert run["run_group"] == "my_sweep"
    assert run["job_type"] == "bp"
    assert run["project"] == "bp-alternatives"
    assert run["tags"] == [
        "t1",
        "t2",
        "rule=bp",
        "data=digits",
        "model=mlp",
        "optim=adam",
    ]
    # the resolved config
    cfg = summary["config"]
    assert cfg["rule"]["name"] == "bp" and cfg["seed"] == 3
    assert cfg["model"]["hidden"] == [8] and cfg["trainer"]["epochs"] == 2
    assert cfg == {k: v for k, v in res["config"].items() if k in cfg}

    history = [r["history"] for r in records if r["type"] == "history"]
    assert [h["step"]["num"] for h in history] == [1, 2]
    for h, entry in zip(history, res["history"]):
        item = h["item"]
        for key in ("test_accuracy", "test_loss", "train_accuracy", "train_loss"):
            assert item[key] == pytest.approx(entry[key]), key  # one name everywhere
        for key in ("alignment_deg", "grad_norm"):  # per stage
            for s, v in enumerate(entry[key]):
                assert item[f"{key}/stage{s}"] == pytest.approx(v), (key, s)
        assert f"grad_norm/stage{len(entry['grad_norm']) - 1}" in item

    s = summary["summary"]
    for k, v in res["final"].items():
        assert s[f"final/{k}"] == pytest.approx(v), k
    assert s["status"] == "ok"
    assert s["examples_per_second"] == pytest.approx(res["examples_per_second"])
    assert summary["state"] == "finished" and summary["exit_code"] == 0


def test_online_without_api_key_goes_offline_with_one_notice(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    start = time.perf_counter()
    w = WandbWriter(mode="online", directory=str(tmp_path), name="x", init_timeout=5)
    w.write_scalars(1, {"train_loss": 0.5})
    w.close()
    assert time.perf_counter() - start < 60
    notices = [line for line in capsys.readouterr().err.splitlines() if "W&B" in line]
    assert notices == [
        "wandb: no W&B API key (WANDB_API_KEY or ~/.netrc); logging offline "
        "(upload later: wandb sync)"
    ]
    _, records = inspect(wandb_file(tmp_path))
    (h,) = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert h["train_loss"] == 0.5


@pytest.mark.slow  # waits out init_timeout by design
def test_online_with_unreachable_server_goes_offline_quickly(tmp_path):
    """A key but no server (a closed port on loopback): init gives up after
    init_timeout, the run continues offline. In a subprocess: the bogus key and URL
    must not leak into wandb's process-wide state."""
    code = textwrap.dedent(
        f"""
        from bp_alternatives.writers import WandbWriter
        w = WandbWriter(mode="online", directory={str(tmp_path)!r}, init_timeout=3)
        w.write_scalars(1, {{"train_loss": 0.25}})
        w.close()
        print("mode", w.run.settings.mode)
        """
    )
    env = dict(os.environ, WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mode offline" in proc.stdout
    notices = [line for line in proc.stderr.splitlines() if "cannot reach W&B" in line]
    assert len(notices) == 1 and notices[0].endswith(
        "logging offline (upload later: wandb sync)"
    ), proc.stderr
    assert elapsed < 60
    _, records = inspect(wandb_file(tmp_path))
    (h,) = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert h["train_loss"] == 0.25


@pytest.mark.slow  # waits out init_timeout by design
def test_online_init_refused_by_a_server_resumes_offline_under_its_id(tmp_path):
    """A server that answers every request with HTTP 500: the reachability check
    passes, wandb.init online fails, and the run goes offline under the same run id
    (wandb's service held the failed online run's id: 'run ID ... is in use')."""
    import http.server
    import threading

    class Fails(http.server.BaseHTTPRequestHandler):
        def _fail(self):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _fail

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fails)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = textwrap.dedent(
        f"""
        from bp_alternatives.writers import WandbWriter
        w = WandbWriter(mode="online", directory={str(tmp_path)!r}, init_timeout=3,
                        run_id="abc123def")
        w.write_scalars(1, {{"train_loss": 0.25}})
        w.close()
        print("mode", w.run.settings.mode, w.run.id)
        """
    )
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env = dict(os.environ, WANDB_API_KEY="x" * 40, WANDB_BASE_URL=url)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mode offline abc123def" in proc.stdout, proc.stderr[-3000:]
    _, records = inspect(wandb_file(tmp_path))
    (h,) = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert h["train_loss"] == 0.25


@pytest.mark.slow  # waits out init_timeout once
def test_online_sweep_with_a_key_and_no_network_trains_every_job_offline(tmp_path):
    """logger.mode=online, an API key, no server (a closed port on loopback): every
    job of the sweep falls back to offline under its own run id and trains (wandb's
    service still holds the failed online run's id: 'run ID ... is in use');
    the second job does not wait for the server again."""
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ, WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            "seed=0,1",
            "logger=wandb",
            "logger.mode=online",
            "logger.init_timeout=3",
            "hydra.callbacks.sweep_summary.compare=false",
            *TINY,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("cannot reach W&B") == 1, proc.stderr[-3000:]
    assert proc.stderr.count("W&B was unreachable earlier") == 1, proc.stderr[-3000:]
    for seed in (0, 1):
        run_dir = (
            sweep_dir
            / f"logger.init_timeout=3,logger.mode=online,logger=wandb,seed={seed}"
        )
        with open(run_dir / "results.json") as f:
            res = json.load(f)
        assert res["status"] == "ok", res.get("error")
        summary, records = inspect(wandb_file(run_dir))
        assert summary["summary"]["status"] == "ok"
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        assert len(history) == 2
        # the learning rate of each epoch, as in results.json's history
        assert [h["lr"] for h in history] == [e["lr"] for e in res["history"]]


def test_disabled_mode_writes_nothing(tmp_path):
    w = WandbWriter(mode="disabled", directory=str(tmp_path))
    w.write_scalars(1, {"train_loss": 1.0})
    w.write_summary({"status": "ok"})
    w.close()
    assert not glob.glob(str(tmp_path / "wandb" / "*run-*"))


def test_unknown_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown wandb mode 'offlne'.*'offline'"):
        WandbWriter(mode="offlne", directory=str(tmp_path))


def test_compare_logs_table_and_plots_to_one_run(tmp_path):
    for rule in ("bp", "fa"):
        for seed in (0, 1):
            fake_results(tmp_path / f"{rule}{seed}", rule, seed, 0.9 - 0.1 * seed)
    out = tmp_path / "cmp"
    assert main([str(tmp_path), "--plots-dir", str(out), "--wandb", "offline"]) == 0
    summary, records = inspect(wandb_file(out))
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["job_type"] == "compare" and run["run_group"] == tmp_path.name
    (item,) = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert item["comparison._type"] == "table-file"
    for kind in ("learning_curves", "alignment", "grad_norm"):
        assert item[f"plots/{kind}_digits._type"] == "image-file"
    files = os.path.join(os.path.dirname(wandb_file(out)), "files")
    with open(os.path.join(files, item["comparison.path"])) as f:
        logged = json.load(f)
    assert logged["columns"] == list(CSV_FIELDS)
    rows = {r[0]: dict(zip(CSV_FIELDS, r)) for r in logged["data"]}
    # bp and fa: errors 10 % and 20 % -> mean 15
    assert rows["bp"]["test_error_mean"] == pytest.approx(15.0)
    assert rows["fa"]["n_ok"] == 2
    assert "| bp | 15.00 ± 7.07 (n=2)" in summary["summary"]["markdown"]


RULES = ("bp", "manual_bp")
# TINY, smaller still: one epoch of a 16-unit MLP
TINY_1 = [
    o.replace("model.hidden=[8]", "model.hidden=[16]").replace(
        "trainer.epochs=2", "trainer.epochs=1"
    )
    for o in TINY
]


def test_wandb_sweep_logs_the_comparison_to_a_compare_run_in_its_group(tmp_path):
    """A 2-run sweep with logger=wandb (offline): at its end the sweep callback logs
    the comparison table and plots to one more run, job_type=compare, in the group of
    the per-run W&B runs (the sweep directory's name)."""
    sweep_dir = tmp_path / "wb_sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            f"rule={','.join(RULES)}",
            "logger=wandb",
            "logger.mode=offline",
            *TINY_1,
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        env=dict(os.environ, WANDB_DIR=str(tmp_path / "wandb_dir")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "table and plots logged to W&B (group wb_sweep" in proc.stdout, proc.stdout

    run_dirs = {
        r: sweep_dir / f"logger.mode=offline,logger=wandb,rule={r}" for r in RULES
    }
    groups = set()
    for rule, run_dir in run_dirs.items():
        _, records = inspect(wandb_file(run_dir))
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert run["job_type"] == rule
        groups.add(run["run_group"])
    assert groups == {"wb_sweep"}

    compare_dir = sweep_dir / "compare"
    summary, records = inspect(wandb_file(compare_dir))
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["job_type"] == "compare" and run["run_group"] == "wb_sweep"
    assert run["display_name"] == "compare-wb_sweep"
    assert run["project"] == "bp-alternatives"
    (item,) = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert item["comparison._type"] == "table-file"
    assert item["plots/learning_curves_digits._type"] == "image-file"
    files = os.path.join(os.path.dirname(wandb_file(compare_dir)), "files")
    with open(os.path.join(files, item["comparison.path"])) as f:
        logged = json.load(f)
    assert logged["columns"] == list(CSV_FIELDS)
    rows = {r[0]: dict(zip(CSV_FIELDS, r)) for r in logged["data"]}
    assert set(rows) == set(RULES)
    for rule, run_dir in run_dirs.items():  # one seed each: that run's test error
        assert rows[rule]["n_ok"] == 1
        expected = load_run(str(run_dir / "results.json")).test_error
        assert rows[rule]["test_error_mean"] == pytest.approx(expected)
    assert "| bp |" in summary["summary"]["markdown"]
    assert summary["state"] == "finished"


def test_sweep_wandb_settings_follow_the_logger():
    from omegaconf import OmegaConf

    from bp_alternatives.sweep import wandb_settings

    def cfg(**logger):
        return OmegaConf.create({"logger": logger})

    assert wandb_settings(cfg(name="none"), "/x/s1") is None
    assert wandb_settings(cfg(name="csv"), "/x/s1") is None
    assert wandb_settings(cfg(name="wandb", mode="disabled"), "/x/s1") is None
    base = {"name": "wandb", "project": "p", "entity": "e", "mode": "online"}
    assert wandb_settings(cfg(**base, group=None, init_timeout=5), "/x/s1") == {
        "mode": "online",
        "project": "p",
        "entity": "e",
        "group": "s1",  # as run_job groups the sweep's runs
        "init_timeout": 5.0,
    }
    assert wandb_settings(cfg(**base, group="g"), "/x/s1")["group"] == "g"
    experiment = OmegaConf.create(
        {
            "logger": {**base, "group": None},
            "hydra": {"runtime": {"choices": {"experiment": "compare_digits"}}},
        }
    )
    assert wandb_settings(experiment, "/x/s1")["group"] == "compare_digits"


def test_run_name_holds_the_overrides_that_vary(tmp_path):
    from omegaconf import OmegaConf

    from bp_alternatives.sweep import JobContext, run_name

    sweep = ["rule=bp,fa", "seed=range(2)", "logger=wandb", "trainer.epochs=3"]
    OmegaConf.save(
        {"hydra": {"overrides": {"task": sweep}}}, tmp_path / "multirun.yaml"
    )
    job = ["rule=fa", "seed=1", "logger=wandb", "trainer.epochs=3", "optim.lr=0.1"]
    ctx = JobContext(str(tmp_path / "j"), True, str(tmp_path), "", job, 3)
    params = {"sweeper": {"params": {"optim.lr": "0.1,0.01"}}}
    assert run_name(ctx, OmegaConf.create(params)) == "optim.lr=0.1,rule=fa,seed=1"
    assert run_name(ctx, OmegaConf.create({})) == "rule=fa,seed=1"
    single = ctx._replace(multirun=False, sweep_dir=None)
    assert run_name(single, OmegaConf.create({})) == (
        "optim.lr=0.1,rule=fa,seed=1,trainer.epochs=3"
    )


def test_a_wandb_error_does_not_fail_the_sweep_comparison(
    tmp_path, monkeypatch, capsys
):
    from bp_alternatives import compare
    from bp_alternatives.sweep import compare_sweep

    fake_results(tmp_path / "bp0", "bp", 0, 0.9)

    def broken(*args, **kwargs):
        raise RuntimeError("no wandb service")

    monkeypatch.setattr(compare, "log_to_wandb", broken)
    text = compare_sweep(str(tmp_path), plots=False, wandb={"mode": "offline"})
    assert text is not None and "| bp |" in text
    assert "compare: W&B: RuntimeError: no wandb service" in capsys.readouterr().err


def test_resumed_run_continues_the_same_wandb_run(tmp_path):
    """A run resumed from its checkpoint (re-run, or requeued after pre-emption)
    logs to the same W&B run id, so the group does not get a second, partial run;
    another run directory gets another id."""
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        "logger=wandb",
        "logger.mode=offline",
        "model.hidden=[8]",
        "trainer.epochs=2",
        "trainer.checkpoint_every=1",
        "trainer.progress=false",
    ]
    env = {**os.environ, "WANDB_SILENT": "true"}

    def ids(d):
        runs = sorted(
            glob.glob(os.path.join(glob.escape(str(d)), "wandb", "offline-run-*"))
        )
        # offline-run-<date>_<time>-<id>[-<n>]
        return [os.path.basename(r).split("-")[3] for r in runs]

    def train(d: str) -> str:
        proc = subprocess.run(
            [*cmd, f"hydra.run.dir={tmp_path / d}"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    train("a")
    train("b")
    os.remove(tmp_path / "a" / "results.json")  # as if killed after its checkpoint
    time.sleep(1.1)  # a new offline-run directory name
    assert "resuming from the checkpoint of epoch 2" in train("a")
    first, again = ids(tmp_path / "a")
    assert first == again and ids(tmp_path / "b") != [first]


@pytest.mark.parametrize("has_entry", [True, False])
def test_api_key_for_another_host_is_found_as_wandb_finds_it(tmp_path, has_entry):
    """A user logged in to their own W&B server (`wandb login --host=...` saves the
    host in wandb's settings, the key in ~/.netrc under that host). In a subprocess:
    wandb reads HOME once per process."""
    settings = tmp_path / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nbase_url = https://wandb.example.org\n")
    if has_entry:
        (tmp_path / ".netrc").write_text(
            "machine wandb.example.org\n  login user\n  password " + "a" * 40 + "\n"
        )
        (tmp_path / ".netrc").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "NETRC"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from bp_alternatives.writers import _has_api_key; print(_has_api_key())",
        ],
        env={**env, "HOME": str(tmp_path), "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip().splitlines()[-1] == str(has_entry), proc.stderr
