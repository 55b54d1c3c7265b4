"""Old import path of the training loop, kept for modules not yet moved to
:mod:`bp_alternatives.train`; import from there."""

from bp_alternatives.train import (
    Checkpointer,
    CheckpointMismatchError,
    TrainState,
    choose_headline,
    fit,
    fit_seeds,
    init_state,
    make_epoch_fn,
    make_eval_fn,
    make_train_step,
    read_checkpoint,
    seed_axis,
)
from bp_alternatives.train.sharding import data_mesh as _data_mesh

__all__ = [
    "CheckpointMismatchError",
    "Checkpointer",
    "TrainState",
    "_data_mesh",
    "choose_headline",
    "fit",
    "fit_seeds",
    "init_state",
    "make_epoch_fn",
    "make_eval_fn",
    "make_train_step",
    "read_checkpoint",
    "seed_axis",
]
