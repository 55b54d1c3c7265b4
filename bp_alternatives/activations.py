"""Re-exports ``bp_alternatives.model.activations``, where the activations live."""

from bp_alternatives.model.activations import (
    ACTIVATIONS,
    LEAKY_RELU_SLOPE,
    Activation,
    get_activation,
)

__all__ = ["ACTIVATIONS", "LEAKY_RELU_SLOPE", "Activation", "get_activation"]
