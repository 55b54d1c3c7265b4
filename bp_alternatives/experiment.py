"""Where a config becomes objects: ``build(cfg)``, ``run(cfg)``.

Every config group names its factory with ``_target_`` (``hydra.utils.instantiate``),
so a dataset, model, rule, optimizer or logger from the user's own package plugs in
by its import path, without editing a registry. Rules are ``_partial_``: the model
and loss are known only once the data has loaded. Quantities of the run computed
from the loaded data live under ``run`` (``run.steps_per_epoch``,
``run.total_steps``: full batches per epoch, times ``trainer.epochs``) and reach any
config by interpolation, e.g. ``total_steps: ${run.total_steps}`` in ``optim``.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import logging
import os
import re
from types import SimpleNamespace
from typing import Any, NamedTuple

import hydra
import jax
import optax
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from bp_alternatives import results as results_io
from bp_alternatives.config import ConfigError, closest, validate_config, with_run
from bp_alternatives.data import DataError, Dataset, validate_dataset
from bp_alternatives.model import Model
from bp_alternatives.model.losses import Loss, get_loss
from bp_alternatives.optim import make_schedule
from bp_alternatives.progress import log_to
from bp_alternatives.provenance import provenance
from bp_alternatives.results import Results
from bp_alternatives.rules import LearningRule, UnsupportedModelError
from bp_alternatives.rundir import (
    config_tag,
    device_info,
    finished,
    summary_line,
    writer_summary,
)
from bp_alternatives.train import fit_seeds
from bp_alternatives.writers import MetricWriter, NullWriter


class Built(NamedTuple):
    """The objects of one configuration (:func:`build`)."""

    data: Dataset
    model: Model
    loss: Loss
    rule_name: str
    rule: LearningRule
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    cfg: DictConfig  # the config with ``run`` filled in


def _factory_node(node: DictConfig) -> dict[str, Any]:
    """A group's node for its factory: ``name`` labels the option (``rule=fa``) and
    is passed on only to a factory that declares a ``name`` parameter
    (``make_optimizer``)."""
    c = OmegaConf.to_container(node, resolve=False)
    factory = hydra.utils.get_method(c["_target_"])
    if "name" not in inspect.signature(factory).parameters:
        c.pop("name", None)
    return c


def _instantiate(cfg: DictConfig, group: str, **kwargs) -> Any:
    """``hydra.utils.instantiate`` of ``cfg.<group>`` (its ``name`` left out), with
    interpolations resolved against the whole config and plain Python containers.
    The factory's own exception propagates (not Hydra's wrapper of it)."""
    node = OmegaConf.create({group: _factory_node(cfg[group])}, parent=cfg)
    try:
        return hydra.utils.instantiate(node[group], _convert_="all", **kwargs)
    except InstantiationException as e:  # the factory's own error, as it raised it
        if e.__cause__ is None:
            raise
        raise e.__cause__ from None


def run_steps(cfg: DictConfig, data: Dataset) -> tuple[int, int]:
    """(total optimizer steps, steps per epoch) of a run: full batches per epoch."""
    steps = len(data.x_train) // int(cfg.trainer.batch_size)
    return max(steps * int(cfg.trainer.epochs), 1), max(steps, 1)


def build_data(cfg: DictConfig) -> Dataset:
    """``cfg.data``'s factory called with its options; the result validated."""
    return validate_dataset(_instantiate(cfg, "data"))


def check_batch_fits(cfg: DictConfig, data: Dataset) -> None:
    """:class:`DataError` for a training split smaller than one batch."""
    n, batch = len(data.x_train), int(cfg.trainer.batch_size)
    if n < batch:
        raise DataError(
            f"trainer.batch_size={batch} is larger than the {data.name} training "
            f"split ({n} examples)",
            fix=f"trainer.batch_size={n} or less, or a larger training split "
            "(data.val_fraction, data.train_subset, data.test_size)",
        )


def build_model(cfg: DictConfig, data: Dataset) -> Model:
    """``cfg.model``'s factory for ``data``'s input shape and number of classes."""
    return _instantiate(
        cfg, "model", input_shape=data.input_shape, num_outputs=data.num_classes
    )


def build_rule(
    cfg: DictConfig,
    model: Model,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[str, LearningRule]:
    """(``rule.name``, the rule built for ``model``): the ``_partial_`` factory of
    ``cfg.rule`` called with the model and loss. ``total_steps`` / ``steps_per_epoch``
    fill ``run`` first where given."""
    if total_steps is not None:
        cfg = with_run(cfg, total_steps, steps_per_epoch or 1)
    factory = _instantiate(cfg, "rule")
    kwargs = {}
    if "optimizer" in cfg.rule:  # the rule's own parameters (rules.Trainable)
        kwargs["optimizer"] = _rule_optimizer(cfg)
    return str(cfg.rule.name), factory(model=model, loss=get_loss(cfg.loss), **kwargs)


def _rule_optimizer(cfg: DictConfig):
    """The optimizer of a rule's own parameters (SG's synthesizers, FF's read-out,
    Kolen-Pollack's B): ``rule.optimizer``, an optim-style mapping (``name``, ``lr``,
    ...; the run's step counts for its schedule; a missing ``name`` or ``lr`` is the
    run's), or the run's optimizer where it is null. ValueError names
    ``rule.optimizer`` and the bad value."""
    spec = cfg.rule.optimizer
    if spec is None:
        return build_optimizer(cfg)
    node = OmegaConf.create(
        {
            "_target_": "bp_alternatives.optim.make_optimizer",
            "name": "${optim.name}",
            "lr": "${optim.lr}",
            "total_steps": "${run.total_steps}",
            "steps_per_epoch": "${run.steps_per_epoch}",
        }
    )
    c = cfg.copy()
    with open_dict(c):
        c.rule_optimizer = OmegaConf.merge(node, spec)
    try:
        return _instantiate(c, "rule_optimizer")
    except (TypeError, ValueError) as e:
        raise ValueError(f"rule.optimizer: {e}") from e


def build_optimizer(cfg: DictConfig, total_steps: int | None = None):
    """``cfg.optim``'s factory (``run`` filled from ``total_steps`` where given)."""
    if total_steps is not None:
        per_epoch = max(total_steps // max(int(cfg.trainer.epochs), 1), 1)
        cfg = with_run(cfg, total_steps, per_epoch)
    return _instantiate(cfg, "optim")


def build_schedule(cfg: DictConfig, total_steps: int):
    """``optim``'s learning-rate schedule: step count -> rate (for the history)."""
    o = OmegaConf.to_container(cfg.optim, resolve=True)
    return make_schedule(
        o["lr"],
        o.get("schedule", "constant"),
        total_steps,
        o.get("warmup_steps", 0),
        decay_epochs=o.get("decay_epochs"),
        decay_steps=o.get("decay_steps"),
        decay_factor=o.get("decay_factor", 0.1),
        steps_per_epoch=max(total_steps // max(int(cfg.trainer.epochs), 1), 1),
    )


def build_writer(cfg: DictConfig, out_dir: str, run_name: str) -> MetricWriter:
    """``cfg.logger``'s ``_partial_`` factory called with ``directory`` (the run
    directory), ``name`` (the run's name) and ``config`` (the run's config);
    ``logger: null`` writes nothing."""
    if cfg.get("logger") is None:
        return NullWriter()
    return _instantiate(cfg, "logger")(directory=out_dir, name=run_name, config=cfg)


def build(cfg: DictConfig) -> Built:
    """Data, model, loss, rule, optimizer and schedule of ``cfg``, in that order:
    ``run`` is filled from the loaded data before the rule and optimizer are built."""
    data = build_data(cfg)
    check_batch_fits(cfg, data)
    model = build_model(cfg, data)
    total_steps, steps_per_epoch = run_steps(cfg, data)
    cfg = with_run(cfg, total_steps, steps_per_epoch)
    rule_name, rule = build_rule(cfg, model)
    return Built(
        data,
        model,
        get_loss(cfg.loss),
        rule_name,
        rule,
        build_optimizer(cfg),
        build_schedule(cfg, total_steps),
        cfg,
    )


# --- checks before anything loads ----------------------------------------------------


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data: :func:`~bp_alternatives.config.validate_config`
    (values, unknown keys), then the optimizer and rule built as the run would build
    them (:func:`check_rule_options`)."""
    validate_config(cfg)
    check_rule_options(cfg)


def check_rule_options(cfg: DictConfig) -> None:
    """Build the rule on a stand-in of the configured model, before any data loads.

    The stand-in has the configured stages but a made-up input shape (64 features, or
    28x28x1 images) and 10 classes, and ``run`` is one step of one epoch, so only the
    errors that name the rule (``rule.<option>``, ``rule=<name>``) are reported here
    (as :class:`ConfigError`, with the closest valid value); the rest surface when
    the real model is built.
    """
    m = OmegaConf.to_container(cfg.model, resolve=True)
    shape = (64,) if m["_target_"].endswith(".mlp") else (28, 28, 1)
    try:
        stand_in = build_model(cfg, SimpleNamespace(input_shape=shape, num_classes=10))
    except Exception:  # the real build reports the model's own errors
        return
    try:
        build_rule(cfg, stand_in, total_steps=1, steps_per_epoch=1)
    except ValueError as e:
        if not re.search(r"rule[.=]", str(e)):
            return
        raise _rule_error(cfg, e) from e


def _rule_error(cfg: DictConfig, e: ValueError) -> ConfigError:
    """The rule factory's error as a :class:`ConfigError`, with the closest valid
    value of a misspelt option where the message lists the valid ones."""
    if isinstance(e, UnsupportedModelError):
        hidden = cfg.model.get("hidden")
        no_hidden = hidden is not None and len(hidden) == 0
        fix = "give the model a hidden stage, e.g. model.hidden=[256]"
        return ConfigError(str(e), fix=fix if no_hidden else None)
    r = OmegaConf.to_container(cfg.rule, resolve=False)
    valid = re.search(r"\[[^\]]*\]", str(e))  # the valid values, as a list
    for k, v in r.items():
        if isinstance(v, str) and f"rule.{k}" in str(e) and valid:
            options = ast.literal_eval(valid.group(0))
            match = closest(v, options)
            if match:
                return ConfigError(
                    f"{e}; did you mean {match!r}?", fix=f"rule.{k}={match}"
                )
            return ConfigError(str(e), fix=f"a valid value, e.g. rule.{k}={options[0]}")
    return ConfigError(str(e))


def _enable_compilation_cache(directory: str | None) -> None:
    """JAX's persistent compilation cache: later jobs of a sweep skip recompiling."""
    if directory:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# --- one experiment ------------------------------------------------------------------


def _per_seed(cfg: DictConfig, out_dir: str) -> tuple[list[DictConfig], list[str]]:
    """Each seed's config and directory: ``trainer.seeds`` -> ``out_dir/seed=<s>``,
    else ``seed`` in ``out_dir`` itself."""
    multi = cfg.trainer.get("seeds") is not None
    seeds = [int(s) for s in cfg.trainer.seeds] if multi else [int(cfg.seed)]
    seed_cfgs, seed_dirs = [], []
    for s in seeds:
        c = cfg.copy()
        OmegaConf.set_struct(c, False)
        c.seed = s
        c.trainer.seeds = None
        if multi and c.get("run_name"):  # one W&B run per seed, told apart by name
            c.run_name = f"{c.run_name},seed={s}"
        seed_cfgs.append(c)
        seed_dirs.append(os.path.join(out_dir, f"seed={s}") if multi else out_dir)
    return seed_cfgs, seed_dirs


def run(cfg: DictConfig, out_dir: str | None = None) -> dict[str, Any] | list:
    """Train one configuration and write ``results.json`` to ``out_dir``.

    Returns the results dict (the ``results.json`` contract of DESIGN.md). With
    ``trainer.seeds=[0,1,2]`` the seeds train together in one compiled program
    (``vmap``); each gets ``out_dir/seed=<s>/results.json`` and a list is returned.
    A finished run (results.json with status ok/diverged and the same config) in
    ``out_dir`` is not retrained; an interrupted one resumes from its checkpoint.
    Raises :class:`ConfigError` for a config that cannot run, before data loads.
    """
    check_config(cfg)
    out_dir = out_dir or cfg.get("out_dir") or os.getcwd()
    os.makedirs(out_dir, exist_ok=True)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" noise
    multi = cfg.trainer.get("seeds") is not None
    seed_cfgs, seed_dirs = _per_seed(cfg, out_dir)
    done = [
        finished(os.path.join(d, "results.json"), c)
        for d, c in zip(seed_dirs, seed_cfgs)
    ]
    if all(r is not None for r in done):
        print(f"already finished, not retraining: {out_dir}")
        return done if multi else done[0]
    start = dt.datetime.now(dt.timezone.utc)
    _enable_compilation_cache(cfg.trainer.get("compilation_cache_dir"))
    b = build(cfg)
    seed_cfgs = [with_run(c, *run_steps(c, b.data)) for c in seed_cfgs]
    lead = jax.process_index() == 0  # on several hosts only the first writes files
    writers = []
    for c, d in zip(seed_cfgs, seed_dirs):
        name = c.get("run_name") or f"{b.rule_name}-{b.data.name}-seed{c.seed}"
        writers.append(build_writer(c, d, name) if lead else NullWriter())
    try:
        with log_to(os.path.join(out_dir, "train.log")):
            outs = _fit(b, [int(c.seed) for c in seed_cfgs], multi, writers, out_dir)
        all_results = []
        for c, d, out, w in zip(seed_cfgs, seed_dirs, outs, writers):
            record = _results(b, c, out, start)
            results = record.to_dict()
            if lead:
                os.makedirs(d, exist_ok=True)
                results_io.write(os.path.join(d, results_io.FILENAME), record)
            w.write_summary(writer_summary(results))
            all_results.append(results)
            print(summary_line(results, os.path.join(d, "results.json")))
    except Exception as e:  # the W&B run says why it stopped
        for w in writers:
            w.write_summary({"status": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    finally:
        for w in writers:
            w.close()
    return all_results if multi else all_results[0]


def _fit(b: Built, seeds: list[int], multi: bool, writers, out_dir: str) -> list:
    """:func:`~bp_alternatives.train.fit_seeds` with the options of ``trainer``."""
    t = b.cfg.trainer
    return fit_seeds(
        b.model,
        b.loss,
        b.rule,
        b.optimizer,
        b.data,
        epochs=int(t.epochs),
        batch_size=int(t.batch_size),
        keys=[jax.random.PRNGKey(s) for s in seeds],
        batched=multi,
        probe_size=int(t.probe_size),
        eval_chunk=int(t.eval_chunk),
        train_eval_size=t.get("train_eval_size"),
        writers=writers,
        progress=bool(t.progress),
        data_parallel=bool(t.get("data_parallel", False)),
        checkpoint_dir=out_dir,
        checkpoint_every=int(t.get("checkpoint_every", 0)),
        checkpoint_tag=config_tag(b.cfg),
        lr_schedule=b.schedule,
    )


def _results(b: Built, c: DictConfig, out: dict, start: dt.datetime) -> Results:
    """One seed's ``results.json`` record."""
    return Results(
        rule=b.rule_name,
        dataset=b.data.name,
        model=b.model.spec,
        loss=c.loss,
        seed=int(c.seed),
        epochs=int(c.trainer.epochs),
        batch_size=int(c.trainer.batch_size),
        optimizer=OmegaConf.to_container(c.optim, resolve=True),
        num_classes=b.data.num_classes,
        **{k: out[k] for k in _FROM_FIT},
        device=device_info(),
        config=OmegaConf.to_container(c, resolve=True),
        provenance=provenance(start),
    )


# What results.json takes from fit_seeds' output as it is.
_FROM_FIT = (
    "final",
    "selected",
    "prediction",
    "history",
    "examples_per_second",
    "seeds_in_program",
    "wall_seconds",
    "time_split",
    "status",
    "diverged_epoch",
)
