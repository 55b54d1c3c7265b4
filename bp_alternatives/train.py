"""``run(cfg)``: one experiment from a composed Hydra config to ``results.json``.

The ``@hydra.main`` entry point in ``experiments/train.py`` is a thin wrapper over this
function, so tests call it directly with a composed config.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import hydra
import jax
from omegaconf import DictConfig, OmegaConf

from bp_alternatives.data import Dataset, load_dataset
from bp_alternatives.losses import get_loss
from bp_alternatives.model import Model
from bp_alternatives.optim import make_optimizer
from bp_alternatives.rules import get_rule
from bp_alternatives.trainer import fit
from bp_alternatives.writers import CSVWriter, MetricWriter, NullWriter, WandbWriter


def _split_name(node: DictConfig) -> tuple[str, dict[str, Any]]:
    c = OmegaConf.to_container(node, resolve=True)
    return c.pop("name"), c


def build_data(cfg: DictConfig) -> Dataset:
    name, kwargs = _split_name(cfg.data)
    return load_dataset(name, **kwargs)


def build_model(cfg: DictConfig, data: Dataset) -> Model:
    c = OmegaConf.to_container(cfg.model, resolve=True)
    c.pop("name", None)
    factory = hydra.utils.get_method(c.pop("_target_"))
    return factory(input_shape=data.input_shape, num_outputs=data.num_classes, **c)


def build_rule(cfg: DictConfig, model: Model):
    name, kwargs = _split_name(cfg.rule)
    return name, get_rule(name)(model, get_loss(cfg.loss), **kwargs)


def build_optimizer(cfg: DictConfig, total_steps: int):
    name, kwargs = _split_name(cfg.optim)
    return make_optimizer(name, total_steps=total_steps, **kwargs)


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
        kw.setdefault("job_type", cfg.rule.name)
        return WandbWriter(
            name=run_name,
            directory=out_dir,
            config=OmegaConf.to_container(cfg, resolve=True),
            **kw,
        )
    raise ValueError(f"unknown logger {name!r}; valid loggers: ['csv', 'none', 'wandb']")


def device_info() -> dict[str, Any]:
    devs = jax.devices()
    return {"platform": devs[0].platform, "count": len(devs), "kind": devs[0].device_kind}


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def run(cfg: DictConfig, out_dir: str | None = None) -> dict[str, Any]:
    """Train one configuration and write ``results.json`` to ``out_dir``.

    Returns the results dict (the ``results.json`` contract of DESIGN.md).
    """
    out_dir = out_dir or cfg.get("out_dir") or os.getcwd()
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" noise
    os.makedirs(out_dir, exist_ok=True)
    data = build_data(cfg)
    model = build_model(cfg, data)
    rule_name, rule = build_rule(cfg, model)
    batch_size = int(cfg.trainer.batch_size)
    epochs = int(cfg.trainer.epochs)
    steps = len(data.x_train) // batch_size
    optimizer = build_optimizer(cfg, total_steps=max(steps * epochs, 1))
    run_name = cfg.get("run_name") or f"{rule_name}-{data.name}-seed{cfg.seed}"
    writer = build_writer(cfg, out_dir, run_name)
    try:
        out = fit(
            model,
            get_loss(cfg.loss),
            rule,
            optimizer,
            data,
            epochs=epochs,
            batch_size=batch_size,
            key=jax.random.PRNGKey(int(cfg.seed)),
            probe_size=int(cfg.trainer.probe_size),
            eval_chunk=int(cfg.trainer.eval_chunk),
            writer=writer,
            progress=bool(cfg.trainer.progress),
        )
        results = {
            "rule": rule_name,
            "dataset": data.name,
            "model": model.spec,
            "loss": cfg.loss,
            "seed": int(cfg.seed),
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": OmegaConf.to_container(cfg.optim, resolve=True),
            "final": out["final"],
            "history": out["history"],
            "examples_per_second": out["examples_per_second"],
            "wall_seconds": out["wall_seconds"],
            "device": device_info(),
            "status": out["status"],
            "diverged_epoch": out["diverged_epoch"],
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        write_json(os.path.join(out_dir, "results.json"), results)
        writer.write_summary({f"final/{k}": v for k, v in out["final"].items()})
    finally:
        writer.close()
    f = results["final"]
    print(
        f"[{rule_name} on {data.name}, seed {cfg.seed}] status={results['status']} "
        f"test_accuracy={f.get('test_accuracy')} test_loss={f.get('test_loss')} "
        f"examples/s={_round(results['examples_per_second'])} "
        f"-> {os.path.join(out_dir, 'results.json')}"
    )
    return results


def _round(v):
    return None if v is None else round(v)
