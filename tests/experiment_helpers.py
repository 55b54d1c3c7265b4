"""Composing experiment configs the way a sweep job gets them, for the tests of
``configs/experiment/`` and of runs built from them."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from tests.conftest import CONFIG_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(p.stem for p in Path(CONFIG_DIR, "experiment").glob("*.yaml"))
MINE = (
    "compare_digits",
    "compare_fashion_mnist",
    "biotorch_fashion_mnist",
    "xor",
    "vanishing_gradients",
    "exploding_gradients",
    "remat",
)


def compose_full(overrides: list[str]):
    """The composed config *with* its ``hydra`` node (sweeper params, sweep dir)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="train", overrides=overrides, return_hydra_config=True
        )


def job_cfg(out_dir, *overrides: str):
    """A job's config (no ``hydra`` node), writing under ``out_dir``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.trainer.progress = False
        cfg.out_dir = str(out_dir)
    return cfg


def sweep_params(name: str) -> dict[str, list[str]]:
    """``hydra.sweeper.params`` of an experiment, each parsed into its values."""
    cfg = compose_full([f"experiment={name}"])
    params = cfg.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    out = {}
    for override in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]):
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        out[override.get_key_element()] = values
    return out
