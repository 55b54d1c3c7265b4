"""A finished run back as objects: ``restore(run_dir)`` rebuilds its data, model and
rule from the resolved config in its ``results.json`` and loads the trained state from
the checkpoint beside it.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
from flax import serialization
from omegaconf import DictConfig, OmegaConf, open_dict

from bp_alternatives import results as results_io
from bp_alternatives.data import Dataset
from bp_alternatives.experiment import build_data, build_model, build_rule, run_steps
from bp_alternatives.model import (
    Model,
    inference_params,
    init_model_state,
    init_params,
    output,
)
from bp_alternatives.rules import LearningRule
from bp_alternatives.train import read_checkpoint

CHECKPOINT = "checkpoint.msgpack"  # the trained state beside a run's results.json


class Restored(NamedTuple):
    """A finished run rebuilt (:func:`restore`)."""

    data: Dataset
    model: Model
    rule: LearningRule
    params: Any
    rule_state: Any  # ``None`` for a rule without a prediction hook
    results: dict[str, Any]

    def scores(self, x: jax.Array, mode: str | None = None) -> jax.Array:
        """``[B, C]`` class scores of inputs ``x``: the rule's prediction ``mode``
        (default: the one its headline used at the last epoch, else its first), or
        the model's output for a rule with one prediction."""
        if self.rule.predict is None:
            return output(self.model, self.params, x)
        pred = self.rule.predict(self.params, self.rule_state, x)
        modes = {**pred.headline, **pred.others}
        if mode is None:
            history = self.results.get("history") or [{}]
            mode = history[-1].get("prediction_mode")
        return modes[mode] if mode in modes else next(iter(modes.values()))


def restore(run_dir: str) -> Restored | None:
    """The trained model of the finished run in ``run_dir``: data, model and rule
    rebuilt from the resolved config in its ``results.json`` and the last epoch's
    state from the checkpoint beside it (:data:`CHECKPOINT`).

    ``None`` when the run did not finish ``ok``, left no state
    (``trainer.checkpoint_every=0``), a state of another shape (``trainer.seeds``:
    one batched state per job) or a config this version cannot build. The state is
    the last epoch's, also where a table reports a best-validation epoch.
    OSError / JSONDecodeError for a missing or unreadable ``results.json``.
    """
    results = results_io.read(os.path.join(run_dir, results_io.FILENAME)).to_dict()
    path = os.path.join(run_dir, CHECKPOINT)
    if results.get("status") != "ok" or not os.path.exists(path):
        return None
    cfg = _with_targets(OmegaConf.create(results["config"]))
    try:
        data = build_data(cfg)
        model = build_model(cfg, data)
        _, rule = build_rule(cfg, model, *run_steps(cfg, data))
    except (TypeError, ValueError):  # a config this version cannot build
        return None
    _, raw = read_checkpoint(path)
    key = jax.random.PRNGKey(0)
    try:
        params = _restore_tree(init_params(model, key), raw["params"])
        stats = raw.get("model_state") or {}  # BatchNorm's running statistics
        stats = _restore_tree(init_model_state(model, params), stats) if stats else ()
        params = inference_params(params, stats)
        state = None
        if rule.predict is not None:
            state = _restore_tree(rule.init(key, params), raw["rule_state"])
    except (KeyError, ValueError):
        return None
    return Restored(data, model, rule, params, state, results)


CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def _with_targets(cfg: DictConfig) -> DictConfig:
    """A config recorded before the groups named their factories: each group without
    a ``_target_`` gets that of the package's option of the same ``name``."""
    for group in ("data", "model", "rule", "optim"):
        node = cfg.get(group)
        if node is None or "_target_" in node:
            continue
        option = OmegaConf.load(os.path.join(CONFIG_DIR, group, f"{node.name}.yaml"))
        with open_dict(cfg):
            for key in ("_target_", "_partial_"):
                if key in option:
                    node[key] = option[key]
    return cfg


def _restore_tree(template, state_dict):
    """``state_dict`` into ``template``'s structure; ValueError on another shape."""
    tree = serialization.from_state_dict(template, state_dict)
    shapes = [jax.numpy.shape(a) for a in jax.tree_util.tree_leaves(tree)]
    if shapes != [jax.numpy.shape(a) for a in jax.tree_util.tree_leaves(template)]:
        raise ValueError("shape mismatch")
    return tree
