"""Shared fixtures: a composed Hydra config shrunk for tests, and tree helpers."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import settings
from omegaconf import DictConfig, open_dict

import bp_alternatives.config  # noqa: F401  (registers the config schemas)
from bp_alternatives.model import Params

# Property tests draw the same examples on every run (CI must not flake on a lucky
# draw); HYPOTHESIS_PROFILE=explore draws new ones on every run, to hunt for bugs.
settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "bp_alternatives", "configs"
)


def compose_cfg(overrides: list[str] | None = None) -> DictConfig:
    """Compose the package's ``configs/train.yaml`` with ``overrides``, as the CLI
    would."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides or []))
    with open_dict(cfg):
        cfg.trainer.progress = False
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    """``cfg_factory(*overrides)`` -> a config whose run writes under ``tmp_path``."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_cfg(list(overrides))
        with open_dict(cfg):
            cfg.out_dir = str(tmp_path)
        return cfg

    return make


def to_f64(tree: Params) -> Params:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def tree_allclose(a, b, rtol: float, atol: float = 0.0) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    return all(bool(jnp.allclose(x, y, rtol=rtol, atol=atol)) for x, y in zip(la, lb))
