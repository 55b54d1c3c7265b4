"""Convolutional stages: hand-written conv / pooling backward equals jax.grad, the cnn
and lenet factories build what they say, bad settings fail clearly, a CNN learns."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bp_alternatives.data import Dataset
from bp_alternatives.model import (
    POST_OPS,
    Model,
    Stage,
    avg_pool,
    cnn,
    get_post_op,
    init_params,
    lenet,
    max_pool,
)
from bp_alternatives.model import conv as fast_conv
from bp_alternatives.model.losses import get_loss
from bp_alternatives.model.ops import conv_backward
from bp_alternatives.rules import Batch, UnsupportedModelError, bp, manual_bp
from bp_alternatives.train import fit
from tests.conftest import compose_cfg, to_f64


def _rel_err(a, b) -> float:
    """max over leaves of max|a - b| / max|b|."""
    errs = []
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        scale = float(jnp.max(jnp.abs(y)))
        errs.append(float(jnp.max(jnp.abs(x - y))) / (scale if scale > 0 else 1.0))
    return max(errs)


# --------------------------------------------------------------------------------------
# One conv layer: every geometry the backward handles


CONV_CASES = [
    # (spatial, kernel, stride, padding)
    ((7, 7), 3, 1, "SAME"),
    ((7, 6), 3, 2, "SAME"),
    ((8, 8), 2, 2, "VALID"),
    ((9, 7), 4, 3, "VALID"),  # stride leaves input rows unused
    ((6, 6), 3, 1, [(2, 0), (1, 3)]),  # explicit, asymmetric
    ((5, 5), 5, 1, "VALID"),  # 1x1 output
    ((5, 5), 1, 2, "SAME"),
    ((11,), 3, 2, "SAME"),  # 1-D (signals)
    ((10,), 4, 1, [(5, 1)]),  # padding wider than the kernel
]


# nn.Conv as flax builds it (lax convolutions) and as the architectures build it
# (patches + matmul on CPU): the hand-written backward covers both.
CONV_IMPLS = {
    "lax": {},
    "matmul": {"conv_general_dilated": fast_conv.conv_general_dilated},
}


@pytest.mark.parametrize("impl", sorted(CONV_IMPLS))
@pytest.mark.parametrize("spatial,k,s,padding", CONV_CASES)
def test_conv_backward_equals_jax_grad(spatial, k, s, padding, impl):
    """Against jax.grad of flax's plain conv (``lax.conv_general_dilated``)."""
    with jax.enable_x64(True):
        rng = np.random.RandomState(len(spatial) * 100 + k * 10 + s)
        nd = len(spatial)
        plain = nn.Conv(3, (k,) * nd, strides=s, padding=padding)
        conv = nn.Conv(3, (k,) * nd, strides=s, padding=padding, **CONV_IMPLS[impl])
        x = jnp.asarray(rng.randn(2, *spatial, 2))
        p = to_f64(conv.init(jax.random.PRNGKey(0), x)["params"])
        p = {
            "kernel": jnp.asarray(rng.randn(*p["kernel"].shape)),
            "bias": p["bias"] + 1,
        }
        delta_a = jnp.asarray(rng.randn(*conv.apply({"params": p}, x).shape))

        def objective(p, x):  # <delta_a, conv(x)>: its gradient is the backward
            return jnp.sum(plain.apply({"params": p}, x) * delta_a)

        want_p, want_x = jax.grad(objective, argnums=(0, 1))(p, x)
        got_p, got_x = conv_backward(conv, p, x, delta_a)
        assert _rel_err((got_p, got_x), (want_p, want_x)) < 1e-10
        assert got_p["kernel"].shape == p["kernel"].shape and got_x.shape == x.shape


@pytest.mark.parametrize("impl", sorted(CONV_IMPLS))
def test_conv_backward_detects_a_wrong_transpose(impl):
    """The comparison above is decisive: an unflipped kernel is far off."""
    with jax.enable_x64(True):
        rng = np.random.RandomState(0)
        conv = nn.Conv(2, (3, 3), padding="SAME", **CONV_IMPLS[impl])
        x = jnp.asarray(rng.randn(2, 5, 5, 2))
        p = {"kernel": jnp.asarray(rng.randn(3, 3, 2, 2)), "bias": jnp.zeros(2)}
        d = jnp.asarray(rng.randn(2, 5, 5, 2))
        want = jax.grad(lambda x: jnp.sum(conv.apply({"params": p}, x) * d))(x)
        flipped = {"kernel": p["kernel"][::-1, ::-1], "bias": p["bias"]}
        got = conv_backward(conv, flipped, x, d)[1]  # flips back: the wrong transpose
        assert _rel_err(got, want) > 0.1


@pytest.mark.parametrize("spatial,k,s,padding", CONV_CASES)
def test_matmul_conv_equals_lax_conv_and_its_jax_grad(spatial, k, s, padding):
    """The patches + matmul convolution and its custom VJP, under jax.grad, against
    jax.grad of ``lax.conv_general_dilated`` (float64), through a nonlinearity so
    the cotangent is not a constant."""
    with jax.enable_x64(True):
        rng = np.random.RandomState(len(spatial) * 100 + k * 10 + s + 1)
        nd = len(spatial)
        x = jnp.asarray(rng.randn(3, *spatial, 2))
        W = jnp.asarray(rng.randn(*(k,) * nd, 2, 4))
        strides = (s,) * nd
        pads = fast_conv.explicit_pads(padding, x.shape, W.shape[:nd], strides)
        sp = "HWD"[:nd]
        dn = ("N" + sp + "C", sp + "IO", "N" + sp + "C")

        def plain(x, W):
            return jax.lax.conv_general_dilated(
                x, W, strides, pads, dimension_numbers=dn
            )

        def matmul(x, W):
            return fast_conv.conv(x, W, strides, pads)

        def objective(f):
            return lambda x, W: jnp.sum(jnp.sin(f(x, W)))

        assert _rel_err(matmul(x, W), plain(x, W)) < 1e-12
        want = jax.grad(objective(plain), argnums=(0, 1))(x, W)
        got = jax.grad(objective(matmul), argnums=(0, 1))(x, W)
        assert _rel_err(got, want) < 1e-12


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> = <x, col2im(c)>: a wrong tap offset or stride breaks it."""
    with jax.enable_x64(True):
        rng = np.random.RandomState(3)
        x = jnp.asarray(rng.randn(2, 9, 7, 3))
        K, strides, pads = (3, 2), (2, 3), ((1, 2), (0, 1))
        P = fast_conv.im2col(x, K, strides, pads)
        c = jnp.asarray(rng.randn(*P.shape))
        lhs = jnp.sum(P * c)
        rhs = jnp.sum(x * fast_conv.col2im(c, x.shape, K, strides, pads))
        assert abs(float(lhs - rhs)) < 1e-10 * float(jnp.abs(lhs))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_dilation": 2},
        {"input_dilation": 2},
        {"feature_group_count": 2},
    ],
)
def test_matmul_conv_hands_other_convolutions_to_lax(kwargs):
    """Dilations and grouped convolutions are not on the matmul path; they still
    compute flax's convolution."""
    rng = np.random.RandomState(4)
    x = jnp.asarray(rng.randn(2, 8, 8, 4), jnp.float32)
    kwargs = {"padding": [(1, 1), (1, 1)], **kwargs}
    fast = nn.Conv(
        4, (3, 3), conv_general_dilated=fast_conv.conv_general_dilated, **kwargs
    )
    plain = nn.Conv(4, (3, 3), **kwargs)
    p = plain.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(fast.apply(p, x), plain.apply(p, x), rtol=1e-5)
    nd = 2
    assert not fast_conv.matmul_path(
        x.ndim,
        kwargs["padding"],
        (kwargs.get("input_dilation", 1),) * nd,
        (kwargs.get("kernel_dilation", 1),) * nd,
        nn.linear._conv_dimension_numbers(x.shape),
        kwargs.get("feature_group_count", 1),
    )


def test_architectures_build_matmul_convs():
    model = lenet((32, 32, 1), 10)
    convs = [s.linear for s in model.stages if isinstance(s.linear, nn.Conv)]
    assert len(convs) == 3
    assert all(c.conv_general_dilated is fast_conv.conv_general_dilated for c in convs)
    model = cnn((40, 1), 10, channels=(4,), hidden=())
    assert model.stages[0].linear.conv_general_dilated is fast_conv.conv_general_dilated


# --------------------------------------------------------------------------------------
# Pooling post ops


@pytest.mark.parametrize("name", ["max_pool2", "avg_pool2", "max_pool3", "avg_pool3"])
@pytest.mark.parametrize("shape", [(2, 6, 6, 3), (2, 7, 5, 2), (3, 9, 1)])
def test_pool_backward_equals_vjp(name, shape):
    with jax.enable_x64(True):
        rng = np.random.RandomState(1)
        h = jnp.asarray(rng.randn(*shape))
        if shape[1] < 3 and name.endswith("3"):
            pytest.skip("window larger than the map")
        op = get_post_op(name)
        out, vjp = jax.vjp(op.fn, h)
        d = jnp.asarray(rng.randn(*out.shape))
        assert _rel_err(op.backward(h, d), vjp(d)[0]) < 1e-12


def test_max_pool_ties_split_like_autodiff():
    """ReLU maps give windows of equal zeros: the gradient is shared equally, as
    jax.grad of a max reduction shares it."""
    with jax.enable_x64(True):
        h = jnp.asarray(
            [[1.0, 1.0, 0.0, 0.0], [0.5, 1.0, 0.0, 0.0], [2.0, 0, 3, 3], [0, 0, 3, 3]]
        )[None, :, :, None]
        op = max_pool(2)
        d = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
        got = op.backward(h, d)[0, :, :, 0]
        want = jax.vjp(op.fn, h)[1](d)[0][0, :, :, 0]
        np.testing.assert_allclose(got, want, atol=1e-15)
        np.testing.assert_allclose(got[0, :2], [1 / 3, 1 / 3])  # three tied maxima
        np.testing.assert_allclose(got[2:, 2:], [[1, 1], [1, 1]])  # four tied


def test_pool_crops_odd_maps_like_floor_mode():
    h = jnp.arange(1 * 5 * 5 * 1, dtype=jnp.float32).reshape(1, 5, 5, 1)
    assert max_pool(2).fn(h).shape == (1, 2, 2, 1)
    np.testing.assert_allclose(max_pool(2).fn(h)[0, :, :, 0], [[6, 8], [16, 18]])
    np.testing.assert_allclose(avg_pool(2).fn(h)[0, 0, 0, 0], (0 + 1 + 5 + 6) / 4)
    d = jnp.ones((1, 2, 2, 1))
    back = max_pool(2).backward(h, d)[0, :, :, 0]
    assert float(back[4].sum() + back[:, 4].sum()) == 0.0  # cropped row / column


def test_post_op_names():
    assert {"none", "flatten", "max_pool2", "avg_pool2"} <= set(POST_OPS)
    h = jnp.ones((2, 4, 4, 3))
    assert get_post_op("max_pool2+flatten").fn(h).shape == (2, 12)
    assert get_post_op("avg_pool4").fn(h).shape == (2, 1, 1, 3)
    with pytest.raises(ValueError, match=r"unknown post op 'maxpool2'.*max_pool<k>"):
        get_post_op("max_pool2+maxpool2")
    bad = Stage(nn.Dense(2), post="median_pool2", name="s0")
    with pytest.raises(ValueError, match=r"stage s0: unknown post op.*'flatten'"):
        bad.post_op  # noqa: B018


# --------------------------------------------------------------------------------------
# Whole CNNs: manual_bp == bp (jax.grad) in float64


SLOW = pytest.mark.slow
CNN_CASES = [  # (cnn kwargs, loss); the first two run by default, the rest in CI
    (dict(channels=[3, 4], kernel_size=3, padding="SAME", pool="max"), "cross_entropy"),
    (
        dict(channels=[3, 4], kernel_size=[3, 2], stride=[2, 1], pool=["avg", "none"]),
        "mse",
    ),
    pytest.param(
        dict(channels=[2], kernel_size=4, stride=2, pool="none", hidden=[]),
        "mse",
        marks=SLOW,
    ),
    pytest.param(
        dict(channels=[2, 3, 2], kernel_size=2, pool=["max", "none", "avg"]),
        "cross_entropy",
        marks=SLOW,
    ),
    pytest.param(
        dict(channels=[3], kernel_size=3, pool_size=3, activation="tanh"),
        "cross_entropy",
        marks=SLOW,
    ),
    pytest.param(
        dict(
            channels=[3, 3],
            activation="sigmoid",
            padding="VALID",
            pool=["max", "none"],
            bias=False,
        ),
        "mse",
        marks=SLOW,
    ),
]


def _cnn_case(kwargs, input_shape=(9, 9, 2), seed=0, loss="cross_entropy"):
    kwargs = {"hidden": [6], "init": "normal", "init_std": 0.5, **kwargs}
    model = cnn(input_shape, 4, **kwargs)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = to_f64(init_params(model, k1))
    x = jax.random.normal(k2, (3, *input_shape), jnp.float64)
    y = jax.random.randint(k3, (3,), 0, 4)
    return model, params, Batch(x, y), get_loss(loss)


@pytest.mark.parametrize("kwargs,loss", CNN_CASES)
def test_manual_bp_equals_jax_grad_on_cnns(kwargs, loss):
    with jax.enable_x64(True):
        model, params, batch, loss_ = _cnn_case(kwargs, loss=loss)
        dirs = []
        for factory in (manual_bp, bp):
            rule = factory(model, loss_)
            update = jax.jit(rule.update)
            d, _, m = update(params, rule.init(None, params), batch, None)
            dirs.append((d, m["loss"]))
        (d_manual, l_manual), (d_bp, l_bp) = dirs
        assert _rel_err(d_manual, d_bp) < 1e-10
        assert abs(float(l_manual - l_bp)) < 1e-12
        assert jax.tree_util.tree_structure(d_manual) == jax.tree_util.tree_structure(
            params
        )


@pytest.mark.slow
def test_manual_bp_equals_jax_grad_on_1d_cnn_and_lenet():
    with jax.enable_x64(True):
        cases = [
            _cnn_case({"channels": [3, 2], "kernel_size": 5}, input_shape=(20, 1)),
        ]
        model = lenet((32, 32, 1), 10)
        params = to_f64(init_params(model, jax.random.PRNGKey(1)))
        x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 1), jnp.float64)
        cases.append((model, params, Batch(x, jnp.array([3, 7])), get_loss("mse")))
        for model, params, batch, loss in cases:
            d = []
            for factory in (manual_bp, bp):
                rule = factory(model, loss)
                update = jax.jit(rule.update)
                d.append(update(params, rule.init(None, params), batch, None)[0])
            assert _rel_err(d[0], d[1]) < 1e-10


# --------------------------------------------------------------------------------------
# Factories and their errors


def test_lenet_is_biotorchs_lenet5():
    model = lenet((32, 32, 1), 10)
    params = jax.eval_shape(lambda k: init_params(model, k), jax.random.PRNGKey(0))
    shapes = [jax.tree_util.tree_map(lambda a: a.shape, p) for p in params]
    assert [s["kernel"] for s in shapes] == [
        (5, 5, 1, 6),
        (5, 5, 6, 16),
        (5, 5, 16, 120),
        (120, 84),
        (84, 10),
    ]
    assert sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)) == 61706
    assert [s.post for s in model.stages] == [
        "max_pool2",
        "max_pool2",
        "flatten",
        "none",
        "none",
    ]
    assert [s.activation for s in model.stages] == ["relu"] * 4 + ["identity"]


def test_cnn_shapes_and_spec():
    model = cnn((28, 28, 1), 10, channels=[4, 8], hidden=[16])
    params = jax.eval_shape(lambda k: init_params(model, k), jax.random.PRNGKey(0))
    assert model.spec["conv_features"] == 7 * 7 * 8
    assert params[2]["kernel"].shape == (7 * 7 * 8, 16)
    assert [s.post for s in model.stages] == ["max_pool2", "max_pool2+flatten"] + [
        "none"
    ] * 2


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: cnn((784,), 10), r"needs image inputs.*data.flatten=false"),
        (lambda: cnn((8, 8, 1), 10, pool="median"), r"valid: \['avg', 'max', 'none'\]"),
        (lambda: cnn((8, 8, 1), 10, kernel_size=[3]), r"lists 1 values for 2 conv"),
        (lambda: cnn((8, 8, 1), 10, activation="swishy"), r"swishy"),
        (lambda: cnn((4, 4, 1), 10, channels=[2, 2, 2]), r"cannot pool"),
        (lambda: cnn((28, 28, 1), 10, input_size=32), r"data.resize=32"),
        (lambda: lenet((28, 28, 1), 10), r"32x32xC.*data.resize=32"),
        (lambda: lenet((1024,), 10), r"data.flatten=false"),
    ],
)
def test_bad_cnn_settings_fail_clearly(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "conv,match",
    [
        (nn.Conv(2, (3, 3), padding="CIRCULAR"), "not 'CIRCULAR'"),
        (nn.Conv(2, (3, 3), kernel_dilation=2), "kernel_dilation=2"),
        (nn.Conv(2, (3, 3), input_dilation=(1, 2)), r"input_dilation=\(1, 2\)"),
        (nn.Conv(2, (3, 3), feature_group_count=2), "plain convolutions"),
    ],
)
def test_manual_bp_refuses_convs_it_has_no_backward_for(conv, match):
    model = Model((Stage(conv, "relu", "flatten", "c"),), (6, 6, 2), 72, {})
    with pytest.raises(UnsupportedModelError, match=match):
        manual_bp(model, get_loss("mse"))  # at build time, before any step


def test_model_configs_give_cnns_images():
    """model=cnn / lenet make the data configs keep images (and resize for lenet)."""
    from omegaconf import OmegaConf

    def data_of(*overrides):
        return OmegaConf.to_container(compose_cfg(list(overrides)).data, resolve=True)

    assert data_of("data=fashion_mnist")["flatten"] is True
    assert data_of("data=fashion_mnist", "model=cnn")["flatten"] is False
    lenet_data = data_of("data=mnist", "model=lenet")
    assert lenet_data["flatten"] is False and lenet_data["resize"] == 32
    assert data_of("data=mnist1d", "model=cnn")["flatten"] is False
    assert data_of("data=cifar10", "model=mlp")["flatten"] is True


# --------------------------------------------------------------------------------------
# A tiny CNN learns


def bars(n: int, seed: int) -> Dataset:
    """8x8 images with one noisy bar: horizontal (0), vertical (1) or diagonal (2)."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, size=n).astype(np.int32)
    x = rng.normal(0, 0.3, size=(n, 8, 8, 1)).astype(np.float32)
    for i in range(n):
        r, c = rng.randint(0, 5, size=2)
        for t in range(4):
            rr, cc = [(r, c + t), (r + t, c), (r + t, c + t)][y[i]]
            x[i, rr, cc, 0] += 1.0
    half = n // 2
    return Dataset(x[:half], y[:half], x[half:], y[half:], 3, (8, 8, 1), "bars")


@pytest.mark.slow
@pytest.mark.parametrize("factory", [bp, manual_bp], ids=["bp", "manual_bp"])
def test_tiny_cnn_learns_bars(factory):
    data = bars(1200, seed=0)
    model = cnn(data.input_shape, 3, channels=[6], kernel_size=3, hidden=[])
    loss = get_loss("cross_entropy")
    out = fit(
        model,
        loss,
        factory(model, loss),
        optax.adam(1e-2),
        data,
        epochs=15,
        batch_size=50,
        key=jax.random.PRNGKey(0),
    )
    assert out["status"] == "ok"
    assert out["final"]["test_accuracy"] > 0.9, out["final"]  # chance: 1/3
