"""The protocol (bp_alternatives.protocol): selection on validation only, the search
resumes after a kill, the evaluation over seeds."""

from __future__ import annotations

import os

import optuna
import pytest
from omegaconf import open_dict

from bp_alternatives import protocol
from bp_alternatives.protocol import (
    ProtocolError,
    objective_value,
    open_study,
    search,
    select_best,
)
from tests.conftest import compose_cfg

SPACE = {"optim.lr": {"low": 1e-4, "high": 1e-1, "log": True}}


def _results(val: float, test: float) -> dict:
    return {
        "status": "ok",
        "final": {"val_accuracy": val, "test_accuracy": test},
        "selected": {"epoch": 1, "val_accuracy": val, "test_accuracy": test},
    }


def test_selection_never_reads_test():
    # trial 1 has the best test accuracy and the worst validation accuracy
    runs = [_results(0.90, 0.50), _results(0.50, 0.99), _results(0.70, 0.60)]
    trials = [
        {"number": i, "value": objective_value(r, "val_accuracy"), "params": {}}
        for i, r in enumerate(runs)
    ]
    assert [t["value"] for t in trials] == [0.90, 0.50, 0.70]
    assert select_best(trials)["number"] == 0
    with pytest.raises(ProtocolError, match="validation split only"):
        objective_value(runs[0], "test_accuracy")
    # no validation number: no value, whatever the test split says
    assert (
        objective_value(
            {"status": "ok", "final": {"test_accuracy": 1.0}}, "val_accuracy"
        )
        is None
    )
    assert objective_value({"status": "failed"}, "val_accuracy") is None


def _base(**protocol_overrides):
    cfg = compose_cfg(["data.val_fraction=0.2", "model.hidden=[4]"])
    with open_dict(cfg):
        cfg.protocol = {
            "rules": ["bp"],
            "seeds": [0, 1],
            "metric": "val_accuracy",
            "search_seed": 0,
            "sampler_seed": 0,
            "startup_trials": 2,
            "budget": {"trials": 3, "epochs": 1},
            "space": SPACE,
        } | protocol_overrides
    return cfg


@pytest.fixture
def fake_run(monkeypatch):
    """``protocol.run`` replaced: validation rises with lr, test falls with it."""
    calls = []

    def run(cfg, out_dir):
        lr = float(cfg.optim.lr)
        calls.append((lr, out_dir, int(cfg.trainer.epochs), cfg.protocol.stage))
        return _results(val=lr, test=1.0 - lr)

    monkeypatch.setattr(protocol, "run", run)
    return calls


def test_search_chooses_on_validation_and_records(tmp_path, fake_run):
    base = _base()
    found = search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
    lrs = [c[0] for c in fake_run]
    assert len(lrs) == 3 and {c[2] for c in fake_run} == {1}  # budget epochs
    assert found["chosen"]["params"]["optim.lr"] == max(lrs)  # best val, worst test
    assert [t["value"] for t in found["trials"]] == lrs
    assert os.path.exists(tmp_path / "search" / "bp" / "search.json")
    assert os.path.exists(tmp_path / "search" / protocol.STUDY_DB)
    # run directories are named after the point, so a retried point resumes its run
    assert fake_run[0][1].endswith(protocol.point_dirname({"optim.lr": lrs[0]}))


def test_killed_search_resumes(tmp_path, fake_run):
    base = _base(budget={"trials": 2, "epochs": 1})
    search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
    # a trial cut short by a kill: asked for, never told
    study = open_study(str(tmp_path / "search"), "bp", 0, 2)
    cut = study.ask()
    cut.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
    fake_run.clear()
    base = _base(budget={"trials": 3, "epochs": 1})
    found = search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
    # the two finished trials are not rerun; the cut one is retried at its point
    assert [c[0] for c in fake_run] == [cut.params["optim.lr"]]
    states = [t["state"] for t in found["trials"]]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1
    # and a third call has nothing left to do
    fake_run.clear()
    search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
    assert fake_run == []


def test_bad_protocol_configs_name_the_field():
    with pytest.raises(ProtocolError, match="protocol.budget.trials"):
        protocol.rule_plan(_base(budget={"trials": 0, "epochs": 1}), "bp")
    with pytest.raises(ProtocolError, match="protocol.space is empty"):
        protocol.rule_plan(_base(space={}), "bp")
    with pytest.raises(ProtocolError, match="protocol.space.optim.nope"):
        protocol.configure(_base(), {"optim.nope": 1.0}, {})
    with pytest.raises(ProtocolError, match="data.val_fraction"):
        cfg = _base()
        cfg.data.val_fraction = 0.0
        protocol.run_protocol(cfg, "unused", compose=lambda rule: cfg)


@pytest.mark.slow
def test_protocol_end_to_end_then_nothing_retrained(tmp_path):
    """Real tiny runs: a search of 2 vmapped trials, evaluation over 2 vmapped seeds,
    the report; a re-run trains nothing."""
    cfg = _base(budget={"trials": 2, "epochs": 1}, vmap_trials=2)
    with open_dict(cfg):
        cfg.trainer.epochs = 2
        cfg.trainer.batch_size = 256

    def compose(rule):
        c = cfg.copy()
        c.rule.name = rule
        return c

    protocol.run_protocol(cfg, str(tmp_path), compose)
    seed_dirs = [tmp_path / "eval" / "bp" / f"seed={s}" for s in (0, 1)]
    results = [d / "results.json" for d in seed_dirs]
    assert all(p.exists() for p in results)
    trial_runs = list((tmp_path / "search" / "bp").glob("optim.lr=*/results.json"))
    assert len(trial_runs) == 2
    assert all('"seeds_in_program": 2' in p.read_text() for p in trial_runs)
    stamps = [p.stat().st_mtime_ns for p in results + trial_runs]
    md = (tmp_path / "report" / "stats.md").read_text()
    assert "| bp |" in md and "optim.lr=" in md and "2 trials × 1 epochs" in md
    protocol.run_protocol(cfg, str(tmp_path), compose)
    assert [p.stat().st_mtime_ns for p in results + trial_runs] == stamps
    assert (
        optuna.load_study(
            study_name="bp", storage=f"sqlite:///{tmp_path / 'search' / 'study.db'}"
        )
        .trials[-1]
        .number
        == 1
    )


def test_digits_validation_split_is_carved_from_train():
    from bp_alternatives.data import load_digits

    full, split = load_digits(), load_digits(val_fraction=0.2)
    assert full.x_val is None and len(full.x_train) == 1437
    assert (len(split.x_train), len(split.x_val)) == (1150, 287)
    assert (split.y_test == full.y_test).all()  # the test split is untouched
    rows = {r.tobytes() for r in split.x_train}
    assert not any(r.tobytes() in rows for r in split.x_val)
    with pytest.raises(ValueError, match="data.val_fraction"):
        load_digits(val_fraction=1.0)


def test_resumed_search_proposes_new_points(tmp_path, fake_run):
    """A study resumed in a new process (a fresh sampler) does not replay the points
    its seeded sampler drew before."""
    lrs = []
    for trials in range(1, 7):  # one process per trial: the worst case
        base = _base(budget={"trials": trials, "epochs": 1}, startup_trials=3)
        search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
        lrs = [c[0] for c in fake_run]
    assert len(lrs) == 6 and len(set(lrs)) == 6, lrs


def test_rules_draw_their_own_startup_points(tmp_path, fake_run):
    """Two rules searching one space with one sampler_seed do not try the same
    points (each rule's TPE seed adds a hash of its name)."""
    base = _base(budget={"trials": 2, "epochs": 1})
    points = {}
    for rule in ("bp", "fa"):
        fake_run.clear()
        found = search(base, rule, protocol.rule_plan(base, rule), str(tmp_path))
        points[rule] = [c[0] for c in fake_run]
        seed = protocol.rule_sampler_seed(0, rule)
        assert found["sampler"] == f"TPE (seed {seed})"
    assert not set(points["bp"]) & set(points["fa"]), points
    assert protocol.rule_sampler_seed(0, "bp") == protocol.rule_sampler_seed(0, "bp")


def test_per_rule_settings_are_fixed_for_search_and_evaluation(
    tmp_path, fake_run, monkeypatch
):
    from bp_alternatives.report.search import search_markdown
    from bp_alternatives.report.stats import hyperparameters

    seen = []
    fixed = {"set": {"model.activation": "sigmoid"}}
    base = _base(budget={"trials": 2, "epochs": 1}, per_rule={"fa": fixed})
    orig = protocol.run

    def run(cfg, out_dir):
        seen.append((cfg.protocol.stage, cfg.model.activation, dict(cfg.protocol)))
        return orig(cfg, out_dir)

    monkeypatch.setattr(protocol, "run", run)
    plan = protocol.rule_plan(base, "fa")
    assert plan["fixed"] == {"model.activation": "sigmoid"}
    assert protocol.rule_plan(base, "bp")["fixed"] == {}
    found = search(base, "fa", plan, str(tmp_path))
    assert found["fixed"] == {"model.activation": "sigmoid"}
    protocol.evaluate(base, found, str(tmp_path))
    assert [s[:2] for s in seen] == [("search", "sigmoid")] * 2 + [("eval", "sigmoid")]
    assert base.model.activation != "sigmoid"  # the shared config is left alone
    shown = hyperparameters({"protocol": seen[-1][2]})
    assert "model.activation=sigmoid (fixed)" in shown and "optim.lr=" in shown
    assert "(fixed)" in search_markdown({"fa": found})
    clash = _base(per_rule={"fa": {"set": {"optim.lr": 0.1}}})
    with pytest.raises(ProtocolError, match=r"per_rule.fa.set fixes \['optim.lr'\]"):
        protocol.rule_plan(clash, "fa")
    bad = _base(per_rule={"fa": {"set": {"model.nope": 1}}})
    with pytest.raises(ProtocolError, match="protocol.per_rule.fa.set.model.nope"):
        search(bad, "fa", protocol.rule_plan(bad, "fa"), str(tmp_path / "bad"))


def test_protocol_command_composes_and_reports_user_errors():
    """``python -m experiments.protocol`` finds the package's configs; a protocol
    config error is one block naming the field, exit status 2."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "experiments.protocol", "experiment=protocol_digits"]
    shown = subprocess.run(
        [*cmd, "--cfg", "job"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert "sampler_seed" in shown.stdout
    bad = subprocess.run(
        [*cmd, "data.val_fraction=0", "hydra.run.dir=/nonexistent/x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "data.val_fraction=0" in bad.stderr, bad.stderr
