"""A trained run back from its directory: ``restore(run_dir)``.

The run's ``results.json`` holds its resolved config; the training stack is rebuilt
from it (``train.build_data`` / ``build_model`` / ``build_rule``) and the trained
state is read from the ``checkpoint.msgpack`` the trainer left beside it (the last
epoch's ``TrainState``, written when ``trainer.checkpoint_every > 0``).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
from flax import serialization
from omegaconf import OmegaConf

from bp_alternatives import results as results_io
from bp_alternatives.data import Dataset
from bp_alternatives.model import Model, init_params
from bp_alternatives.train import build_data, build_model, build_rule, run_steps
from bp_alternatives.trainer import read_checkpoint

CHECKPOINT = "checkpoint.msgpack"


class Restored(NamedTuple):
    """A finished run rebuilt: its data, model and rule as configured, the trained
    ``params`` and the rule's state (``None`` where the checkpoint's state does not
    fit the rule's)."""

    results: results_io.Results
    data: Dataset
    model: Model
    rule: Any  # LearningRule
    params: Any
    rule_state: Any | None


def _restore_tree(template, state_dict):
    """``state_dict`` into ``template``'s structure; ``ValueError`` when a leaf's
    shape differs (e.g. a ``trainer.seeds`` checkpoint: one batched state)."""
    tree = serialization.from_state_dict(template, state_dict)
    shapes = [jax.numpy.shape(a) for a in jax.tree_util.tree_leaves(tree)]
    if shapes != [jax.numpy.shape(a) for a in jax.tree_util.tree_leaves(template)]:
        raise ValueError("shape mismatch")
    return tree


def restore(run_dir: str) -> Restored | None:
    """The finished run in ``run_dir`` rebuilt from its ``results.json`` and
    :data:`CHECKPOINT`; ``None`` if the run did not finish ok, left no checkpoint
    (``trainer.checkpoint_every=0``) or one whose parameters do not fit the model
    (``trainer.seeds``: one batched state per job). Raises
    ``results.ResultsError`` for a malformed ``results.json``."""
    path = os.path.join(run_dir, CHECKPOINT)
    res = results_io.read(os.path.join(run_dir, results_io.FILENAME))
    if res.status != "ok" or not os.path.exists(path):
        return None
    cfg = OmegaConf.create(res.config)
    data = build_data(cfg)
    model = build_model(cfg, data)
    _, rule = build_rule(cfg, model, *run_steps(cfg, data))
    _, raw = read_checkpoint(path)
    key = jax.random.PRNGKey(0)
    try:
        params = _restore_tree(init_params(model, key), raw["params"])
    except (KeyError, ValueError):
        return None
    try:
        state = _restore_tree(rule.init(key, params), raw["rule_state"])
    except (KeyError, ValueError):
        state = None
    return Restored(res, data, model, rule, params, state)
