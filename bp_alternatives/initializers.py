"""Re-exports ``bp_alternatives.model.initializers``, where the initialisers live."""

from bp_alternatives.model.initializers import INITIALIZERS, get_initializer

__all__ = ["INITIALIZERS", "get_initializer"]
