"""The model interface: a stack of stages.

A stage is ``out = post(f(linear(params, x)))``: a linear part that holds the weights
(a Flax ``Dense``; convolutions follow the same pattern), a parameter-free
nonlinearity ``f`` and an optional parameter-free ``post`` op. The last stage is the
read-out. Params are a tuple with one ``{"kernel", "bias"}`` dict per stage, so every
rule can address "the params of stage l" as ``params[l]``.

Shapes are batch-first: ``x`` is ``[B, ...input_shape]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.activations import Activation, get_activation
from bp_alternatives.initializers import get_initializer

Params = tuple[dict[str, jax.Array], ...]


class PostOp(NamedTuple):
    """A parameter-free op after the activation, with its hand-written backward."""

    fn: Callable[[jax.Array], jax.Array]
    # backward(h, d_out) -> d_h  (h is the op's input, d_out the gradient of its output)
    backward: Callable[[jax.Array, jax.Array], jax.Array]


def _flatten(h):
    return h.reshape(h.shape[0], -1)


def _windows(h: jax.Array, k: int) -> jax.Array:
    """``[B, *S, C] -> [B, S_1 // k, k, ..., S_n // k, k, C]``: non-overlapping
    ``k``-wide windows along every spatial axis; a remainder that does not fill a
    window is dropped (PyTorch's ``MaxPool2d`` floor mode, flax ``padding="VALID"``)."""
    spatial = h.shape[1:-1]
    if any(s < k for s in spatial):
        raise ValueError(f"cannot pool {k}-wide windows from a feature map {spatial}")
    h = h[(slice(None), *(slice(0, (s // k) * k) for s in spatial), slice(None))]
    shape = [h.shape[0]]
    for s in spatial:
        shape += [s // k, k]
    return h.reshape(*shape, h.shape[-1])


def _window_axes(h: jax.Array) -> tuple[int, ...]:
    return tuple(2 + 2 * i for i in range(h.ndim - 2))  # the k-axes of _windows(h)


def _unwindows(w: jax.Array, h: jax.Array, k: int) -> jax.Array:
    """Inverse of ``_windows``: back to ``h``'s shape, zeros where it cropped."""
    spatial = h.shape[1:-1]
    w = w.reshape(h.shape[0], *((s // k) * k for s in spatial), h.shape[-1])
    pad = [(0, 0), *((0, s - (s // k) * k) for s in spatial), (0, 0)]
    return jnp.pad(w, pad)


def max_pool(k: int) -> PostOp:
    """Max over non-overlapping ``k``-wide windows (stride ``k``).

    Backward: the window's gradient goes to its maximum; where several entries tie
    for the maximum it is split equally among them, which is what ``jax.grad`` of
    this forward (a ``max`` reduction) gives, so the two agree exactly.
    """

    def fn(h):
        return jnp.max(_windows(h, k), axis=_window_axes(h))

    def backward(h, d):
        w = _windows(h, k)
        axes = _window_axes(h)
        is_max = (w == jnp.max(w, axis=axes, keepdims=True)).astype(d.dtype)
        share = is_max / jnp.sum(is_max, axis=axes, keepdims=True)
        return _unwindows(share * jnp.expand_dims(d, axes), h, k)

    return PostOp(fn, backward)


def avg_pool(k: int) -> PostOp:
    """Mean over non-overlapping ``k``-wide windows (stride ``k``); backward spreads
    each window's gradient evenly over its ``k^n`` entries."""

    def fn(h):
        return jnp.mean(_windows(h, k), axis=_window_axes(h))

    def backward(h, d):
        axes = _window_axes(h)
        w = jnp.broadcast_to(jnp.expand_dims(d, axes), _windows(h, k).shape)
        return _unwindows(w / k ** len(axes), h, k)

    return PostOp(fn, backward)


def _compose(first: PostOp, second: PostOp) -> PostOp:
    """``second(first(h))``; backward recomputes ``first(h)`` for ``second``'s input."""
    return PostOp(
        lambda h: second.fn(first.fn(h)),
        lambda h, d: first.backward(h, second.backward(first.fn(h), d)),
    )


POST_OPS: dict[str, PostOp] = {
    "none": PostOp(lambda h: h, lambda h, d: d),
    "flatten": PostOp(_flatten, lambda h, d: d.reshape(h.shape)),
    "max_pool2": max_pool(2),
    "avg_pool2": avg_pool(2),
}
_POOL = re.compile(r"(max|avg)_pool([1-9][0-9]*)")


def get_post_op(name: str) -> PostOp:
    """A post op by name: a ``POST_OPS`` entry, ``max_pool<k>`` / ``avg_pool<k>``, or
    several joined by ``+`` and applied left to right (``max_pool2+flatten``)."""
    ops = []
    for part in name.split("+"):
        if part in POST_OPS:
            ops.append(POST_OPS[part])
        elif m := _POOL.fullmatch(part):
            ops.append((max_pool if m[1] == "max" else avg_pool)(int(m[2])))
        else:
            raise ValueError(
                f"unknown post op {part!r}; valid: {sorted(POST_OPS)}, "
                "max_pool<k>, avg_pool<k>, and several joined by '+' "
                "(e.g. 'max_pool2+flatten')"
            )
    op = ops[0]
    for nxt in ops[1:]:
        op = _compose(op, nxt)
    return op


class Stage(NamedTuple):
    """One stage: ``post(activation(linear(x)))``."""

    linear: nn.Module
    activation: str = "identity"
    post: str = "none"
    name: str = "stage"

    @property
    def act(self) -> Activation:
        return get_activation(self.activation)

    @property
    def post_op(self) -> PostOp:
        try:
            return get_post_op(self.post)
        except ValueError as err:
            raise ValueError(f"stage {self.name}: {err}") from None


class StageCache(NamedTuple):
    """What the forward pass of one stage stores for the backward pass."""

    x: jax.Array  # stage input                     [B, ...]
    a: jax.Array  # pre-activation a = linear(x)    [B, ...]
    h: jax.Array  # activity h = f(a)               [B, ...]
    out: jax.Array  # post(h), the next stage's input


class Model(NamedTuple):
    """A stack of stages plus the metadata that results.json reports."""

    stages: tuple[Stage, ...]
    input_shape: tuple[int, ...]
    num_outputs: int
    spec: dict[str, Any]

    @property
    def num_stages(self) -> int:
        return len(self.stages)


def init_params(model: Model, key: jax.Array) -> Params:
    """Initialise every stage's linear part (float32)."""
    params = []
    x = jnp.zeros((1, *model.input_shape), jnp.float32)
    for stage, k in zip(model.stages, jax.random.split(key, model.num_stages)):
        p = stage.linear.init(k, x)["params"]
        params.append(dict(p))
        x = apply_stage(stage, p, x).out
    return tuple(params)


def apply_linear(stage: Stage, p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """The stage's linear part ``a = linear(params, x)``."""
    return stage.linear.apply({"params": p}, x)


def apply_stage(stage: Stage, p: dict[str, jax.Array], x: jax.Array) -> StageCache:
    """Forward one stage and keep what its backward needs."""
    a = apply_linear(stage, p, x)
    h = stage.act.fn(a)
    return StageCache(x=x, a=a, h=h, out=stage.post_op.fn(h))


def stage_fn(stage: Stage) -> Callable[[dict[str, jax.Array], jax.Array], jax.Array]:
    """``(params, x) -> out`` for one stage (what per-stage ``jax.vjp`` takes)."""

    def f(p, x):
        return apply_stage(stage, p, x).out

    return f


def forward(
    model: Model, params: Params, x: jax.Array, *, remat: bool = False
) -> tuple[jax.Array, tuple[StageCache, ...]]:
    """Run the stack; return the read-out output and every stage's cache.

    With ``remat=True`` each stage is wrapped in ``jax.checkpoint``: its activations are
    recomputed in the backward pass instead of stored (gradient checkpointing).
    """
    caches = []
    for stage, p in zip(model.stages, params):
        if remat:
            cache = jax.checkpoint(lambda p, x, s=stage: apply_stage(s, p, x))(p, x)
        else:
            cache = apply_stage(stage, p, x)
        caches.append(cache)
        x = cache.out
    return x, tuple(caches)


def output(model: Model, params: Params, x: jax.Array) -> jax.Array:
    """The network's output (read-out activities), no caches."""
    return forward(model, params, x)[0]


def mlp(
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] = (256, 256),
    activation: str = "tanh",
    output_activation: str = "identity",
    init: str = "xavier",
    init_std: float = 0.01,
    bias: bool = True,
) -> Model:
    """A multilayer perceptron: ``len(hidden)`` hidden stages and one read-out stage.

    Inputs must be flat (``input_shape == (D,)``); the data loaders flatten images.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 1:
        raise ValueError(
            f"model=mlp needs flat inputs, got input_shape={input_shape}; "
            "flatten the data (data.flatten=true) or use a convolutional model"
        )
    get_activation(activation)
    get_activation(output_activation)
    kernel_init = get_initializer(init, init_std)
    widths = [int(w) for w in hidden]
    if any(w <= 0 for w in widths) or num_outputs <= 0:
        raise ValueError(f"model.hidden widths must be positive, got {list(hidden)}")
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
            )
        )
    spec = {
        "name": "mlp",
        "widths": [input_shape[0], *widths, num_outputs],
        "activation": activation,
        "output_activation": output_activation,
        "init": init,
        "bias": bias,
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
            x = apply_stage(stage, p, x).out
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
) -> Model:
    """A convolutional net: conv stages, then dense stages, then a read-out stage.

    Conv stage ``i``: ``nn.Conv(channels[i], kernel_size, stride, padding)`` ->
    ``activation`` -> pooling (``pool``: ``max`` | ``avg`` | ``none``, over
    non-overlapping ``pool_size`` windows). The last conv stage's post op also
    flattens, so the dense stages (``hidden``) see vectors. ``kernel_size``,
    ``stride``, ``padding`` and ``pool`` take one value for all conv stages or a list
    with one per stage. Works on images ``[H, W, C]`` (2-D convolutions) and on
    signals ``[L, C]`` (1-D, e.g. MNIST-1D).

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
    kernels = _per_stage(kernel_size, n_conv, "kernel_size")
    strides = _per_stage(stride, n_conv, "stride")
    paddings = _per_stage(padding, n_conv, "padding")
    pools = _per_stage(pool, n_conv, "pool")
    widths = [int(w) for w in hidden]
    if any(int(c) <= 0 for c in channels) or any(w <= 0 for w in widths):
        raise ValueError(
            f"model.channels and model.hidden must be positive, got {list(channels)}, "
            f"{list(hidden)}"
        )
    stages = []
    for i in range(n_conv):
        if pools[i] not in ("max", "avg", "none"):
            raise ValueError(
                f"unknown model.pool {pools[i]!r}; valid: ['avg', 'max', 'none']"
            )
        post = [] if pools[i] == "none" else [f"{pools[i]}_pool{int(pool_size)}"]
        if i == n_conv - 1:
            post.append("flatten")
        stages.append(
            Stage(
                linear=nn.Conv(
                    int(channels[i]),
                    kernel_size=(int(kernels[i]),) * nd,
                    strides=int(strides[i]),
                    padding=str(paddings[i]).upper(),
                    use_bias=bias,
                    kernel_init=kernel_init,
                    name=f"conv_{i}",
                ),
                activation=activation,
                post="+".join(post) or "none",
                name=f"conv_{i}",
            )
        )
    for i, w in enumerate([*widths, num_outputs]):
        is_readout = i == len(widths)
        stages.append(
            Stage(
                linear=nn.Dense(
                    w, use_bias=bias, kernel_init=kernel_init, name=f"dense_{i}"
                ),
                activation=output_activation if is_readout else activation,
                name="readout" if is_readout else f"hidden_{i}",
            )
        )
    features = _conv_output(stages[:n_conv], input_shape)  # fails early if too small
    spec = {
        "name": "cnn",
        "input_shape": list(input_shape),
        "channels": [int(c) for c in channels],
        "kernel_size": [int(k) for k in kernels],
        "stride": [int(s) for s in strides],
        "padding": [str(p).upper() for p in paddings],
        "pool": pools,
        "pool_size": int(pool_size),
        "conv_features": int(features[0]),
        "widths": [int(features[0]), *widths, int(num_outputs)],
        "activation": activation,
        "output_activation": output_activation,
        "init": init,
        "bias": bias,
    }
    return Model(tuple(stages), input_shape, int(num_outputs), spec)


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
            features, (5, 5), padding="VALID", kernel_init=kernel_init, name=name
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
