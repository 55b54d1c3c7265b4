"""Impossible configs and bad data are rejected before compilation, naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from bp_alternatives.config import ConfigError
from bp_alternatives.data import load_xor
from bp_alternatives.data.dataset import DataError, validate_dataset
from bp_alternatives.experiment import check_config, run
from bp_alternatives.rules import RULES
from tests.conftest import compose_cfg


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lr=-0.1"], "optim.lr must be positive, got -0.1"),
        (["optim.lr=0"], "optim.lr must be positive"),
        (["optim.weight_decay=-1"], r"optim.weight_decay=-1.0 is outside .* \[0, inf"),
        (["optim.clip_norm=0"], r"optim.clip_norm=0.0 is outside .* \(0, inf\)"),
        (["optim=sgd", "optim.momentum=1.5"], r"optim.momentum=1.5 .* \[0, 1\)"),
        (["optim.schedule=linear"], "optim.schedule='linear'; valid"),
        (["trainer.epochs=0"], "trainer.epochs must be >= 1"),
        (["trainer.batch_size=-4"], "trainer.batch_size must be >= 1"),
        (["loss=hinge"], "loss='hinge'; valid losses"),
        (["model.activation=swish"], "model.activation='swish'; valid activations"),
        (["model.hidden=[32,0]"], r"model.hidden widths must be >= 1, got \[32, 0\]"),
        (["+model.dropout=0.5"], "model.dropout is not an option of mlp"),
        (["+rule.lr=0.5"], "rule.lr is not an option of bp"),
        (["rule=ff", "loss=mse"], "rule=ff with loss=mse"),
        (["rule=fa", "+rule.feedbak=usf"], "rule.feedbak is not an option of fa"),
        (
            ["rule=ff", "rule.epochs_per_stage=2"],
            "rule.epochs_per_stage is for rule.schedule=layerwise",
        ),
        (
            [
                "rule=ff",
                "rule.schedule=layerwise",
                "rule.epochs_per_stage=2",
                "rule.steps_per_stage=5",
            ],
            "not both",
        ),
    ],
)
def test_rejected_configs_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_cfg(overrides))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_rule_option_composes_with_every_rule_and_is_checked_against_it(rule):
    """Hydra composes a sweep's first config with the default rule (bp); an option of
    the swept rules (rule.scale) must compose there, and fail, naming the rule and
    the option, only for a rule that runs without it."""
    cfg = compose_cfg([f"rule={rule}", "rule.scale=2.0"])
    assert cfg.rule.scale == 2.0
    if rule in ("fa", "dfa"):
        check_config(cfg)
    else:
        with pytest.raises(ConfigError, match=f"rule.scale is not an option of {rule}"):
            check_config(cfg)


def test_sweepers_optimise_validation_never_test_unless_asked():
    assert compose_cfg().optimized_metric == "val_accuracy"
    held_out = ["data.val_fraction=0.2", "optimized_metric=test_accuracy"]
    with pytest.raises(
        ConfigError,
        match=r"optimized_metric=test_accuracy .* data.val_fraction=0.2 .* "
        r"use optimized_metric=val_accuracy, or optimize_on_test=true",
    ):
        check_config(compose_cfg(held_out))
    check_config(compose_cfg([*held_out, "optimize_on_test=true"]))
    check_config(compose_cfg(["optimized_metric=test_accuracy"]))  # no val split
    with pytest.raises(ConfigError, match="optimized_metric='accuracy' is not a"):
        check_config(compose_cfg(["optimized_metric=accuracy"]))


def test_tuning_sweeper_without_a_validation_split_is_refused():
    from omegaconf import OmegaConf

    from bp_alternatives.config import check_optimized_metric
    from bp_alternatives.sweep import tuning_sweeper

    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    assert tuning_sweeper(OmegaConf.create({"sweeper": {"_target_": optuna}}))
    assert not tuning_sweeper(OmegaConf.create({"sweeper": {"_target_": basic}}))
    with pytest.raises(
        ConfigError,
        match=r"optimized_metric=val_accuracy needs a validation split, but "
        r"data=digits has none .* set data.val_fraction",
    ):
        check_optimized_metric(compose_cfg(), tuning=True)
    check_optimized_metric(compose_cfg(), tuning=False)  # a single run: not read
    check_optimized_metric(compose_cfg(["data.val_fraction=0.1"]), tuning=True)


def test_tuning_sweep_job_without_a_validation_split_fails_before_training(
    cfg_factory, tmp_path, monkeypatch
):
    import json

    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from bp_alternatives import sweep

    monkeypatch.setattr(sweep, "run", lambda *a, **k: pytest.fail("trained"))
    (tmp_path / "job").mkdir()  # Hydra makes the job's directory
    hydra_cfg = OmegaConf.create(
        {
            "mode": RunMode.MULTIRUN,
            "sweeper": {"_target_": "hydra_plugins.x.OptunaSweeper"},
            "sweep": {"dir": str(tmp_path)},
            "runtime": {"output_dir": str(tmp_path / "job")},
            "job": {"override_dirname": "job", "num": 0},
            "overrides": {"task": []},
        }
    )
    assert sweep.run_job(cfg_factory(), hydra_cfg) is None
    res = json.loads((tmp_path / "job" / "results.json").read_text())
    assert res["status"] == "failed"
    assert res["error"].startswith("ConfigError: optimized_metric=val_accuracy needs")


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.epochs=ten"],
        ["optim.lr=fast"],
        ["trainer.data_parallel=maybe"],
        ["model.hidden=[a]"],
        ["model.dropout=0.5"],  # unknown key (a typo'd option)
        ["model=cnn", "model.pool_size=big"],
        ["model=lenet", "model.input_size=large"],
        ["logger=wandb", "logger.init_timeout=soon"],
    ],
)
def test_schema_rejects_wrong_types_at_composition(overrides):
    with pytest.raises(ConfigCompositionException):
        compose_cfg(overrides)


@pytest.mark.parametrize("rule", ["dfa", "sg"])
def test_rules_needing_a_hidden_stage(rule):
    with pytest.raises(ConfigError, match=f"rule={rule} needs at least one hidden"):
        check_config(compose_cfg([f"rule={rule}", "model.hidden=[]"]))
    # a CNN's conv stages are hidden stages: no dense hidden layer is fine
    check_config(compose_cfg([f"rule={rule}", "model=cnn", "model.hidden=[]"]))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lr=-1"], "optim.lr"),
        (["rule=fa", "rule.feedback=usff"], "did you mean 'usf'"),
        (["rule=ff", "rule.epochs_per_stage=2"], "rule.epochs_per_stage is for"),
        (["+data.test_sise=10"], "data.test_sise is not an option of load_digits"),
    ],
)
def test_rejection_happens_before_any_data_or_compilation(
    cfg_factory, monkeypatch, overrides, message
):
    import functools

    import bp_alternatives.data

    @functools.wraps(bp_alternatives.data.load_digits)  # the loader's signature
    def boom(*a, **k):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(bp_alternatives.data, "load_digits", boom)
    with pytest.raises(ConfigError, match=message):
        run(cfg_factory(*overrides))
    with pytest.raises(AssertionError, match="data was loaded"):  # the check is real
        run(cfg_factory())


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=lenet"], r"model=lenet needs 32x32xC images, got input_shape=\(64,\)"),
        (["model=cnn"], r"model=cnn needs image inputs .* got input_shape=\(64,\)"),
        (["rule=manual_bp", "model=lenet"], "model=lenet needs 32x32xC"),
    ],
)
def test_models_that_do_not_fit_the_data(cfg_factory, overrides, message, monkeypatch):
    """Widths / shapes that do not fit the data fail when the model is built from the
    loaded data's shape, before any compilation, naming the model and the shape."""
    import bp_alternatives.experiment as experiment

    def no_compiling(*a, **k):
        raise AssertionError("reached training")

    monkeypatch.setattr(experiment, "fit_seeds", no_compiling)
    with pytest.raises(ValueError, match=message):
        run(cfg_factory(*overrides))


def test_mlp_on_unflattened_images_names_the_fix():
    from bp_alternatives.model import mlp

    with pytest.raises(ValueError, match=r"needs flat inputs.*data.flatten=true"):
        mlp((28, 28, 1), 10, hidden=(32,))


def test_batch_size_larger_than_dataset(cfg_factory):
    with pytest.raises(ValueError, match="batch_size=64 is larger than the xor"):
        run(cfg_factory("data=xor"))


def _bad(**changes):
    return load_xor()._replace(**changes)


@pytest.mark.parametrize(
    "ds,message",
    [
        (
            _bad(x_train=np.array([[0, 0], [0, np.nan], [1, 0], [1, 1]], np.float32)),
            "dataset 'xor', train split: non-finite input .* at index 1",
        ),
        (
            _bad(x_test=np.array([[0, 0], [0, 1], [np.inf, 0], [1, 1]], np.float32)),
            "dataset 'xor', test split: non-finite input .* at index 2",
        ),
        (
            _bad(y_train=np.array([0, 1, 2, 0], np.int32)),
            r"label 2 at index 2 is outside \[0, 2\)",
        ),
        (_bad(y_test=np.array([0, -1, 1, 0], np.int32)), "label -1 at index 1"),
        (_bad(y_train=np.array([0, 1, 1], np.int32)), "4 inputs but 3 labels"),
        (_bad(input_shape=(3,)), r"inputs have shape \(2,\) per example"),
        (_bad(y_train=np.array([0.0, 1, 1, 0])), "labels must be integers"),
        (
            _bad(
                x_val=np.array([[0, 0], [np.nan, 1]], np.float32),
                y_val=np.array([0, 1], np.int32),
            ),
            "dataset 'xor', val split: non-finite input .* at index 1",
        ),
        (
            _bad(x_val=np.zeros((2, 2), np.float32), y_val=np.array([0], np.int32)),
            "val split: 2 inputs but 1 labels",
        ),
    ],
)
def test_bad_data_named_with_dataset_and_index(ds, message):
    with pytest.raises(DataError, match=message):
        validate_dataset(ds)


def test_good_data_passes():
    ds = load_xor()
    assert validate_dataset(ds) is ds
