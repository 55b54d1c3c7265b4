"""Equilibrium propagation: the direction against an independent implicit gradient.

The reference is written here from the paper's formulas, not from the rule's code: the
energy ``E = sum_l 1/2 ||s_l||^2 - sum_l (rho(s_{l-1}) W_l + b_l) . rho(s_l)`` with
explicit kernels, its fixed point polished by Newton's method, and the gradient of the
loss at that fixed point by the implicit function theorem,
``dL/dtheta = -d/dtheta [dE/ds(theta, s*) . lambda]`` with ``H lambda = dC/ds``,
``H = d^2E/ds^2`` (one dense solve over the flattened batch of states).

Relative error ``|d_EP - g| / |g|`` on the net of ``_net`` (4-5-4-3, tanh hidden,
identity read-out, 4 examples, float64, ``LONG`` relaxations), as returned by
``_errors`` for each column (measured 2026-11-30 with this file):

    beta     one-sided (mse)   symmetric (mse)   one-sided (ce)   symmetric (ce)
    2e-3     2.208e-03         4.725e-06         6.677e-04        8.389e-07
    1e-3     1.105e-03         1.181e-06         3.340e-04        2.097e-07
    5e-4     5.528e-04         2.953e-07         1.670e-04        5.243e-08
    slope    1.00              2.00              1.00             2.00

One-sided falls ~ beta (first order), symmetric ~ beta^2 (second order), as Scellier &
Bengio (2017) and Laborieux et al. (2021) say; the slopes are asserted.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from bp_alternatives.config import ConfigError, validate_config
from bp_alternatives.diagnostics import angle_deg, with_alignment
from bp_alternatives.model import cnn, init_params, mlp, output
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch, UnsupportedModelError, ep
from tests.conftest import compose_cfg, to_f64

BETAS = (2e-3, 1e-3, 5e-4)
LONG = dict(T1=800, T2=800, epsilon=0.5)  # relaxed to float64 rounding


def _net(loss_name: str = "mse", activation: str = "tanh"):
    model = mlp((4,), 3, hidden=(5, 4), activation=activation)
    params = to_f64(init_params(model, jax.random.PRNGKey(3)))
    x = jax.random.normal(jax.random.PRNGKey(4), (4, 4), jnp.float64)
    y = jnp.array([0, 2, 1, 2])
    return model, params, Batch(x, y), get_loss(loss_name)


def _energy_sum(params, s, x, rho):
    """The paper's energy summed over the batch, from explicit (W_l, b_l)."""
    r = [x, *(rho(s_l) for s_l in s[:-1]), s[-1]]  # identity read-out
    e = sum(0.5 * jnp.sum(s_l**2) for s_l in s)
    for l, p in enumerate(params):
        e -= jnp.sum((r[l] @ p["kernel"] + p["bias"]) * r[l + 1])
    return e


def _fixed_point(params, x, rho=jnp.tanh):
    """Gradient steps on the reference energy from zeros, then Newton's method."""
    s = [jnp.zeros((x.shape[0], p["kernel"].shape[1]), x.dtype) for p in params]
    flat, unravel = ravel_pytree(s)

    def grad_s(v):
        return ravel_pytree(jax.grad(_energy_sum, 1)(params, unravel(v), x, rho))[0]

    flat = jax.lax.fori_loop(0, 500, lambda _, v: v - 0.3 * grad_s(v), flat)
    for _ in range(5):
        flat = flat - jnp.linalg.solve(jax.jacfwd(grad_s)(flat), grad_s(flat))
    assert float(jnp.max(jnp.abs(grad_s(flat)))) < 1e-13  # a stationary point
    return unravel(flat)


def _implicit_gradient(params, batch, loss, s_star, rho=jnp.tanh):
    """``dL/dtheta`` at the fixed point ``s_star`` by the implicit function theorem."""
    flat, unravel = ravel_pytree(s_star)

    def grad_s(p, v):
        return ravel_pytree(jax.grad(_energy_sum, 1)(p, unravel(v), batch.x, rho))[0]

    H = jax.jacfwd(lambda v: grad_s(params, v))(flat)
    dC = ravel_pytree(jax.grad(lambda v: loss.value(unravel(v)[-1], batch.y))(flat))
    lam = jnp.linalg.solve(H, dC[0])
    return jax.grad(lambda p: -jnp.dot(grad_s(p, flat), lam))(params)


def _rel_err(d, g) -> float:
    fd, fg = ravel_pytree(d)[0], ravel_pytree(g)[0]
    return float(jnp.linalg.norm(fd - fg) / jnp.linalg.norm(fg))


def _errors(loss_name: str, symmetric: bool) -> list[float]:
    """Relative error of the EP direction for each of ``BETAS`` (float64)."""
    model, params, batch, loss = _net(loss_name)
    s_star = _fixed_point(params, batch.x)
    g = _implicit_gradient(params, batch, loss, s_star)
    errs = []
    for beta in BETAS:
        rule = ep(model, loss, beta=beta, symmetric=symmetric, **LONG)
        d, _, m = jax.jit(rule.update)(params, rule.init(None, params), batch, None)
        assert float(jnp.max(m["delta_free"])) < 1e-13  # relaxed
        assert float(jnp.max(m["delta_nudged"])) < 1e-13
        errs.append(_rel_err(d, g))
    return errs


@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
@pytest.mark.parametrize("symmetric,order", [(False, 1.0), (True, 2.0)])
def test_direction_tends_to_the_implicit_gradient(loss_name, symmetric, order):
    with jax.enable_x64(True):
        errs = _errors(loss_name, symmetric)
    slope = np.polyfit(np.log(BETAS), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.15, (errs, slope)
    assert errs[-1] < (2e-3 if order == 1 else 1e-5), errs


def test_prediction_is_the_free_fixed_point_not_the_feedforward_pass():
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = ep(model, loss, **LONG)
        s_star = _fixed_point(params, batch.x)
        pred = rule.predict(params, rule.init(None, params), batch.x)
        assert list(pred.headline) == [""] and not pred.others  # the headline
        np.testing.assert_allclose(pred.headline[""], s_star[-1], rtol=0, atol=1e-12)
        assert pred.loss_output is None  # the loss is taken on the output
        np.testing.assert_allclose(pred.output, s_star[-1], atol=1e-12)
        ff = output(model, params, batch.x)
        assert float(jnp.max(jnp.abs(ff - s_star[-1]))) > 1e-2
        np.testing.assert_allclose(
            loss.value(pred.output, batch.y), loss.value(s_star[-1], batch.y)
        )


def test_alignment_is_measured_against_the_gradient_at_the_fixed_point():
    """with_alignment differentiates the loss on ``Prediction.output`` (the free fixed
    point), not the feed-forward loss: ~0 degrees for a small symmetric beta."""
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = ep(model, loss, beta=1e-3, **LONG)
        d, _, m = with_alignment(rule, model, loss).update(params, (), batch, None)
        assert float(jnp.max(m["alignment_deg"])) < 0.05, m["alignment_deg"]
        g_ff = jax.grad(lambda p: loss.value(output(model, p, batch.x), batch.y))(
            params
        )
        assert float(angle_deg(d, g_ff)) > 5.0


def test_random_sign_averages_to_the_symmetric_direction():
    """``(d(+beta) + d(-beta)) / 2`` is the symmetric estimate, exactly."""
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        kw = dict(T1=60, T2=10, beta=0.3)
        rule = ep(model, loss, symmetric=False, random_sign=True, **kw)
        update = jax.jit(rule.update)
        found = {}
        for k in range(20):
            d, _, m = update(params, (), batch, jax.random.PRNGKey(k))
            sign = float(jnp.sign(m["energy_nudged"] - m["energy_free"]))
            found.setdefault(sign, d)
        assert set(found) == {-1.0, 1.0}
        sym = ep(model, loss, symmetric=True, **kw)
        d_sym, _, _ = sym.update(params, (), batch, None)
        mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, found[1.0], found[-1.0])
        assert _rel_err(mean, d_sym) < 1e-12
        assert _rel_err(found[1.0], d_sym) > 1e-3  # each sign alone differs


def test_convergence_metrics_show_an_unrelaxed_phase():
    model = mlp((4,), 3, hidden=(5, 4), activation="tanh")
    params = init_params(model, jax.random.PRNGKey(3))
    x = jax.random.normal(jax.random.PRNGKey(4), (4, 4))
    batch, loss = Batch(x, jnp.array([0, 2, 1, 2])), get_loss("mse")
    short = ep(model, loss, T1=3, T2=1)
    long = ep(model, loss, T1=400, T2=400)
    _, _, m_short = short.update(params, (), batch, None)
    _, _, m_long = long.update(params, (), batch, None)
    assert m_short["delta_free"].shape == (3,)  # per stage
    assert float(jnp.min(m_short["delta_free"])) > 1e-3
    assert float(jnp.max(m_long["delta_free"])) < 1e-5
    assert float(jnp.max(m_long["delta_nudged"])) < 1e-5
    # relaxation lowers the energy from E(0) = 0
    assert float(m_long["energy_free"]) < float(m_short["energy_free"]) < 0


def test_unsupported_models_fail_at_build_time_naming_the_part():
    loss = get_loss("cross_entropy")
    conv = cnn((8, 8, 1), 10, channels=(4,), hidden=(8,), activation="tanh")
    with pytest.raises(UnsupportedModelError, match="rule=ep: stage 'conv_0'.*Conv"):
        ep(conv, loss)
    with pytest.raises(
        UnsupportedModelError,
        match="stage 'hidden_0' has activation 'relu'.*model.activation",
    ):
        ep(mlp((4,), 3, hidden=(5, 4), activation="relu"), loss)
    with pytest.raises(UnsupportedModelError, match="model.output_activation"):
        ep(mlp((4,), 3, hidden=(5,), output_activation="gelu"), loss)
    ep(mlp((4,), 3, hidden=(5,), activation="hard_sigmoid"), loss)  # supported


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"beta": 0.0}, "rule.beta must be > 0"),
        ({"epsilon": -0.1}, "rule.epsilon must be > 0"),
        ({"T1": 0}, "rule.T1 must be an integer >= 1, got 0"),
        ({"T2": 2.5}, "rule.T2 must be an integer >= 1, got 2.5"),
        ({"free_init": "random"}, "unknown rule.free_init 'random'"),
        ({"symmetric": True, "random_sign": True}, "set rule.random_sign=false"),
    ],
)
def test_bad_options_name_the_field(kwargs, message):
    model, loss = mlp((4,), 3, hidden=(5,)), get_loss("mse")
    with pytest.raises(ValueError, match=re.escape(message)):
        ep(model, loss, **kwargs)


def test_config_rejects_unknown_ep_options():
    with pytest.raises(ConfigError, match="rule.T3 is not an option of ep"):
        validate_config(compose_cfg(["rule=ep", "+rule.T3=5"]))
    validate_config(compose_cfg(["rule=ep"]))


def test_hard_sigmoid_states_stay_in_the_unit_box_and_vmap_over_seeds():
    model = mlp(
        (4,),
        3,
        hidden=(6, 5),
        activation="hard_sigmoid",
        output_activation="hard_sigmoid",
    )
    rule = ep(model, get_loss("mse"), T1=30, T2=5, symmetric=False, random_sign=True)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.vmap(lambda k: init_params(model, k))(keys)
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (8, 4))
    batch = Batch(x, jnp.arange(8) % 3)
    d, _, m = jax.jit(jax.vmap(rule.update, in_axes=(0, None, None, 0)))(
        params, rule.init(None, None), batch, keys
    )
    assert m["delta_free"].shape == (3, 3)
    assert all(
        bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(d)
    )
    free = jax.vmap(lambda p: rule.predict(p, (), x).headline[""])(params)
    assert float(jnp.min(free)) >= 0.0 and float(jnp.max(free)) <= 1.0
