"""Normalisation stages (model.norm): the hand-written backward against jax.grad,
every rule's direction through them, BatchNorm's running statistics, refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_alternatives.model import (
    cnn,
    forward,
    inference_params,
    init_model_state,
    init_params,
    mlp,
    output,
    update_model_state,
)
from bp_alternatives.model.losses import get_loss
from bp_alternatives.model.norm import (
    NORM_EPS,
    NORM_MOMENTUM,
    norm_backward,
    norm_forward,
)
from bp_alternatives.rules import bp, dfa, ep, fa, ff, manual_bp, sg
from bp_alternatives.rules._base import Batch, UnsupportedModelError
from bp_alternatives.train.step import init_state, make_train_step
from tests.conftest import to_f64, tree_allclose

LOSS = get_loss("cross_entropy")


def _perturbed(params, key):
    """float64 params moved off their init (scale 1 / offset 0 are a special case)."""
    leaves, tree = jax.tree_util.tree_flatten(to_f64(params))
    keys = jax.random.split(key, len(leaves))
    noise = [0.3 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, [a + n for a, n in zip(leaves, noise)])


def _mlp_case(norm, bias=False, readout_norm=True, activation="tanh"):
    model = mlp((5,), 3, hidden=(4, 6), activation=activation, norm=norm,
                bias=bias, readout_norm=readout_norm)  # fmt: skip
    params = _perturbed(init_params(model, jax.random.PRNGKey(0)), jax.random.key(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (7, 5), jnp.float64)
    return model, params, Batch(x, jnp.array([0, 1, 2, 0, 1, 2, 0]))


def _cnn_case(norm):
    model = cnn((6, 6, 2), 3, channels=(3,), hidden=(4,), activation="tanh", norm=norm)
    params = _perturbed(init_params(model, jax.random.PRNGKey(0)), jax.random.key(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 6, 6, 2), jnp.float64)
    return model, params, Batch(x, jnp.array([0, 1, 2, 0, 1]))


def _direction(rule, params, batch):
    key = jax.random.PRNGKey(3)
    return rule.update(params, rule.init(key, params), batch, key)[0]


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
@pytest.mark.parametrize("shape", [(9, 4), (3, 4, 5, 2)])
def test_norm_backward_equals_vjp_float64(norm, shape):
    with jax.enable_x64(True):
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
        z = jax.random.normal(k1, shape, jnp.float64) * 2.0 + 0.5
        c = shape[-1]
        pn = {"scale": 1 + jax.random.normal(k2, (c,), jnp.float64),
              "offset": jax.random.normal(k3, (c,), jnp.float64)}  # fmt: skip
        delta_a = jax.random.normal(jax.random.PRNGKey(4), shape, jnp.float64)
        _, pull = jax.vjp(lambda pn, z: norm_forward(norm, pn, z), pn, z)
        want_p, want_z = pull(delta_a)
        got_p, got_z = norm_backward(norm, pn, z, delta_a)
        assert tree_allclose(got_p, want_p, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(got_z, want_z, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(
    "case",
    [
        lambda: _mlp_case("batchnorm"),
        lambda: _mlp_case("layernorm", bias=True, readout_norm=False),
        lambda: _mlp_case("batchnorm", bias=True, activation="relu"),
        lambda: _cnn_case("batchnorm"),
        lambda: _cnn_case("layernorm"),
    ],
    ids=["mlp-bn-nobias", "mlp-ln-bias", "mlp-bn-relu", "cnn-bn", "cnn-ln"],
)
def test_manual_bp_and_fa_symmetric_equal_jax_grad_through_norms(case):
    with jax.enable_x64(True):
        model, params, batch = case()
        want = _direction(bp(model, LOSS), params, batch)
        assert "norm" in want[0]
        got = _direction(manual_bp(model, LOSS), params, batch)
        assert tree_allclose(got, want, rtol=1e-10, atol=1e-12)
        # FA with B = W sends its signal through the norm's local derivative
        got = _direction(fa(model, LOSS, feedback="symmetric"), params, batch)
        assert tree_allclose(got, want, rtol=1e-10, atol=1e-12)
        # SG with no decoupled boundary, or with the true gradient as its synthetic
        # one (oracle), is backprop, wherever the boundaries cut the stages
        for boundary in ("output", "preactivation"):
            for kw in ({"decouple": []}, {"synthesizer": "oracle"}):
                rule = sg(model, LOSS, boundary=boundary, **kw)
                got = _direction(rule, params, batch)
                assert tree_allclose(got, want, rtol=1e-10, atol=1e-12), (boundary, kw)


def test_dfa_projects_the_error_through_the_norms_local_derivative():
    with jax.enable_x64(True):
        model, params, batch = _mlp_case("batchnorm", bias=True)
        rule = dfa(model, LOSS)
        key = jax.random.PRNGKey(3)
        state = rule.init(key, params)
        got = rule.update(params, state, batch, key)[0]
        out, caches = forward(model, params, batch.x)
        _, pull = jax.vjp(lambda o: LOSS.value(o, batch.y), out)
        (e,) = pull(1.0)  # identity read-out activation: dL/da_L
        _, e_z = norm_backward("batchnorm", params[-1]["norm"], caches[-1].z, e)
        for l in range(2):  # hidden stage l: (e B_l) * tanh'(a_l), then the norm
            c = caches[l]
            delta_a = (e @ state.B[l]) * (1 - jnp.tanh(c.a) ** 2)
            g_norm, delta_z = norm_backward(
                "batchnorm", params[l]["norm"], c.z, delta_a
            )
            np.testing.assert_allclose(got[l]["kernel"], c.x.T @ delta_z, rtol=1e-10)
            np.testing.assert_allclose(got[l]["bias"], delta_z.sum(0), atol=1e-12)
            assert tree_allclose(got[l]["norm"], g_norm, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[2]["kernel"], caches[2].x.T @ e_z, rtol=1e-10)


def test_bias_false_drops_the_bias_and_norm_adds_scale_and_offset():
    model = mlp((5,), 3, hidden=(4,), norm="layernorm", bias=False)
    params = init_params(model, jax.random.PRNGKey(0))
    assert sorted(params[0]) == ["kernel", "norm"]
    assert sorted(params[0]["norm"]) == ["offset", "scale"]
    assert sorted(params[1]) == ["kernel"]  # read-out: no norm unless readout_norm
    assert model.spec["norm"] == "layernorm" and model.spec["bias"] is False


def test_batchnorm_running_statistics_follow_pytorchs_rule_and_drive_evaluation():
    with jax.enable_x64(True):
        model, params, batch = _mlp_case("batchnorm")
        state = init_model_state(model, params)
        assert [sorted(s) for s in state] == [["mean", "var"]] * 3
        new = update_model_state(model, params, batch.x, state)
        z = forward(model, params, batch.x)[1][0].z  # stage 0's linear output
        m = NORM_MOMENTUM
        np.testing.assert_allclose(new[0]["mean"], m * z.mean(0), rtol=1e-12)
        np.testing.assert_allclose(  # unbiased batch variance, as torch
            new[0]["var"], (1 - m) + m * z.var(0, ddof=1), rtol=1e-12
        )
        # evaluation normalises with the running statistics, example by example
        eval_params = inference_params(params, new)
        one = output(model, eval_params, batch.x[:1])
        np.testing.assert_allclose(one, output(model, eval_params, batch.x)[:1])
        a0 = (z[:1] - new[0]["mean"]) / jnp.sqrt(new[0]["var"] + NORM_EPS)
        a0 = params[0]["norm"]["scale"] * a0 + params[0]["norm"]["offset"]
        cache = forward(model, eval_params, batch.x[:1])[1][0]
        np.testing.assert_allclose(cache.a, a0, rtol=1e-12)
        assert not np.allclose(output(model, params, batch.x)[:1], one)


def test_train_step_moves_the_running_statistics_and_not_the_params_with_them():
    import optax

    model = mlp((5,), 3, hidden=(4,), norm="batchnorm")
    rule, opt = bp(model, LOSS), optax.sgd(0.1)
    state = init_state(model, rule, opt, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    batch = Batch(x, jnp.arange(8) % 3)
    new, _ = make_train_step(rule, opt, model)(state, batch, jax.random.PRNGKey(2))
    want = update_model_state(model, state.params, x, state.model_state)
    assert tree_allclose(new.model_state, want, rtol=1e-6)
    assert jax.tree_util.tree_structure(new.params) == jax.tree_util.tree_structure(
        state.params
    )
    # without a model the loop leaves the statistics alone (rule-only callers)
    same, _ = make_train_step(rule, opt)(state, batch, jax.random.PRNGKey(2))
    assert tree_allclose(same.model_state, state.model_state, rtol=0)


def test_rules_without_a_normalised_stage_refuse_naming_rule_and_option():
    model = mlp((12,), 3, hidden=(4,), activation="relu", norm="batchnorm")
    with pytest.raises(UnsupportedModelError, match=r"rule=ff .*model.norm=batchnorm"):
        ff(model, LOSS)
    tanh = mlp((12,), 3, hidden=(4,), norm="layernorm")
    with pytest.raises(UnsupportedModelError, match=r"rule=ep .*model.norm=layernorm"):
        ep(tanh, LOSS)


def test_unknown_norm_names_the_field():
    with pytest.raises(ValueError, match=r"model.norm 'groupnorm'"):
        mlp((5,), 3, norm="groupnorm")


def test_running_statistics_travel_through_a_checkpoint(tmp_path):
    import optax

    from bp_alternatives.train.checkpoint import Checkpointer

    model = mlp((5,), 3, hidden=(4,), norm="batchnorm")
    rule, opt = bp(model, LOSS), optax.adam(1e-3)
    fresh = init_state(model, rule, opt, jax.random.PRNGKey(0))
    moved = fresh._replace(
        model_state=jax.tree_util.tree_map(lambda a: a + 0.5, fresh.model_state)
    )
    ckpt = Checkpointer(str(tmp_path), 1, "tag")
    ckpt.save(moved, {"epoch": 1})
    back, _ = ckpt.load(fresh)
    assert tree_allclose(back.model_state, moved.model_state, rtol=0)
