"""Predictive coding: exactness of Z-IL and the fixed prediction assumption, the
standard variant's approach to backprop as inference converges, metrics, options.

- ``variant=z_il`` gives backprop's direction (``jax.grad``) to float64 rounding on
  random MLPs (five activations, both losses, with and without fixed prediction) and
  on a conv stage; inference steps after the ``L-1``-th leave it unchanged.
- ``fixed_prediction=true`` with the standard variant converges to backprop.
- Standard variant, output nudged (``gamma=0.01``): the angle to backprop falls as
  ``T`` grows; at convergence it falls with ``gamma`` (the output error).
- Metrics (free energy, convergence, error norms) against values computed by hand.
- Bad options and models fail at build and in ``validate_config``; seeds vmap; the
  trainer's alignment probe; on digits the default config reaches >= 90% (slow).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bp_alternatives.config import ConfigError, validate_config
from bp_alternatives.data import load_dataset
from bp_alternatives.diagnostics import angle_deg, with_alignment
from bp_alternatives.experiment import check_rule_options
from bp_alternatives.model import Model, Stage, init_params, mlp
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch, UnsupportedModelError, loss_fn, pc
from bp_alternatives.train import fit
from tests.conftest import compose_cfg, to_f64, tree_allclose


def _setup(model: Model, seed: int = 0, n: int = 10):
    params = to_f64(init_params(model, jax.random.PRNGKey(seed)))
    kx, ky = jax.random.split(jax.random.PRNGKey(seed + 100))
    x = jax.random.normal(kx, (n, *model.input_shape), jnp.float64)
    y = jax.random.randint(ky, (n,), 0, model.num_outputs)
    return params, Batch(x, y)


def _bp(model, loss, params, batch):
    return jax.grad(lambda p: loss_fn(model, loss, p, batch))(params)


def _direction(model, loss, params, batch, **kwargs):
    rule = pc(model, loss, **kwargs)
    d, _, m = jax.jit(rule.update)(params, rule.init(None, params), batch, None)
    return d, m


def _max_rel_err(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(u - v)) / jnp.max(jnp.abs(v)))
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


NETS = [  # (hidden activation, loss, read-out activation)
    ("tanh", "cross_entropy", "identity"),
    ("sigmoid", "mse", "sigmoid"),
    ("relu", "cross_entropy", "identity"),
    ("identity", "mse", "identity"),
    ("gelu", "cross_entropy", "identity"),
]


@pytest.mark.parametrize(
    "act,loss_name,out_act,fixed_prediction",
    [(*net, False) for net in NETS] + [(*net, True) for net in NETS[:2]],
)
def test_z_il_equals_backprop(act, loss_name, out_act, fixed_prediction):
    """Song et al. (2020): eta = 1, stage k learns at step L-1-k -> exactly bp."""
    with jax.enable_x64(True):
        model = mlp(
            (6,), 4, hidden=(7, 5, 6), activation=act, output_activation=out_act
        )
        loss = get_loss(loss_name)
        params, batch = _setup(model)
        grads = _bp(model, loss, params, batch)
        d, _ = _direction(
            model,
            loss,
            params,
            batch,
            variant="z_il",
            T=3,
            fixed_prediction=fixed_prediction,
        )
        assert _max_rel_err(d, grads) < 1e-13
        assert tree_allclose(d, grads, rtol=1e-12, atol=1e-15)


def test_z_il_steps_after_the_last_arrival_leave_the_direction_unchanged():
    with jax.enable_x64(True):
        model, loss = mlp((6,), 4, hidden=(7, 5)), get_loss("mse")
        params, batch = _setup(model)
        d, m = _direction(model, loss, params, batch, variant="z_il", T=2)
        d_long, m_long = _direction(model, loss, params, batch, variant="z_il", T=7)
        assert tree_allclose(d_long, d, rtol=1e-13, atol=1e-16)
        assert float(m_long["max_value_change"]) != float(m["max_value_change"])


def tiny_conv_net() -> Model:
    """conv(3x3, tanh, max-pool 2, flatten) -> dense(tanh) -> dense read-out."""
    stages = (
        Stage(nn.Conv(3, (3, 3), name="c0"), "tanh", "max_pool2+flatten", "c0"),
        Stage(nn.Dense(5, name="d0"), "tanh", "none", "hidden"),
        Stage(nn.Dense(4, name="d1"), "identity", "none", "readout"),
    )
    return Model(stages, (4, 4, 2), 4, {"name": "tiny_conv_net"})


def test_z_il_equals_backprop_on_a_conv_stage():
    with jax.enable_x64(True):
        model, loss = tiny_conv_net(), get_loss("cross_entropy")
        params, batch = _setup(model)
        d, _ = _direction(model, loss, params, batch, variant="z_il", T=2)
        assert tree_allclose(d, _bp(model, loss, params, batch), rtol=1e-12)


def test_z_il_update_times_matter():
    """Taking every stage's update at the end of the same L-1 steps is not bp."""
    with jax.enable_x64(True):
        model, loss = mlp((6,), 4, hidden=(7, 5)), get_loss("cross_entropy")
        params, batch = _setup(model)
        grads = _bp(model, loss, params, batch)
        d, _ = _direction(model, loss, params, batch, T=2, inference_lr=1.0)
        assert not tree_allclose(d, grads, rtol=1e-3)


@pytest.mark.parametrize("act,loss_name,out_act", NETS[:2])
def test_fixed_prediction_converges_to_backprop(act, loss_name, out_act):
    """Millidge et al. (2022): with predictions and Jacobians held at the feed-forward
    pass, the errors converge to the bp deltas (geometrically, rate 1 - eta)."""
    with jax.enable_x64(True):
        model = mlp((6,), 4, hidden=(7, 5), activation=act, output_activation=out_act)
        loss = get_loss(loss_name)
        params, batch = _setup(model, seed=1)
        grads = _bp(model, loss, params, batch)
        kw = dict(fixed_prediction=True, inference_lr=0.5, gamma=0.7)
        errs = [
            _max_rel_err(_direction(model, loss, params, batch, T=T, **kw)[0], grads)
            for T in (2, 10, 80)
        ]
        assert errs[0] > 1e-2 and errs[1] < errs[0] and errs[2] < 1e-12, errs


@pytest.mark.parametrize("act,loss_name,out_act", NETS[:2])
def test_standard_angle_to_backprop_falls_as_inference_converges(
    act, loss_name, out_act
):
    """Whittington & Bogacz (2017): PC approximates bp at the inference equilibrium
    when the output error is small. Measured (float64, this net; tanh/CE and
    sigmoid/MSE): gamma=0.01, T = 1, 3, 10, 30, 100, 1000: 49.2, 42.5, 27.8, 11.2,
    1.27, 0.60 deg and 17.4, 14.1, 7.0, 1.17, 0.094, 0.095 deg; converged (T=1000),
    gamma = 1, 0.1, 0.01: 39.4, 5.78, 0.60 deg and 9.84, 0.95, 0.095 deg."""
    with jax.enable_x64(True):
        model = mlp((6,), 4, hidden=(8, 7), activation=act, output_activation=out_act)
        loss = get_loss(loss_name)
        params, batch = _setup(model, n=10)
        grads = _bp(model, loss, params, batch)

        def angle(T, gamma):
            d, m = _direction(model, loss, params, batch, T=T, gamma=gamma)
            return float(angle_deg(d, grads)), float(m["max_value_change"])

        steps = (1, 3, 10, 30, 100, 1000)
        angles, changes = zip(*(angle(T, 0.01) for T in steps))
        assert all(b < a for a, b in zip(angles[:-2], angles[1:-1])), angles
        assert angles[-1] < 1.0 < 10.0 < angles[0], angles
        assert all(b < a for a, b in zip(changes, changes[1:])), changes
        assert changes[-1] < 1e-10  # converged
        converged = [angle(1000, g)[0] for g in (1.0, 0.1, 0.01)]
        assert converged[0] > 5 * converged[1] > 25 * converged[2], converged


def test_metrics_match_hand_computed_values():
    with jax.enable_x64(True):
        model, loss = mlp((6,), 4, hidden=(7, 5)), get_loss("cross_entropy")
        params, batch = _setup(model)
        gamma = 0.5
        d, m = _direction(model, loss, params, batch, T=40, gamma=gamma)
        value = loss_fn(model, loss, params, batch)
        np.testing.assert_allclose(m["loss"], value, rtol=1e-14)
        # every hidden error is 0 at the feed-forward pass: F = gamma * loss
        np.testing.assert_allclose(m["free_energy_start"], gamma * value, rtol=1e-14)
        assert float(m["free_energy_end"]) < float(m["free_energy_start"])
        assert 0 < float(m["max_value_change"]) < 1e-2
        # z_il: the errors used are -gamma * B * dL/d(stage output), per example
        d, m = _direction(model, loss, params, batch, variant="z_il", T=2, gamma=gamma)
        x, y = batch
        h1 = jnp.tanh(x @ params[0]["kernel"] + params[0]["bias"])
        h2 = jnp.tanh(h1 @ params[1]["kernel"] + params[1]["bias"])
        out = h2 @ params[2]["kernel"] + params[2]["bias"]
        t = jax.nn.one_hot(y, 4)
        e3 = gamma * (t - jax.nn.softmax(out))  # -gamma dloss_b/dout
        e2 = e3 @ params[2]["kernel"].T  # errors at the stages' outputs
        e1 = (e2 * (1 - h2**2)) @ params[1]["kernel"].T
        want = [jnp.mean(jnp.linalg.norm(e, axis=-1)) for e in (e1, e2, e3)]
        np.testing.assert_allclose(m["error_norm"], want, rtol=1e-12)


def test_bad_options_and_models_fail_at_build():
    loss = get_loss("cross_entropy")
    model = mlp((4,), 3, hidden=(5, 5))
    with pytest.raises(UnsupportedModelError, match="rule=pc needs at least one"):
        pc(mlp((4,), 3, hidden=()), loss)
    for kwargs, match in [
        ({"variant": "zil"}, "rule.variant"),
        ({"T": 0}, "rule.T"),
        ({"T": 2.5}, "rule.T"),
        ({"gamma": 0.0}, "rule.gamma"),
        ({"inference_lr": -0.1}, "rule.inference_lr"),
        ({"variant": "z_il", "inference_lr": 0.5}, "rule.inference_lr=1.0"),
        ({"variant": "z_il", "T": 1}, r"rule.T >= 2"),
    ]:
        with pytest.raises(ValueError, match=match):
            pc(model, loss, **kwargs)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["rule.variant=zil"], "rule.variant"),
        (["rule.T=0"], "rule.T"),
        (["rule.variant=z_il", "rule.inference_lr=0.5"], "rule.inference_lr=1.0"),
        (["model.hidden=[]"], "needs at least one hidden stage"),
        (["+rule.beta=0.1"], "rule.beta is not an option of pc"),
    ],
)
def test_config_errors_before_anything_runs(overrides, match):
    """validate_config and the rule built on a stand-in model (check_rule_options):
    both run before any data loads."""

    def check(cfg):
        validate_config(cfg)
        check_rule_options(cfg)

    check(compose_cfg(["rule=pc"]))
    with pytest.raises(ConfigError, match=match):
        check(compose_cfg(["rule=pc", *overrides]))


def test_update_vmaps_over_seeds():
    model, loss = mlp((6,), 3, hidden=(8, 5)), get_loss("cross_entropy")
    rule = pc(model, loss, T=5)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.vmap(lambda k: init_params(model, k))(keys)
    states = jax.vmap(rule.init)(keys, params)
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 6))
    batch = Batch(x, jnp.arange(16) % 3)
    d, _, m = jax.jit(jax.vmap(rule.update, in_axes=(0, 0, None, 0)))(
        params, states, batch, keys
    )
    assert m["error_norm"].shape == (3, 3)
    update = jax.jit(rule.update)
    for s in range(3):
        p_s = jax.tree_util.tree_map(lambda a, s=s: a[s], params)
        d_s, _, _ = update(p_s, rule.init(keys[s], p_s), batch, keys[s])
        d_v = jax.tree_util.tree_map(lambda a, s=s: a[s], d)
        assert tree_allclose(d_v, d_s, rtol=1e-5, atol=1e-7)


def test_alignment_probe_sees_z_il_as_backprop_and_standard_as_not():
    model, loss = mlp((6,), 3, hidden=(8, 5)), get_loss("cross_entropy")
    params = init_params(model, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 6))
    batch = Batch(x, jnp.arange(16) % 3)
    angles = {}
    for variant, T in (("z_il", 2), ("standard", 3)):
        rule = with_alignment(pc(model, loss, variant=variant, T=T), model, loss)
        _, _, m = jax.jit(rule.update)(params, (), batch, jax.random.PRNGKey(0))
        angles[variant] = np.asarray(m["alignment_deg"])
    assert angles["z_il"].shape == (3,) and np.all(angles["z_il"] < 0.5)
    assert np.all(angles["standard"][:2] > 1.0), angles


@pytest.mark.slow  # ~20 s alone, more on a loaded box
def test_on_digits_the_default_config_reaches_90_percent():
    """configs/rule/pc.yaml's defaults (T=20, eta=0.1, gamma=1), the default MLP."""
    data = load_dataset("digits")
    model = mlp(
        data.input_shape, data.num_classes, hidden=(256, 256), activation="tanh"
    )
    loss = get_loss("cross_entropy")
    out = fit(
        model,
        loss,
        pc(model, loss, T=20, gamma=1.0),
        optax.adam(1e-3),
        data,
        epochs=10,
        batch_size=64,
        key=jax.random.PRNGKey(0),
        progress=False,
    )
    hist = out["history"]
    assert out["status"] == "ok" and hist[-1]["test_accuracy"] >= 0.9, hist[-1]
    assert hist[-1]["rule/free_energy_end"] < hist[-1]["rule/free_energy_start"]
    assert len(hist[-1]["rule/error_norm"]) == 3
