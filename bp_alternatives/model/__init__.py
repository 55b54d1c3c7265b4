"""The model interface: a stack of stages, and the parts a stage is made of.

Modules, one concept each:

- ``core``: ``Stage``, ``Model``, ``init_params``, ``forward`` (the stage core);
- ``ops``: parameter-free post ops (pooling, flatten) with their hand-written backward;
- ``norm``: normalisation (BatchNorm, LayerNorm) with its hand-written backward;
- ``architectures``: ``mlp``, ``cnn``, ``lenet``;
- ``activations``, ``losses``, ``initializers``: by name, with hand-written derivatives
  where hand-written backprop needs them.
"""

from bp_alternatives.model.architectures import cnn, lenet, mlp
from bp_alternatives.model.core import (
    Model,
    ModelState,
    Params,
    Stage,
    StageCache,
    apply_linear,
    apply_norm,
    apply_stage,
    forward,
    inference_params,
    init_model_state,
    init_params,
    output,
    stage_fn,
    update_model_state,
)
from bp_alternatives.model.ops import POST_OPS, PostOp, avg_pool, get_post_op, max_pool

__all__ = [
    "POST_OPS",
    "Model",
    "ModelState",
    "Params",
    "PostOp",
    "Stage",
    "StageCache",
    "apply_linear",
    "apply_norm",
    "apply_stage",
    "avg_pool",
    "cnn",
    "forward",
    "get_post_op",
    "inference_params",
    "init_model_state",
    "init_params",
    "lenet",
    "max_pool",
    "mlp",
    "output",
    "stage_fn",
    "update_model_state",
]
