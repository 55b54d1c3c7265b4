"""Learning rules: factories returning a ``LearningRule`` of pure functions.

``RULES`` maps the names used on the command line (``rule=fa``) to factories: one
per ``configs/rule/<name>.yaml``, the factory its ``_target_`` names. A new rule is a
module and a YAML; nothing here changes.
"""

import importlib
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from bp_alternatives.rules._backprop import BackpropState, bp
from bp_alternatives.rules._base import (
    Batch,
    LearningRule,
    Prediction,
    RuleInitFn,
    RulePredictFn,
    RuleUpdateFn,
    UnsupportedModelError,
    feedforward_prediction,
    headline_candidates,
    loss_fn,
    predictor,
)
from bp_alternatives.rules._direct_feedback_alignment import (
    DirectFeedbackAlignmentState,
    dfa,
)
from bp_alternatives.rules._equilibrium_propagation import (
    EquilibriumPropagationState,
    ep,
)
from bp_alternatives.rules._feedback_alignment import FeedbackAlignmentState, fa
from bp_alternatives.rules._forward_forward import FFState, ff
from bp_alternatives.rules._manual_backprop import ManualBackpropState, manual_bp
from bp_alternatives.rules._predictive_coding import PredictiveCodingState, pc
from bp_alternatives.rules._synthetic_gradients import SyntheticGradientsState, sg

RULE_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "rule"


def _target(path: Path) -> Callable:
    """The factory a rule YAML's ``_target_`` names (``package.module.factory``)."""
    target = OmegaConf.load(path)["_target_"]
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


RULES: dict[str, Callable] = {
    p.stem: _target(p) for p in sorted(RULE_CONFIGS.glob("*.yaml"))
}


def get_rule(name: str):
    """Look a rule factory up by name; unknown names list the valid ones."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown rule {name!r}; valid rules: {sorted(RULES)}"
        ) from None


__all__ = [
    "RULES",
    "BackpropState",
    "Batch",
    "FFState",
    "DirectFeedbackAlignmentState",
    "EquilibriumPropagationState",
    "FeedbackAlignmentState",
    "LearningRule",
    "ManualBackpropState",
    "PredictiveCodingState",
    "RuleInitFn",
    "Prediction",
    "RulePredictFn",
    "RuleUpdateFn",
    "SyntheticGradientsState",
    "UnsupportedModelError",
    "bp",
    "ff",
    "dfa",
    "ep",
    "fa",
    "feedforward_prediction",
    "get_rule",
    "headline_candidates",
    "loss_fn",
    "manual_bp",
    "pc",
    "predictor",
    "sg",
]
