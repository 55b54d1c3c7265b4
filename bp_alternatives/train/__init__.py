"""The training loop, one concept per module.

- ``step``: ``TrainState``, the train step and one epoch as a ``lax.scan``;
- ``evaluate``: a split's loss and accuracies, in chunks;
- ``history``: per-epoch history entries, writer names, selection on validation;
- ``checkpoint``: atomic checkpoints and reading them back;
- ``sharding``: data parallelism over devices and the seed axis;
- ``record``: the headline choice, per-epoch history, resume, each seed's results;
- ``fit``: training over seeds.

``python -m bp_alternatives.train`` is the ``bpa-train`` command (``__main__``); the
config -> objects side lives in :mod:`bp_alternatives.experiment`.
"""

from bp_alternatives.train.checkpoint import (
    Checkpointer,
    CheckpointMismatchError,
    read_checkpoint,
)
from bp_alternatives.train.evaluate import make_eval_fn
from bp_alternatives.train.fit import fit, fit_seeds
from bp_alternatives.train.history import flat_scalars, select_on_validation
from bp_alternatives.train.record import choose_headline
from bp_alternatives.train.sharding import data_mesh, seed_axis
from bp_alternatives.train.step import (
    TrainState,
    init_state,
    make_epoch_fn,
    make_train_step,
)

__all__ = [
    "CheckpointMismatchError",
    "Checkpointer",
    "TrainState",
    "choose_headline",
    "data_mesh",
    "fit",
    "fit_seeds",
    "flat_scalars",
    "init_state",
    "make_epoch_fn",
    "make_eval_fn",
    "make_train_step",
    "read_checkpoint",
    "seed_axis",
    "select_on_validation",
]
