"""Learning rules: factories returning a ``LearningRule`` of pure functions.

``RULES`` maps the names used on the command line (``rule=fa``) to factories.
"""

from bp_alternatives.rules._backprop import BackpropState, bp
from bp_alternatives.rules._base import (
    Batch,
    LearningRule,
    RuleInitFn,
    RulePredictFn,
    RuleUpdateFn,
    UnsupportedModelError,
    loss_fn,
)
from bp_alternatives.rules._manual_backprop import ManualBackpropState, manual_bp

RULES = {
    "bp": bp,
    "manual_bp": manual_bp,
}


def get_rule(name: str):
    """Look a rule factory up by name; unknown names list the valid ones."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; valid rules: {sorted(RULES)}") from None


__all__ = [
    "RULES",
    "BackpropState",
    "Batch",
    "LearningRule",
    "ManualBackpropState",
    "RuleInitFn",
    "RulePredictFn",
    "RuleUpdateFn",
    "UnsupportedModelError",
    "bp",
    "get_rule",
    "loss_fn",
    "manual_bp",
]
