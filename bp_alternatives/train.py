"""``run(cfg)``: one experiment from a composed Hydra config to ``results.json``.

The ``@hydra.main`` entry point (``bpa-train``, ``python -m bp_alternatives.train``:
:mod:`bp_alternatives.cli`) is a thin wrapper over this function, so tests call it
directly with a composed config.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import inspect
import json
import logging
import os
import re
from types import SimpleNamespace
from typing import Any

import hydra
import jax
from omegaconf import DictConfig, OmegaConf

from bp_alternatives.atomic import atomic_path
from bp_alternatives.config import ConfigError, closest, validate_config
from bp_alternatives.data import Dataset, load_dataset
from bp_alternatives.data.dataset import validate_dataset
from bp_alternatives.model import Model
from bp_alternatives.model.losses import get_loss
from bp_alternatives.optim import make_optimizer, make_schedule
from bp_alternatives.progress import log_to
from bp_alternatives.provenance import provenance
from bp_alternatives.rules import UnsupportedModelError, get_rule
from bp_alternatives.trainer import fit_seeds
from bp_alternatives.writers import CSVWriter, MetricWriter, NullWriter, WandbWriter


def _split_name(node: DictConfig) -> tuple[str, dict[str, Any]]:
    c = OmegaConf.to_container(node, resolve=True)
    return c.pop("name"), c


def build_data(cfg: DictConfig) -> Dataset:
    name, kwargs = _split_name(cfg.data)
    return validate_dataset(load_dataset(name, **kwargs))


def build_model(cfg: DictConfig, data: Dataset) -> Model:
    c = OmegaConf.to_container(cfg.model, resolve=True)
    c.pop("name", None)
    factory = hydra.utils.get_method(c.pop("_target_"))
    return factory(input_shape=data.input_shape, num_outputs=data.num_classes, **c)


def run_steps(cfg: DictConfig, data: Dataset) -> tuple[int, int]:
    """(total optimizer steps, steps per epoch) of a run: full batches per epoch."""
    steps = len(data.x_train) // int(cfg.trainer.batch_size)
    return max(steps * int(cfg.trainer.epochs), 1), max(steps, 1)


def build_rule(
    cfg: DictConfig,
    model: Model,
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
):
    name, kwargs = _split_name(cfg.rule)
    kwargs.pop("_partial_", None)  # the factory is called with the model and loss
    target = kwargs.pop("_target_", None)
    factory = hydra.utils.get_method(target) if target else get_rule(name)
    if "optimizer" in inspect.signature(factory).parameters:
        # the optimizer of the rule's own parameters (Trainable): rule.optimizer, or
        # the run's; its schedule spans the run's steps
        spec = kwargs.get("optimizer")
        where = "rule.optimizer" if spec else "optim"
        spec = spec or OmegaConf.to_container(cfg.optim, resolve=True)
        kwargs["optimizer"] = _rule_optimizer(spec, where, total_steps, steps_per_epoch)
    if name == "ff" and kwargs.get("epochs_per_stage") is not None:
        # layerwise FF is configured in epochs; the rule counts steps
        eps = int(kwargs.pop("epochs_per_stage"))
        if kwargs.get("steps_per_stage") is not None:
            raise ValueError(
                "give rule.epochs_per_stage or rule.steps_per_stage, not both"
            )
        if steps_per_epoch is None:
            raise ValueError("rule.epochs_per_stage needs the run's steps per epoch")
        kwargs["steps_per_stage"] = eps * int(steps_per_epoch)
    elif name == "ff":
        kwargs.pop("epochs_per_stage", None)
    return name, factory(model, get_loss(cfg.loss), **kwargs)


def _rule_optimizer(
    spec: dict[str, Any],
    where: str,
    total_steps: int | None,
    steps_per_epoch: int | None,
):
    """An optim-style mapping (``name``, ``lr``, ...) -> optax transformation, with
    the run's step counts for its schedule."""
    o = dict(spec)
    if total_steps is not None:
        o.setdefault("total_steps", total_steps)
        o.setdefault("steps_per_epoch", steps_per_epoch)
    elif o.get("schedule", "constant") != "constant" and "total_steps" not in o:
        raise ValueError(
            f"{where}.schedule={o['schedule']!r} needs the run's step "
            "counts: build_rule(cfg, model, total_steps, steps_per_epoch)"
        )
    try:
        return make_optimizer(
            o.pop("name"), o.pop("lr"), total_steps=int(o.pop("total_steps", 1)), **o
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


def check_rule_options(cfg: DictConfig) -> None:
    """Build the rule on a stand-in of the configured model, before any data loads.

    The stand-in has the configured stages but a made-up input shape (64 features, or
    28x28x1 images) and 10 classes, so only the errors that name a ``rule.<option>``
    are reported here (as :class:`ConfigError`, with the closest valid value); the
    rest surface when the real model is built.
    """
    m = OmegaConf.to_container(cfg.model, resolve=True)
    shape = (64,) if m["_target_"].endswith(".mlp") else (28, 28, 1)
    try:
        stand_in = build_model(cfg, SimpleNamespace(input_shape=shape, num_classes=10))
    except Exception:  # the real build reports the model's own errors
        return
    try:
        build_rule(cfg, stand_in, total_steps=1, steps_per_epoch=1)
    except UnsupportedModelError:
        return
    except ValueError as e:
        if "rule." not in str(e):
            return
        r = OmegaConf.to_container(cfg.rule, resolve=True)
        valid = re.search(r"\[[^\]]*\]", str(e))  # the valid values, as a list
        for k, v in r.items():
            if isinstance(v, str) and f"rule.{k}" in str(e) and valid:
                match = closest(v, ast.literal_eval(valid.group(0)))
                if match:
                    raise ConfigError(
                        f"{e}; did you mean {match!r}?", fix=f"rule.{k}={match}"
                    ) from e
        raise ConfigError(str(e)) from e


def build_optimizer(cfg: DictConfig, total_steps: int):
    name, kwargs = _split_name(cfg.optim)
    # total_steps = steps per epoch * trainer.epochs (schedule=step's decay_epochs)
    steps_per_epoch = max(total_steps // max(int(cfg.trainer.epochs), 1), 1)
    return make_optimizer(
        name, total_steps=total_steps, steps_per_epoch=steps_per_epoch, **kwargs
    )


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
    logger = cfg.get("logger") or {"name": "none"}
    name = logger["name"]
    if name == "none":
        return NullWriter()
    if name == "csv":
        return CSVWriter(out_dir)
    if name == "wandb":
        kw = {k: v for k, v in OmegaConf.to_container(logger, resolve=True).items()}
        kw.pop("name")
        # one W&B run per run directory and config: a resume continues it
        where = f"{os.path.abspath(out_dir)}|{config_tag(cfg)}"
        kw["run_id"] = hashlib.sha256(where.encode()).hexdigest()[:16]
        kw["job_type"] = kw.get("job_type") or cfg.rule.name
        # tags to filter by in the W&B UI: the user's, then the config's choices
        chosen = [f"{g}={cfg[g].name}" for g in ("rule", "data", "model", "optim")]
        kw["tags"] = list(dict.fromkeys([*(kw.get("tags") or []), *chosen]))
        return WandbWriter(
            name=run_name,
            directory=out_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
            **kw,
        )
    raise ValueError(
        f"unknown logger {name!r}; valid loggers: ['csv', 'none', 'wandb']"
    )


def device_info() -> dict[str, Any]:
    devs = jax.devices()
    return {
        "platform": devs[0].platform,
        "count": len(devs),
        "kind": devs[0].device_kind,
    }


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)


# Keys that may differ between a run and its resumption (they change no number).
_VOLATILE = (
    "out_dir",
    "run_name",
    "trainer.progress",
    "trainer.checkpoint_every",
    "trainer.compilation_cache_dir",
    "logger",
)


def _fingerprint(cfg: DictConfig) -> dict[str, Any]:
    c = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _VOLATILE:
        *parents, leaf = dotted.split(".")
        node = c
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return c


def config_tag(cfg: DictConfig) -> str:
    """A short hash of the config's fingerprint: what a checkpoint is tagged with."""
    blob = json.dumps(_fingerprint(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _finished(path: str, cfg: DictConfig) -> dict[str, Any] | None:
    """The results in ``path`` if they are a finished run of the same config."""
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if res.get("status") not in ("ok", "diverged"):
        return None
    if _fingerprint(OmegaConf.create(res.get("config", {}))) != _fingerprint(cfg):
        raise ValueError(
            f"{path} holds a finished run of a different configuration; use another "
            "output directory (hydra.run.dir=... or hydra.sweep.dir=...)"
        )
    return res


def _enable_compilation_cache(directory: str | None) -> None:
    """JAX's persistent compilation cache: later jobs of a sweep skip recompiling."""
    if directory:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run(cfg: DictConfig, out_dir: str | None = None) -> dict[str, Any] | list:
    """Train one configuration and write ``results.json`` to ``out_dir``.

    Returns the results dict (the ``results.json`` contract of DESIGN.md). With
    ``trainer.seeds=[0,1,2]`` the seeds train together in one compiled program
    (``vmap``); each gets ``out_dir/seed=<s>/results.json`` and a list is returned.
    A finished run (results.json with status ok/diverged and the same config) in
    ``out_dir`` is not retrained; an interrupted one resumes from its checkpoint.
    """
    validate_config(cfg)
    check_rule_options(cfg)
    out_dir = out_dir or cfg.get("out_dir") or os.getcwd()
    os.makedirs(out_dir, exist_ok=True)
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" noise
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
    done = [
        _finished(os.path.join(d, "results.json"), c)
        for d, c in zip(seed_dirs, seed_cfgs)
    ]
    if all(r is not None for r in done):
        print(f"already finished, not retraining: {out_dir}")
        return done if multi else done[0]

    start = dt.datetime.now(dt.timezone.utc)
    _enable_compilation_cache(cfg.trainer.get("compilation_cache_dir"))
    data = build_data(cfg)
    model = build_model(cfg, data)
    batch_size = int(cfg.trainer.batch_size)
    epochs = int(cfg.trainer.epochs)
    total_steps, steps_per_epoch = run_steps(cfg, data)
    rule_name, rule = build_rule(cfg, model, total_steps, steps_per_epoch)
    optimizer = build_optimizer(cfg, total_steps=total_steps)
    writers = []
    lead = jax.process_index() == 0  # on several hosts only the first writes files
    for c, d in zip(seed_cfgs, seed_dirs):
        name = c.get("run_name") or f"{rule_name}-{data.name}-seed{c.seed}"
        writers.append(build_writer(c, d, name) if lead else NullWriter())
    try:
        with log_to(os.path.join(out_dir, "train.log")):
            outs = fit_seeds(
                model,
                get_loss(cfg.loss),
                rule,
                optimizer,
                data,
                epochs=epochs,
                batch_size=batch_size,
                keys=[jax.random.PRNGKey(s) for s in seeds],
                batched=multi,
                probe_size=int(cfg.trainer.probe_size),
                eval_chunk=int(cfg.trainer.eval_chunk),
                writers=writers,
                progress=bool(cfg.trainer.progress),
                data_parallel=bool(cfg.trainer.get("data_parallel", False)),
                checkpoint_dir=out_dir,
                checkpoint_every=int(cfg.trainer.get("checkpoint_every", 0)),
                checkpoint_tag=config_tag(cfg),
                lr_schedule=build_schedule(cfg, total_steps),
            )
        all_results = []
        for c, d, out, w in zip(seed_cfgs, seed_dirs, outs, writers):
            results = {
                "rule": rule_name,
                "dataset": data.name,
                "model": model.spec,
                "loss": cfg.loss,
                "seed": int(c.seed),
                "epochs": epochs,
                "batch_size": batch_size,
                "optimizer": OmegaConf.to_container(cfg.optim, resolve=True),
                "num_classes": data.num_classes,
                "final": out["final"],
                "selected": out["selected"],
                "prediction": out["prediction"],
                "history": out["history"],
                "examples_per_second": out["examples_per_second"],
                "seeds_in_program": out["seeds_in_program"],
                "wall_seconds": out["wall_seconds"],
                "device": device_info(),
                "status": out["status"],
                "diverged_epoch": out["diverged_epoch"],
                "config": OmegaConf.to_container(c, resolve=True),
                "provenance": provenance(start),
            }
            if lead:
                os.makedirs(d, exist_ok=True)
                write_json(os.path.join(d, "results.json"), results)
            w.write_summary(
                {f"final/{k}": v for k, v in out["final"].items()}
                | {k: results[k] for k in _SUMMARY_KEYS}
                | {f"provenance/{k}": v for k, v in results["provenance"].items()}
            )
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


def summary_line(results: dict[str, Any], path: str) -> str:
    """The one-line summary of a finished run; it says which prediction mode a rule
    chose for its headline, and warns when the headline is below chance (1/C)."""
    f, pred = results["final"], results.get("prediction")
    acc = f.get("test_accuracy")
    mode = f" ({pred['mode']}, chosen on {pred['chosen_on']})" if pred else ""
    line = (
        f"[{results['rule']} on {results['dataset']}, seed {results['seed']}] "
        f"status={results['status']} test_accuracy={_round(acc, 4)}{mode} "
        f"test_loss={_round(f.get('test_loss'), 4)} "
        f"examples/s={_round(results['examples_per_second'])} -> {path}"
    )
    chance = 1.0 / results["num_classes"]
    if acc is not None and acc < chance:
        others = ", ".join(
            f"{k.split('/', 1)[1]} {v:.3f}"
            for k, v in f.items()
            if k.startswith("test_accuracy/") and v is not None
        )
        line += (
            f" WARNING: test_accuracy {acc:.3f} is below chance (1/"
            f"{results['num_classes']} = {chance:.3f}), worse than guessing: a bug, "
            "or a rule that fails on this model"
            + (f"; the rule's other predictions: {others}" if others else "")
        )
    return line


# Besides final/<metric>, what a writer's summary gets (W&B's run summary).
_SUMMARY_KEYS = ("status", "diverged_epoch", "examples_per_second", "wall_seconds")


def _round(v, digits=None):
    return None if v is None else round(v, digits)


if __name__ == "__main__":  # python -m bp_alternatives.train: the bpa-train command
    from bp_alternatives.cli import train

    train()
