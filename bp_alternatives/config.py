"""Typed config schemas (Hydra ConfigStore) and checks of the composed config.

The ``trainer``, ``optim``, ``model`` (mlp, cnn, lenet) and ``logger=wandb`` configs
extend the dataclass schemas registered here, so Hydra rejects a wrong type or an
unknown key at composition time (``trainer.epochs=ten``, ``optim.lrr=0.1``,
``model.hidden=[a]``, ``model.dropout=0.5``). ``validate_config`` then rejects values
and combinations that type-check but cannot work, before any data is loaded or any
code is compiled, with a message that names the offending fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from bp_alternatives.model.activations import ACTIVATIONS
from bp_alternatives.model.losses import LOSSES
from bp_alternatives.optim import OPTIMIZERS, SCHEDULES
from bp_alternatives.rules import RULES


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the fields.

    ``fix`` (optional) is the override or change that makes it run; the command line
    prints it under the message (``bp_alternatives.cli``).
    """

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


def closest(value: Any, valid: list[Any]) -> str | None:
    """The valid name closest to a misspelt ``value`` (difflib), or None."""
    match = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
    return match[0] if match else None


def choice_error(field: str, value: Any, valid: list[Any], kinds: str) -> ConfigError:
    """``field=value`` is not one of ``valid``: the error, with the closest match."""
    names = sorted(map(str, valid))
    match = closest(value, names)
    hint = f"; did you mean {match!r}?" if match else ""
    return ConfigError(
        f"{field}={value!r}; valid {kinds}: {names}{hint}",
        fix=f"{field}={match or names[0]}",
    )


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 64
    probe_size: int = 256
    eval_chunk: int = 4096
    train_eval_size: int | None = None
    progress: bool = True
    seeds: list[int] | None = None
    data_parallel: bool = False
    checkpoint_every: int = 5
    compilation_cache_dir: str | None = None


@dataclass
class OptimConfig:
    _target_: str = "bp_alternatives.optim.make_optimizer"
    name: str = MISSING
    lr: float = MISSING
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    # schedule=step: lr * decay_factor at each boundary, in epochs or in steps
    decay_epochs: list[int] | None = None
    decay_steps: list[int] | None = None
    decay_factor: float = 0.1
    # the run's step counts (train.yaml's run node, filled once the data has loaded)
    total_steps: Any = "${run.total_steps}"
    steps_per_epoch: Any = "${run.steps_per_epoch}"


@dataclass
class MLPConfig:
    _target_: str = "bp_alternatives.model.mlp"
    name: str = "mlp"
    hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 256])
    activation: str = "tanh"
    output_activation: str = "identity"
    init: str = "xavier"
    init_std: float = 0.01
    bias: bool = True
    norm: str = "none"  # none | batchnorm | layernorm
    readout_norm: bool = False


@dataclass
class CNNConfig:
    _target_: str = "bp_alternatives.model.cnn"
    name: str = "cnn"
    channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64])
    kernel_size: Any = 3  # an int, or one per conv stage
    stride: Any = 1  # an int, or one per conv stage
    padding: Any = "SAME"  # SAME | VALID, or one per conv stage
    pool: Any = "max"  # max | avg | none, or one per conv stage
    pool_size: int = 2
    hidden: list[int] = dataclasses.field(default_factory=lambda: [128])
    activation: str = "relu"
    output_activation: str = "identity"
    init: str = "he"
    init_std: float = 0.01
    bias: bool = True
    flatten_input: bool = False
    input_size: int | None = None
    norm: str = "none"  # none | batchnorm | layernorm


@dataclass
class LeNetConfig:
    _target_: str = "bp_alternatives.model.lenet"
    name: str = "lenet"
    activation: str = "relu"
    init: str = "he"
    init_std: float = 0.01
    flatten_input: bool = False
    input_size: int = 32


@dataclass
class WandbLoggerConfig:
    _target_: str = "bp_alternatives.loggers.wandb_logger"
    _partial_: bool = True
    name: str = "wandb"
    project: str = "bp-alternatives"
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    notes: str | None = None
    mode: str = "offline"
    init_timeout: float = 30.0


def _open_node() -> DictConfig:
    """An empty node outside struct mode: a config that extends it takes new keys."""
    node = OmegaConf.create({})
    OmegaConf.set_struct(node, False)
    return node


# Stored as top-level configs (schema_<group>_<name>), in no group, so they are
# neither listed as options (--help) nor selectable (model=schema_model_mlp); a
# config extends its schema with `- /schema_<group>_<name>@_here_` in its defaults.
# Every configs/rule/*.yaml extends schema_rule_open, an open node: `rule.scale=2.0`
# beside `-m rule=fa,dfa` composes although Hydra builds a sweep's first config with
# the default rule (bp, which has no scale); validate_config then checks every rule
# option against the chosen rule's factory, naming the rule and the option.
cs = ConfigStore.instance()
cs.store(name="schema_rule_open", node=_open_node())
cs.store(name="schema_trainer_default", node=TrainerConfig)
cs.store(name="schema_optim_optim", node=OptimConfig)
cs.store(name="schema_model_mlp", node=MLPConfig)
cs.store(name="schema_model_cnn", node=CNNConfig)
cs.store(name="schema_model_lenet", node=LeNetConfig)
cs.store(name="schema_logger_wandb", node=WandbLoggerConfig)


def with_run(cfg: DictConfig, total_steps: int, steps_per_epoch: int) -> DictConfig:
    """A copy of ``cfg`` with ``run.total_steps`` / ``run.steps_per_epoch`` set."""
    c = cfg.copy()
    with open_dict(c):
        c.run = {
            "total_steps": int(total_steps),
            "steps_per_epoch": int(steps_per_epoch),
        }
    return c


def _check_kwargs(group: str, factory, kwargs: dict[str, Any], skip: set[str]) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in skip]
    for k in kwargs:
        if k not in valid and k not in skip:
            match = closest(k, valid)
            raise ConfigError(
                f"{group}.{k} is not an option of {factory.__name__}; "
                f"valid options: {sorted(valid)}"
                + (f"; did you mean {group}.{match}?" if match else ""),
                fix=f"{group}.{match}=..." if match else f"remove {group}.{k}",
            )


def check_optimized_metric(cfg: DictConfig, tuning: bool = False) -> None:
    """Check ``optimized_metric``, the number ``main()`` returns to a sweeper,
    against the splits the config has.

    Raises :class:`ConfigError` when it is not a ``train_`` / ``val_`` / ``test_``
    metric; when it is a test metric while ``data.val_fraction`` holds out a
    validation split, unless ``optimize_on_test=true`` (tuning on test makes the
    test numbers optimistic); and, for a ``tuning`` sweeper (one that reads the
    value, e.g. Optuna), when it is a validation metric of a config without a
    validation split (the value would be ``None`` for every job).
    """
    metric = cfg.get("optimized_metric")
    if metric is None:
        return
    split = str(metric).split("_", 1)[0]
    if split not in ("train", "val", "test"):
        raise ConfigError(
            f"optimized_metric={metric!r} is not a metric of results.json 'final'; "
            "use val_accuracy, val_loss, train_... or test_..."
        )
    val_fraction = float(cfg.data.get("val_fraction") or 0.0)
    if split == "test" and val_fraction > 0 and not cfg.get("optimize_on_test"):
        raise ConfigError(
            f"optimized_metric={metric} would choose hyperparameters on the test "
            f"split although data.val_fraction={val_fraction} holds out a "
            f"validation split: use optimized_metric=val_{metric[5:]}, or "
            "optimize_on_test=true to tune on test deliberately"
        )
    if tuning and split == "val" and val_fraction <= 0:
        raise ConfigError(
            f"optimized_metric={metric} needs a validation split, but data="
            f"{cfg.data.name} has none (data.val_fraction is 0 or not an option): "
            "set data.val_fraction (e.g. 0.1, carved from train), or "
            "optimized_metric=test_... to tune on test deliberately"
        )


def validate_config(cfg: DictConfig) -> None:
    """Reject impossible values and combinations before anything is compiled: the
    trainer's and optimizer's values, the model's activations and widths, and keys
    no factory takes (:func:`check_unknown_keys`). A rule's options are checked by
    its factory (``bp_alternatives.experiment.check_rule_options``)."""
    # imported here: bp_alternatives.config_values raises this module's ConfigError
    from bp_alternatives.config_values import (
        check_data_values,
        check_optim_values,
        check_seeds,
    )

    check_optimized_metric(cfg)
    t, o = cfg.trainer, cfg.optim
    for field in ("epochs", "batch_size", "probe_size", "eval_chunk"):
        if t[field] < 1:
            raise ConfigError(f"trainer.{field} must be >= 1, got {t[field]}")
    check_seeds(t.get("seeds"))
    if t.get("train_eval_size") is not None and t.train_eval_size < 1:
        raise ConfigError(
            f"trainer.train_eval_size must be >= 1 or null (all), got "
            f"{t.train_eval_size}"
        )
    if t.checkpoint_every < 0:
        raise ConfigError(
            f"trainer.checkpoint_every must be >= 0, got {t.checkpoint_every}"
        )
    if o.name not in OPTIMIZERS:
        raise choice_error("optim.name", o.name, list(OPTIMIZERS), "optimizers")
    if not o.lr > 0:
        raise ConfigError(
            f"optim.lr must be positive, got {o.lr}",
            fix="a learning rate > 0, e.g. optim.lr=1e-3",
        )
    check_optim_values(o)
    if o.schedule not in SCHEDULES:
        raise choice_error("optim.schedule", o.schedule, list(SCHEDULES), "schedules")
    if o.schedule == "step":
        given = [k for k in ("decay_epochs", "decay_steps") if o.get(k) is not None]
        if len(given) != 1:
            raise ConfigError(
                "optim.schedule=step needs exactly one of optim.decay_epochs or "
                f"optim.decay_steps, got {given or 'neither'}"
            )
        bounds = [int(b) for b in o[given[0]]]
        if any(b < 1 for b in bounds) or bounds != sorted(set(bounds)):
            raise ConfigError(
                f"optim.{given[0]} must be positive and strictly increasing, "
                f"got {bounds}"
            )
        if not o.decay_factor > 0:
            raise ConfigError(
                f"optim.decay_factor must be positive, got {o.decay_factor}"
            )
    check_data_values(cfg.data)
    if cfg.loss not in LOSSES:
        raise choice_error("loss", cfg.loss, list(LOSSES), "losses")

    m = OmegaConf.to_container(cfg.model, resolve=True)
    for field in ("activation", "output_activation"):
        if field in m and m[field] not in ACTIVATIONS:
            raise choice_error(
                f"model.{field}", m[field], list(ACTIVATIONS), "activations"
            )
    hidden = m.get("hidden")
    if hidden is not None and any(int(w) < 1 for w in hidden):
        raise ConfigError(f"model.hidden widths must be >= 1, got {hidden}")
    check_unknown_keys(cfg)


# Arguments a group's factory gets at run time (bp_alternatives.experiment), not
# from its config.
RUNTIME_ARGS = {
    "data": set(),
    "model": {"input_shape", "num_outputs"},
    "rule": {"model", "loss"},
    "optim": set(),
    "logger": {"directory", "name", "config"},
}


def check_unknown_keys(cfg: DictConfig) -> None:
    """Every key of every group (``RUNTIME_ARGS``) is an argument of the group's
    ``_target_`` factory (factories taking ``**kwargs`` accept any); ConfigError
    names the key and the closest valid one."""
    for group, runtime in RUNTIME_ARGS.items():
        node = cfg.get(group)
        if node is None:
            continue
        c = OmegaConf.to_container(node, resolve=False)
        target = c.get("_target_")
        try:
            factory = hydra.utils.get_method(target)
        except Exception as e:
            raise ConfigError(
                f"{group}._target_={target!r} is not an importable factory: {e}",
                fix=f"{group}._target_=<package.module.function>",
            ) from e
        _check_kwargs(group, factory, c, {"name", "_target_", "_partial_"} | runtime)


def drop_unshared_rule_options(cfg: DictConfig, swept_rules: list[str]) -> list[str]:
    """In a sweep over ``swept_rules`` with a shared rule option (``-m rule=fa,dfa,bp
    rule.scale=2.0``): remove from ``cfg.rule`` each option its own rule's factory
    does not take but another swept rule's does, so the option applies to each rule
    that has it; return the removed names. An option no swept rule takes stays, for
    :func:`check_unknown_keys` to reject (a misspelt option is never dropped)."""

    def takes(factory, key: str) -> bool:
        params = inspect.signature(factory).parameters
        return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    own = hydra.utils.get_method(cfg.rule._target_)
    others = [RULES[r] for r in swept_rules if r in RULES and r != cfg.rule.name]
    dropped = [
        k
        for k in cfg.rule
        if not str(k).startswith("_")
        and k != "name"
        and not takes(own, str(k))
        and any(takes(f, str(k)) for f in others)
    ]
    with open_dict(cfg):
        for k in dropped:
            del cfg.rule[k]
    return dropped
