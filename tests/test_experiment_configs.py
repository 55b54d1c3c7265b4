"""configs/experiment/: every config composes (sweeper params included), says what it
reproduces and builds its rule before any data loads; the sweep grids of the
comparisons; and one tiny epoch of each experiment on its real data (where present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from bp_alternatives.data.files import DatasetNotFoundError
from bp_alternatives.experiment import build_data, check_config, run
from bp_alternatives.rules import RULES
from tests.conftest import CONFIG_DIR, compose_cfg
from tests.experiment_helpers import (
    EXPERIMENTS,
    MINE,
    compose_full,
    job_cfg,
    sweep_params,
)


def test_the_experiments_of_the_issue_exist():
    assert set(MINE) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_names_its_command_runtime_result(name):
    text = Path(CONFIG_DIR, "experiment", f"{name}.yaml").read_text()
    header = text.split("\ndefaults:")[0]
    assert text.startswith("# @package _global_\n")
    assert f"experiment={name}" in header  # the exact command
    assert "Expected runtime" in header
    assert "Expected result" in header or "Expected metric" in header

    params = sweep_params(name)
    # every value of every sweep parameter composes into a valid job config (the
    # other parameters at their first value); interpolations (column, row) resolve
    for key, values in params.items():
        for value in values:
            overrides = [f"experiment={name}", f"{key}={value}"] + [
                f"{k}={v[0]}" for k, v in params.items() if k != key
            ]
            cfg = compose_full(overrides)
            with open_dict(cfg):
                del cfg["hydra"]
            check_config(cfg)
            OmegaConf.to_container(cfg, resolve=True)
    if not params:
        cfg = compose_full([f"experiment={name}"])
        with open_dict(cfg):
            del cfg["hydra"]
        check_config(cfg)
        OmegaConf.to_container(cfg, resolve=True)

    paper = OmegaConf.to_container(cfg, resolve=True).get("paper")
    if paper is not None:  # compare.py's format
        assert isinstance(paper["source"], str) and paper["source"]
        te = paper["test_error"]
        if te is None:  # no verified number: the note must say why (no paper column)
            assert isinstance(paper.get("note"), str) and paper["note"]
        else:
            values = list(te.values()) if isinstance(te, dict) else [te]
            assert values and all(
                isinstance(v, int | float) and 0 < v < 100 for v in values
            )


def test_sweep_grids_of_the_comparisons():
    six = ["bp", "manual_bp", "fa", "dfa", "ff", "sg"]
    assert set(six) <= set(RULES)  # the rules these comparisons were measured on
    assert sweep_params("compare_digits") == {"rule": six, "seed": ["0", "1", "2"]}
    # Fashion-MNIST: the 3 seeds of a rule train together in one program (vmap)
    assert sweep_params("compare_fashion_mnist") == {"rule": [*six, "pc"]}
    cfg = compose_cfg(["experiment=compare_fashion_mnist"])
    assert list(cfg.trainer.seeds) == [0, 1, 2] and cfg.trainer.epochs == 10
    assert sweep_params("xor")["rule"] == ["bp", "manual_bp", "fa", "dfa", "sg"]
    assert sweep_params("vanishing_gradients") == {
        "model.activation": ["sigmoid", "tanh", "relu"]
    }
    assert sweep_params("exploding_gradients") == {"optim.clip_norm": ["null", "5.0"]}
    assert sweep_params("remat") == {"rule.remat": ["False", "True"]}
    # biotorch: bp and dfa by default, the fa variants by the second command of its
    # header; the paper column is keyed by the rows those runs get
    assert sweep_params("biotorch_fashion_mnist") == {"rule": ["bp", "dfa"]}
    cfg = compose_full(["experiment=biotorch_fashion_mnist"])
    assert set(cfg.paper.test_error) == {
        "bp",
        "dfa",
        *(f"fa (feedback={f})" for f in ("random", "usf", "brsf", "frsf")),
    }
    assert dict(cfg.paper.test_error)["fa (feedback=usf)"] == 9.69
    assert "validation split" in cfg.paper.note
    o = cfg.optim
    assert (o.name, o.momentum, o.weight_decay, o.schedule) == (
        "sgd",
        0.9,
        1e-3,
        "step",
    )
    assert (list(o.decay_epochs), o.decay_factor) == ([50, 75], 0.1)
    assert (cfg.trainer.batch_size, cfg.trainer.epochs, cfg.model.name) == (
        64,
        100,
        "lenet",
    )
    assert cfg.data.name == "fashion_mnist" and cfg.data.val_fraction > 0


def test_experiment_overrides_the_top_level_of_train_yaml():
    """An overlay's loss, sweep directory and run-directory names win over
    configs/train.yaml's own values (its defaults list puts _self_ first)."""
    assert compose_full(["experiment=lillicrap2016"]).loss == "mse"
    assert compose_full(["experiment=lillicrap2016", "loss=cross_entropy"]).loss == (
        "cross_entropy"  # the command line still wins
    )
    cfg = compose_full(["experiment=compare_digits"])
    assert cfg.hydra.sweep.dir.startswith("outputs/multirun/compare_digits/")
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == ["experiment"]
    assert compose_full([]).hydra.sweep.dir.startswith("outputs/multirun/20")


# --------------------------------------------------- experiments on their real data


def _data_or_skip(cfg):
    try:
        with open_dict(cfg):
            if "download" in cfg.data:
                cfg.data.download = False  # no network waits in tests
        return build_data(cfg)
    except DatasetNotFoundError as e:
        pytest.skip(f"{cfg.data.name} not on this machine: {str(e)[:200]}")


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_tiny_epoch(tmp_path, name):
    """Each experiment (first value of each sweep parameter) trains for one epoch on
    a subset of its data, where that data is on this machine."""
    params = sweep_params(name)
    overrides = [f"experiment={name}", "trainer.epochs=1"]
    overrides += [f"{k}={v[0]}" for k, v in params.items()]
    cfg = job_cfg(tmp_path, *overrides)
    with open_dict(cfg):
        if "train_subset" in cfg.data:
            cfg.data.train_subset = 512
            cfg.data.test_subset = 256
        cfg.trainer.batch_size = min(int(cfg.trainer.batch_size), 128)
    _data_or_skip(cfg)
    out = run(cfg)
    seeds = cfg.trainer.get("seeds")
    # trainer.seeds: one program, one results.json per seed under seed=<s>/
    runs = (
        list(zip(out, [tmp_path / f"seed={s}" for s in seeds]))
        if seeds
        else [(out, tmp_path)]
    )
    for res, d in runs:
        assert res["status"] in ("ok", "diverged")
        assert len(res["history"]) == 1
        with open(d / "results.json") as f:
            assert json.load(f)["config"].get("paper") == OmegaConf.to_container(
                cfg, resolve=True
            ).get("paper")


@pytest.mark.slow
def test_fashion_mnist_mlp_five_epochs(tmp_path):
    """`python -m experiments.train data=fashion_mnist rule=bp
    trainer.epochs=5` (784-256-256-10 tanh, Adam 1e-3, batch 64) reaches >= 87% test
    accuracy -- measured 2026-11-29: bp 0.8730, fa 0.8653, dfa 0.8670, ~3.5 s per
    run. The asserted floors leave half a point for other CPUs' float rounding."""
    accs = {}
    for rule in ("bp", "fa", "dfa"):
        cfg = job_cfg(
            tmp_path / rule, "data=fashion_mnist", f"rule={rule}", "trainer.epochs=5"
        )
        _data_or_skip(cfg)
        accs[rule] = run(cfg)["final"]["test_accuracy"]
    print("Fashion-MNIST, 784-256-256-10 tanh, 5 epochs:", accs)
    assert accs["bp"] >= 0.865 and accs["fa"] >= 0.855 and accs["dfa"] >= 0.855, accs


@pytest.mark.slow
def test_lenet_learns_fashion_mnist_subset_with_bp_fa_and_dfa(tmp_path):
    """A CNN trained by bp, fa and dfa on a Fashion-MNIST subset learns.
    The biotorch LeNet set-up (SGD 1e-3, momentum 0.9) on 8000 training images (7200
    after the validation split) for 4 epochs, ~45 s -- measured 2026-11-29: test
    accuracy bp 0.719, fa 0.501, dfa 0.607 (chance 0.10), train loss bp 1.14 -> 0.70,
    fa 2.41 -> 1.34, dfa 2.24 -> 1.12. (FA/DFA start slower, as published; with a
    large step, e.g. SGD 0.05 + momentum 0.9, they diverge on this CNN.)"""
    accs = {}
    for rule in ("bp", "fa", "dfa"):
        cfg = job_cfg(
            tmp_path / rule,
            "experiment=biotorch_fashion_mnist",
            f"rule={rule}",
            "data.train_subset=8000",
            "data.test_subset=1000",
            "trainer.epochs=4",
            "trainer.checkpoint_every=0",
        )
        _data_or_skip(cfg)
        res = run(cfg)
        h = res["history"]
        assert res["status"] == "ok"
        assert h[-1]["train_loss"] < 0.75 * h[0]["train_loss"], (rule, h)
        accs[rule] = h[-1]["test_accuracy"]
    print("LeNet, Fashion-MNIST 4000 images, 3 epochs:", accs)
    assert accs["bp"] >= 0.6 and accs["fa"] >= 0.35 and accs["dfa"] >= 0.4, accs
