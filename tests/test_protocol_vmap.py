"""Search trials as one vmapped program (bp_alternatives.trials): the members equal
separate runs, and the protocol's search asks, runs and tells them in batches."""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from bp_alternatives import protocol
from bp_alternatives.experiment import run
from bp_alternatives.trials import lr_only, run_members
from tests.conftest import compose_cfg
from tests.test_protocol import SPACE, _base, _results


def _cfg(lr: float, *overrides: str):
    cfg = compose_cfg(
        [
            "data=digits",
            "data.val_fraction=0.2",
            "model.hidden=[8]",
            "trainer.epochs=2",
            "trainer.batch_size=128",
            *overrides,
        ]
    )
    with open_dict(cfg):
        cfg.optim.lr = lr
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["optim=adam"],
        ["rule=fa", "optim=sgd", "optim.momentum=0.9", "optim.schedule=cosine"],
    ],
)
def test_members_equal_separate_runs(tmp_path, overrides):
    lrs = [3e-3, 3e-2]
    cfgs = [_cfg(lr, *overrides) for lr in lrs]
    dirs = [str(tmp_path / f"m{i}") for i in range(2)]
    together = run_members(cfgs, dirs)
    for lr, cfg, res in zip(lrs, cfgs, together):
        alone = run(cfg, out_dir=str(tmp_path / f"alone-{lr}"))
        assert res["seeds_in_program"] == 2
        for part in ("final", "selected"):
            for k in ("val_accuracy", "val_loss", "test_loss"):
                assert res[part][k] == pytest.approx(alone[part][k], rel=2e-5), k
        assert [h["lr"] for h in res["history"]] == pytest.approx(
            [h["lr"] for h in alone["history"]]
        )
    # finished members are read back, not retrained
    assert run_members(cfgs, dirs) == together
    with pytest.raises(ValueError, match="optim.lr only"):
        run_members([cfgs[0], _cfg(1e-3, "optim=adam", "seed=3")], dirs)


def test_lr_only():
    bp, sg = _cfg(1e-3), _cfg(1e-3, "rule=sg")
    assert lr_only(bp, ["optim.lr"]) and not lr_only(bp, ["optim.lr", "rule.x"])
    assert not lr_only(bp, [])
    with open_dict(sg):
        sg.rule.optimizer = {"lr": None}
    assert not lr_only(sg, ["optim.lr"])  # its synthesizers would follow optim.lr
    with open_dict(sg):
        sg.rule.optimizer = {"lr": 1e-4}
    assert lr_only(sg, ["optim.lr"])


@pytest.fixture
def fake_members(monkeypatch):
    batches = []

    def members(cfgs, dirs):
        lrs = [float(c.optim.lr) for c in cfgs]
        batches.append(lrs)
        return [_results(val=lr, test=1.0 - lr) for lr in lrs]

    def alone(cfg, out_dir):
        batches.append([float(cfg.optim.lr)])
        return _results(val=float(cfg.optim.lr), test=0.0)

    monkeypatch.setattr(protocol, "run_members", members)
    monkeypatch.setattr(protocol, "run", alone)
    return batches


def test_search_runs_trials_in_vmapped_batches(tmp_path, fake_members):
    base = _base(budget={"trials": 7, "epochs": 1}, vmap_trials=3)
    found = protocol.search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
    assert [len(b) for b in fake_members] == [3, 3, 1]
    lrs = [lr for b in fake_members for lr in b]
    assert len(set(lrs)) == 7  # constant liar: no point asked twice
    assert [t["value"] for t in found["trials"]] == lrs
    assert found["chosen"]["params"]["optim.lr"] == max(lrs)
    fake_members.clear()  # a re-run has nothing left to do
    protocol.search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
    assert fake_members == []


def test_search_falls_back_to_one_trial_at_a_time(tmp_path, fake_members):
    space = SPACE | {"rule.scale": {"low": 0.1, "high": 10.0, "log": True}}
    base = _base(budget={"trials": 3, "epochs": 1}, vmap_trials=3, space=space)
    with open_dict(base):
        base.rule.scale = 1.0
    protocol.search(base, "bp", protocol.rule_plan(base, "bp"), str(tmp_path))
    assert [len(b) for b in fake_members] == [1, 1, 1]
