"""Architectures built from stages: ``mlp``, ``cnn`` (2-D images or 1-D signals) and
``lenet`` (LeNet-5). Each factory checks its options and returns a ``Model``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.model.activations import get_activation
from bp_alternatives.model.conv import conv_general_dilated
from bp_alternatives.model.core import Model, Stage, apply_stage
from bp_alternatives.model.initializers import get_initializer
from bp_alternatives.model.norm import check_norm


def _dense_stages(
    widths: Sequence[int],
    num_outputs: int,
    activation: str,
    output_activation: str,
    bias: bool,
    kernel_init,
    norm: str = "none",
    readout_norm: bool = False,
) -> list[Stage]:
    """Dense hidden stages ``hidden_i`` of ``widths`` (normalised by ``norm``), then
    the ``readout`` stage (normalised too when ``readout_norm``)."""
    stages = []
    for i, w in enumerate([*widths, num_outputs]):
        is_readout = i == len(widths)
        stages.append(
            Stage(
                linear=nn.Dense(
                    w, use_bias=bias, kernel_init=kernel_init, name=f"dense_{i}"
                ),
                activation=output_activation if is_readout else activation,
                name="readout" if is_readout else f"hidden_{i}",
                norm="none" if is_readout and not readout_norm else norm,
            )
        )
    return stages


def mlp(
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "tanh",
    output_activation: str = "identity",
    init: str = "xavier",
    init_std: float = 0.01,
    bias: bool = True,
    norm: str = "none",
    readout_norm: bool = False,
) -> Model:
    """A multilayer perceptron: ``len(hidden)`` hidden stages and one read-out stage.

    Inputs must be flat (``input_shape == (D,)``); the data loaders flatten images.
    ``norm``: ``none`` | ``batchnorm`` | ``layernorm`` between each hidden stage's
    dense layer and its activation (``bp_alternatives.model.norm``);
    ``readout_norm``: the read-out's logits too (the public DNI MLP example's
    set-up). ``bias=False`` drops the dense layers' biases (with a normalisation
    its offset plays their part).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 1:
        raise ValueError(
            f"model=mlp needs flat inputs, got input_shape={input_shape}; "
            "flatten the data (data.flatten=true) or use a convolutional model"
        )
    get_activation(activation)
    get_activation(output_activation)
    check_norm(norm)
    kernel_init = get_initializer(init, init_std)
    widths = [int(w) for w in hidden]
    if any(w <= 0 for w in widths) or num_outputs <= 0:
        raise ValueError(f"model.hidden widths must be positive, got {list(hidden)}")
    stages = _dense_stages(
        widths,
        num_outputs,
        activation,
        output_activation,
        bias,
        kernel_init,
        norm,
        readout_norm,
    )
    spec = {
        "name": "mlp",
        "widths": [input_shape[0], *widths, num_outputs],
        "activation": activation,
        "output_activation": output_activation,
        "init": init,
        "bias": bias,
        "norm": norm,
        "readout_norm": readout_norm,
    }
    return Model(tuple(stages), input_shape, int(num_outputs), spec)


def _per_stage(value, n: int, what: str) -> list:
    """A scalar (or ``None``) for every conv stage, or a list of exactly ``n``."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"model.{what} lists {len(value)} values for {n} conv stages: {value}"
            )
        return list(value)
    return [value] * n


def _image_dims(name: str, input_shape: tuple[int, ...]) -> int:
    """The number of spatial axes of ``[*spatial, C]`` inputs; flat inputs fail."""
    if len(input_shape) < 2:
        raise ValueError(
            f"model={name} needs image inputs [H, W, C] (or signals [L, C]), got "
            f"input_shape={input_shape}; load the data with data.flatten=false"
        )
    return len(input_shape) - 1


def _conv_output(stages, input_shape) -> tuple[int, ...]:
    """The shape of one example after ``stages`` (shapes only, no compute)."""

    def run(x):
        for stage in stages:
            p = stage.linear.init(jax.random.PRNGKey(0), x)["params"]
            x = apply_stage(stage._replace(norm="none"), p, x).out  # shapes only
        return x

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return tuple(jax.eval_shape(run, x).shape[1:])


def cnn(
    input_shape: Sequence[int],
    num_outputs: int,
    channels: Sequence[int] = (32, 64),
    kernel_size: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    padding: str | Sequence[str] = "SAME",
    pool: str | Sequence[str] = "max",
    pool_size: int = 2,
    hidden: Sequence[int] = (128,),
    activation: str = "relu",
    output_activation: str = "identity",
    init: str = "he",
    init_std: float = 0.01,
    bias: bool = True,
    flatten_input: bool = False,
    input_size: int | None = None,
    norm: str = "none",
) -> Model:
    """A convolutional net: conv stages, then dense stages, then a read-out stage.

    Conv stage ``i``: ``nn.Conv(channels[i], kernel_size, stride, padding)`` ->
    ``activation`` -> pooling (``pool``: ``max`` | ``avg`` | ``none``, over
    non-overlapping ``pool_size`` windows). The last conv stage's post op also
    flattens, so the dense stages (``hidden``) see vectors. ``kernel_size``,
    ``stride``, ``padding`` and ``pool`` take one value for all conv stages or a list
    with one per stage. Works on images ``[H, W, C]`` (2-D convolutions) and on
    signals ``[L, C]`` (1-D, e.g. MNIST-1D).

    ``norm``: ``none`` | ``batchnorm`` | ``layernorm`` between every conv and hidden
    dense stage's linear part and its activation (BatchNorm per channel over batch
    and space; LayerNorm per example over all its axes); the read-out has none.

    ``flatten_input`` must stay false: the data configs read it (``data.flatten``)
    so that images arrive as ``[H, W, C]``. ``input_size``, if set, is the side the
    inputs must have (the data configs read it as ``data.resize``).
    """
    input_shape = tuple(int(d) for d in input_shape)
    nd = _image_dims("cnn", input_shape)
    if flatten_input:
        raise ValueError("model=cnn takes images; model.flatten_input must be false")
    if input_size is not None and input_shape[:-1] != (int(input_size),) * nd:
        raise ValueError(
            f"model=cnn expects {input_size}-sided inputs, got {input_shape}; "
            f"set data.resize={input_size}"
        )
    get_activation(activation)
    get_activation(output_activation)
    kernel_init = get_initializer(init, init_std)
    n_conv = len(channels)
    if n_conv == 0:
        raise ValueError("model=cnn needs at least one conv stage (model.channels)")
    conv = {
        "channels": [int(c) for c in channels],
        "kernel_size": [int(k) for k in _per_stage(kernel_size, n_conv, "kernel_size")],
        "stride": [int(s) for s in _per_stage(stride, n_conv, "stride")],
        "padding": [str(p).upper() for p in _per_stage(padding, n_conv, "padding")],
        "pool": _per_stage(pool, n_conv, "pool"),
        "pool_size": int(pool_size),
    }
    widths = [int(w) for w in hidden]
    if any(c <= 0 for c in conv["channels"]) or any(w <= 0 for w in widths):
        raise ValueError(
            f"model.channels and model.hidden must be positive, got {list(channels)}, "
            f"{list(hidden)}"
        )
    stages = _conv_stages(conv, nd, activation, bias, kernel_init)
    stages = [s._replace(norm=check_norm(norm)) for s in stages]
    stages += _dense_stages(
        widths, num_outputs, activation, output_activation, bias, kernel_init, norm
    )
    features = _conv_output(stages[:n_conv], input_shape)  # fails early if too small
    spec = {
        "name": "cnn",
        "input_shape": list(input_shape),
        **conv,
        "conv_features": int(features[0]),
        "widths": [int(features[0]), *widths, int(num_outputs)],
        "activation": activation,
        "output_activation": output_activation,
        "init": init,
        "bias": bias,
        "norm": norm,
    }
    return Model(tuple(stages), input_shape, int(num_outputs), spec)


def _conv_stages(
    conv: dict, nd: int, activation: str, bias: bool, kernel_init
) -> list[Stage]:
    """One ``nd``-dimensional conv stage per entry of ``conv["channels"]`` (the
    per-stage lists of ``cnn``'s spec); the last one's post op also flattens."""
    stages = []
    n_conv = len(conv["channels"])
    for i in range(n_conv):
        pool = conv["pool"][i]
        if pool not in ("max", "avg", "none"):
            raise ValueError(
                f"unknown model.pool {pool!r}; valid: ['avg', 'max', 'none']"
            )
        post = [] if pool == "none" else [f"{pool}_pool{conv['pool_size']}"]
        if i == n_conv - 1:
            post.append("flatten")
        stages.append(
            Stage(
                linear=nn.Conv(
                    conv["channels"][i],
                    kernel_size=(conv["kernel_size"][i],) * nd,
                    strides=conv["stride"][i],
                    padding=conv["padding"][i],
                    use_bias=bias,
                    kernel_init=kernel_init,
                    conv_general_dilated=conv_general_dilated,
                    name=f"conv_{i}",
                ),
                activation=activation,
                post="+".join(post) or "none",
                name=f"conv_{i}",
            )
        )
    return stages


def lenet(
    input_shape: Sequence[int],
    num_outputs: int,
    activation: str = "relu",
    init: str = "he",
    init_std: float = 0.01,
    flatten_input: bool = False,
    input_size: int = 32,
) -> Model:
    """LeNet-5 as in the biotorch benchmark (``le_net_mnist``), for 32x32 inputs.

    conv 6 (5x5) -> ReLU -> max-pool 2 -> conv 16 (5x5) -> ReLU -> max-pool 2 ->
    conv 120 (5x5, on the 5x5 map: a dense 400 -> 120) -> ReLU -> dense 84 -> ReLU ->
    dense ``num_outputs``. 28x28 digits are enlarged to 32x32 by the data config
    (``data.resize``, read from ``model.input_size``), as biotorch's ``Resize(32)``
    does. ``init`` is ours (He normal by default); biotorch keeps PyTorch's default.

    References:
      LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to
      document recognition", Proc. IEEE 86(11):2278-2324.
      Sanfiz & Akrout (2021), "Benchmarking the accuracy and robustness of feedback
      alignment algorithms", arXiv:2108.13446 (biotorch ``models/le_net.py``).
    """
    input_shape = tuple(int(d) for d in input_shape)
    if flatten_input:
        raise ValueError("model=lenet takes images; model.flatten_input must be false")
    if len(input_shape) != 3 or input_shape[:2] != (input_size, input_size):
        raise ValueError(
            f"model=lenet needs {input_size}x{input_size}xC images, got input_shape="
            f"{input_shape}; load the data with data.flatten=false "
            f"data.resize={input_size}"
        )
    get_activation(activation)
    kernel_init = get_initializer(init, init_std)

    def conv(features, name):
        return nn.Conv(
            features,
            (5, 5),
            padding="VALID",
            kernel_init=kernel_init,
            conv_general_dilated=conv_general_dilated,
            name=name,
        )

    def dense(features, name):
        return nn.Dense(features, kernel_init=kernel_init, name=name)

    stages = (
        Stage(conv(6, "conv1"), activation, "max_pool2", "conv1"),
        Stage(conv(16, "conv2"), activation, "max_pool2", "conv2"),
        Stage(conv(120, "conv3"), activation, "flatten", "conv3"),
        Stage(dense(84, "fc1"), activation, "none", "fc1"),
        Stage(dense(int(num_outputs), "fc2"), "identity", "none", "readout"),
    )
    spec = {
        "name": "lenet",
        "input_shape": list(input_shape),
        "channels": [6, 16, 120],
        "kernel_size": [5, 5, 5],
        "pool": ["max", "max", "none"],
        "widths": [120, 84, int(num_outputs)],
        "activation": activation,
        "init": init,
    }
    return Model(stages, input_shape, int(num_outputs), spec)
