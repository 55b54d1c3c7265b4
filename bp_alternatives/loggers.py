"""The ``logger`` group's factories (``_target_`` of ``configs/logger/*.yaml``).

Each is ``_partial_`` in its config and called by
:func:`bp_alternatives.experiment.build_writer` with the run's ``directory``, its
``name`` and its ``config``; it returns a :class:`~bp_alternatives.writers.
MetricWriter`. A logger of your own plugs in the same way: a factory with those three
keyword arguments, named by ``_target_`` in a ``logger`` config.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bp_alternatives.rundir import config_tag
from bp_alternatives.writers import CSVWriter, MetricWriter, NullWriter, WandbWriter


def null_logger(directory: str, name: str, config: DictConfig) -> MetricWriter:
    """``logger=none``: nothing written."""
    del directory, name, config
    return NullWriter()


def csv_logger(directory: str, name: str, config: DictConfig) -> MetricWriter:
    """``logger=csv``: ``<directory>/metrics.csv``, one row per epoch."""
    del name, config
    return CSVWriter(directory)


def wandb_logger(
    directory: str, name: str, config: DictConfig, **options: Any
) -> MetricWriter:
    """``logger=wandb``: one W&B run per run directory and config (a resume continues
    it: ``run_id``); ``job_type`` defaults to the rule, and the tags get the config's
    choices (``rule=fa``, ...) after the user's. ``options``: :class:`WandbWriter`'s."""
    where = f"{os.path.abspath(directory)}|{config_tag(config)}"
    options["run_id"] = hashlib.sha256(where.encode()).hexdigest()[:16]
    options["job_type"] = options.get("job_type") or config.rule.name
    chosen = [f"{g}={config[g].name}" for g in ("rule", "data", "model", "optim")]
    options["tags"] = list(dict.fromkeys([*(options.get("tags") or []), *chosen]))
    return WandbWriter(
        name=name,
        directory=directory,
        config=OmegaConf.to_container(config, resolve=True),
        **options,
    )
