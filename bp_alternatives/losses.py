"""Re-exports ``bp_alternatives.model.losses``, where the losses live."""

from bp_alternatives.model.losses import LOSSES, Loss, as_targets, get_loss

__all__ = ["LOSSES", "Loss", "as_targets", "get_loss"]
