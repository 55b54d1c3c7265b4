"""Synthetic gradients (DNI / cDNI): plumbing against exact references, the detached
regression target, warm-up, update unlocking, and learning on digits."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bp_alternatives.data import load_digits
from bp_alternatives.experiment import build_rule, run
from bp_alternatives.model import cnn, forward, init_params, mlp, stage_fn
from bp_alternatives.model.losses import get_loss
from bp_alternatives.optim import make_optimizer
from bp_alternatives.rules import (
    RULES,
    Batch,
    SyntheticGradientsState,
    UnsupportedModelError,
    bp,
    sg,
)
from bp_alternatives.train import fit
from tests.conftest import compose_cfg

TANH = "tanh"


def _max_rel_err(a, b) -> float:
    """max over leaves of max|a - b| / max|b|."""
    errs = []
    for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True
    ):
        x, y = np.asarray(x), np.asarray(y)  # numpy: no compile per leaf shape
        scale = float(np.max(np.abs(y)))
        errs.append(float(np.max(np.abs(x - y))) / (scale if scale > 0 else 1.0))
    return max(errs)


def _net(
    hidden=(6, 5, 4),
    activation=TANH,
    loss="cross_entropy",
    float_targets=False,
    batch=7,
    seed=0,
):
    """A tiny float64 MLP 5 -> hidden -> 3 and one batch (call inside enable_x64)."""
    model = mlp(
        (5,), 3, hidden=hidden, activation=activation, init="normal", init_std=0.6
    )
    # numpy draws: one jax.random kernel per shape would cost a compile each
    rng = np.random.RandomState(seed)
    shapes = jax.eval_shape(partial(init_params, model), jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.6 * rng.normal(size=s.shape), jnp.float64), shapes
    )
    x = jnp.asarray(rng.normal(size=(batch, 5)), jnp.float64)
    if float_targets:
        y = jnp.asarray(rng.uniform(size=(batch, 3)), jnp.float64)
    else:
        y = jnp.asarray(rng.randint(0, 3, size=batch), jnp.int32)
    return model, params, Batch(x, y), get_loss(loss)


def _init(rule, seed: int, params) -> SyntheticGradientsState:
    return jax.jit(rule.init)(jax.random.PRNGKey(seed), params)


def _forward(model, params, x):
    return jax.jit(lambda p, x: forward(model, p, x))(params, x)


def _grads(model, loss, params, batch):
    """Exact dL/dparams (jax.grad through the whole stack)."""
    return jax.jit(
        jax.grad(lambda p: loss.value(forward(model, p, batch.x)[0], batch.y))
    )(params)


def _random_state(rule, params, seed: int, scale=0.4) -> SyntheticGradientsState:
    """A state whose every synthesizer weight is random (no layer is the zero init).

    Built from the shapes of ``rule.init`` (its optimizer state and step are zeros, as
    ``init`` makes them for sgd and adam) without compiling ``init``'s random draws.
    """
    shapes = jax.eval_shape(rule.init, jax.random.PRNGKey(0), params)
    rng = np.random.RandomState(seed)
    theta = jax.tree_util.tree_map(
        lambda l: jnp.asarray(scale * rng.normal(size=l.shape), l.dtype),
        shapes.trainable.params,
    )
    zeros = jax.tree_util.tree_map(lambda l: jnp.zeros(l.shape, l.dtype), shapes)
    return _with_theta(zeros, theta)


def _with_theta(state, theta):
    """``state`` with the synthesizers' parameters replaced by ``theta``."""
    return state._replace(trainable=state.trainable._replace(params=theta))


def _true_dL_dh(model, params, batch, loss) -> list[np.ndarray]:
    """dL/dh_l for every hidden stage: jax.grad w.r.t. a zero added to each h_l."""
    n = model.num_stages - 1

    def perturbed_loss(eps):
        h = batch.x
        for l, (stage, p) in enumerate(zip(model.stages, params, strict=True)):
            h = stage_fn(stage)(p, h)
            if l < n:
                h = h + eps[l]
        return loss.value(h, batch.y)

    _, caches = _forward(model, params, batch.x)
    eps = [np.zeros(c.out.shape) for c in caches[:-1]]
    return [np.asarray(g) for g in jax.jit(jax.grad(perturbed_loss))(eps)]


def _mlp_by_hand(theta, z):
    """The synthesizer written out: ReLU dense layers, the last one linear."""
    for layer in theta[:-1]:
        z = np.maximum(z @ layer["kernel"] + layer["bias"], 0.0)
    return z @ theta[-1]["kernel"] + theta[-1]["bias"]


def _synth_input(h, y, conditioned, k=3):
    z = np.asarray(h)
    if conditioned:
        z = np.concatenate([z, np.eye(k)[np.asarray(y)]], axis=-1)
    return z


def test_registered():
    assert RULES["sg"] is sg


# --- plumbing: the oracle control is exact backprop ------------------------------


@pytest.mark.parametrize(
    "activation,loss,float_targets,conditioned",
    [
        (TANH, "cross_entropy", False, False),
        ("sigmoid", "mse", True, True),
    ],
)
def test_oracle_synthesizer_gives_the_backprop_direction(
    activation, loss, float_targets, conditioned
):
    with jax.enable_x64(True):
        model, params, batch, loss_ = _net(
            activation=activation, loss=loss, float_targets=float_targets
        )
        rule = sg(model, loss_, synthesizer="oracle", conditioned=conditioned)
        state = _init(rule, 1, params)
        d, new_state, m = jax.jit(rule.update)(params, state, batch, None)
        ref = bp(model, loss_)
        g, _, m_bp = jax.jit(ref.update)(params, ref.init(None, params), batch, None)
        assert jax.tree_util.tree_structure(d) == jax.tree_util.tree_structure(g)
        assert _max_rel_err(d, g) < 1e-10
        assert float(jnp.abs(m["loss"] - m_bp["loss"])) < 1e-12
        # the oracle's bootstrapped targets are the true gradients: zero regression loss
        assert m["synth_loss"].shape == (3,) and float(jnp.max(m["synth_loss"])) < 1e-20
        assert float(jnp.max(m["synth_angle_deg"])) < 1e-4
        assert int(new_state.step) == 1


def test_convolutional_stages_oracle_equals_backprop_and_synthesizer_shapes():
    """Stage outputs of any shape: a conv stage's pooled [B, H, W, C] output is
    flattened for its synthesizer and the prediction reshaped back."""
    with jax.enable_x64(True):
        model = cnn((6, 6, 1), 3, channels=(2, 3), hidden=(4,), kernel_size=3)
        rng = np.random.RandomState(0)
        shapes = jax.eval_shape(partial(init_params, model), jax.random.PRNGKey(0))
        params = jax.tree_util.tree_map(
            lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), jnp.float64), shapes
        )
        x = jnp.asarray(rng.normal(size=(5, 6, 6, 1)))
        batch = Batch(x, jnp.asarray(rng.randint(0, 3, 5), jnp.int32))
        loss = get_loss("cross_entropy")
        _, caches = _forward(model, params, x)
        assert caches[0].out.shape == (5, 3, 3, 2)  # conv + max-pool, not flat
        rule = sg(model, loss, synthesizer="oracle")
        d, _, m = jax.jit(rule.update)(params, _init(rule, 1, params), batch, None)
        assert _max_rel_err(d, _grads(model, loss, params, batch)) < 1e-10
        dni = jax.eval_shape(
            sg(model, loss, conditioned=True, synth_width=8).init,
            jax.random.PRNGKey(0),
            params,
        )
        assert [[t["kernel"].shape for t in th] for th in dni.trainable.params] == [
            [(18 + 3, 8), (8, 18)],
            [(3 + 3, 8), (8, 3)],
            [(4 + 3, 8), (8, 4)],
        ]


# --- each hidden stage: the vjp of that stage alone with delta_hat_l ----------------


@pytest.mark.parametrize(
    "synthesizer,layers,conditioned",
    [("linear", 1, False), ("mlp", 2, True)],
)
def test_hidden_directions_are_own_stage_backward_of_the_synthetic_gradient(
    synthesizer, layers, conditioned
):
    """Reference by hand: delta_hat_l = M_l(h_l) / B, delta_a = delta_hat_l * f'(a_l),
    dW_l = x_l^T delta_a, db_l = sum_B delta_a; the read-out: its exact gradient."""
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = sg(
            model,
            loss,
            synthesizer=synthesizer,
            synth_hidden_layers=layers,
            synth_width=7,
            conditioned=conditioned,
        )
        state = _random_state(rule, params, 2)
        d, _, _ = jax.jit(rule.update)(params, state, batch, None)
        _, caches = _forward(model, params, batch.x)
        B = batch.x.shape[0]
        for l, c in enumerate(caches[:-1]):
            theta = jax.tree_util.tree_map(np.asarray, state.trainable.params[l])
            delta_hat = (
                _mlp_by_hand(theta, _synth_input(c.out, batch.y, conditioned)) / B
            )
            delta_a = delta_hat * (1.0 - np.asarray(c.h) ** 2)  # tanh' = 1 - h^2
            ref = {"kernel": np.asarray(c.x).T @ delta_a, "bias": delta_a.sum(axis=0)}
            assert float(np.max(np.abs(ref["kernel"]))) > 1e-6
            assert _max_rel_err(d[l], ref) < 1e-10, l
        g = _grads(model, loss, params, batch)
        assert _max_rel_err(d[-1], g[-1]) < 1e-10
        # and a hidden direction is not the true gradient (the test can tell them apart)
        assert _max_rel_err(d[0], g[0]) > 1e-2


def test_zero_initialised_output_layer_and_shapes():
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = sg(model, loss, synth_hidden_layers=2, synth_width=9, conditioned=True)
        state = _init(rule, 0, params)
        for l, width in enumerate((6, 5, 4)):
            theta = state.trainable.params[l]
            assert [t["kernel"].shape for t in theta] == [
                (width + 3, 9),
                (9, 9),
                (9, width),
            ]
            assert all(t["kernel"].dtype == jnp.float64 for t in theta)
            assert float(np.std(theta[0]["kernel"])) > 0.1  # hidden layers are random
            assert not np.any(theta[-1]["kernel"]) and not np.any(theta[-1]["bias"])
        linear = _init(sg(model, loss, synthesizer="linear"), 0, params)
        assert [[t["kernel"].shape for t in th] for th in linear.trainable.params] == [
            [(6, 6)],
            [(5, 5)],
            [(4, 4)],
        ]
        # zero output layer: the first synthetic gradients are zero, so the hidden
        # stages do not move on step 0; the read-out gets its true gradient
        d, _, m = jax.jit(rule.update)(params, state, batch, None)
        assert all(not np.any(leaf) for leaf in jax.tree_util.tree_leaves(d[:-1]))
        g = _grads(model, loss, params, batch)
        assert _max_rel_err(d[-1], g[-1]) < 1e-10
        np.testing.assert_allclose(m["synth_angle_deg"], 90.0)  # zero: orthogonal
        # bootstrapped targets below the last hidden stage come from zero synthesizers
        # (without warm-up): zero; the last one regresses on the read-out's gradient
        assert float(m["synth_loss"][0]) == 0.0 and float(m["synth_loss"][1]) == 0.0
        assert float(m["synth_loss"][2]) > 1e-6 and float(m["warmup"]) == 0.0


# --- update unlocking: no true gradient crosses a stage boundary ---------------------


def test_hidden_directions_do_not_depend_on_anything_above_the_stage():
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        for conditioned in (False, True):
            rule = sg(model, loss, synth_width=8, conditioned=conditioned)
            state = _random_state(rule, params, 2)
            update = jax.jit(rule.update)
            d, _, _ = update(params, state, batch, None)
            # change the read-out's weights: the hidden stages' directions are unchanged
            readout = {k: 3.0 * np.asarray(w) + 0.5 for k, w in params[-1].items()}
            d2, _, _ = update((*params[:-1], readout), state, batch, None)
            assert _max_rel_err(d2[:-1], d[:-1]) < 1e-13
            assert _max_rel_err(d2[-1], d[-1]) > 1e-2
            # change stage 1's weights: stage 0's direction is unchanged (only its own
            # synthesizer speaks to it), stage 1's changes
            p1 = {k: -np.asarray(w) for k, w in params[1].items()}
            d3, _, _ = update((params[0], p1, *params[2:]), state, batch, None)
            assert _max_rel_err(d3[0], d[0]) < 1e-13
            assert _max_rel_err(d3[1], d[1]) > 1e-2
            # change the labels: DNI's hidden directions do not see them, cDNI's do
            y4 = jnp.asarray((np.asarray(batch.y) + 1) % 3, batch.y.dtype)
            d4, _, _ = update(params, state, batch._replace(y=y4), None)
            if conditioned:
                assert _max_rel_err(d4[0], d[0]) > 1e-2
            else:
                assert _max_rel_err(d4[:-1], d[:-1]) < 1e-13


# --- the regression target is a constant --------------------------------------------


def _targets_by_hand(model, params, batch, loss, theta, conditioned):
    """Constant (numpy) targets: the read-out's true dL/dh for the last hidden stage,
    the vjp of stage l+1 with delta_hat_{l+1} for the others."""
    _, caches = _forward(model, params, batch.x)
    B = batch.x.shape[0]
    hs = [np.asarray(c.out) for c in caches[:-1]]
    n = len(hs)
    t = [None] * n
    readout = stage_fn(model.stages[-1])
    t[-1] = np.asarray(
        jax.jit(jax.grad(lambda h: loss.value(readout(params[-1], h), batch.y)))(hs[-1])
    )
    for l in range(n - 1):
        delta_hat = (
            _mlp_by_hand(theta[l + 1], _synth_input(hs[l + 1], batch.y, conditioned))
            / B
        )
        f = partial(stage_fn(model.stages[l + 1]), params[l + 1])
        input_vjp = jax.jit(lambda h, d, f=f: jax.vjp(f, h)[1](d)[0])
        t[l] = np.asarray(input_vjp(hs[l], delta_hat))
    return hs, t


def test_synthesizer_update_treats_the_target_as_a_constant():
    """The rule's synthesizer step equals plain SGD on
    sum_l mean_b ||M_l(h_l) - B t_l||^2 with t_l precomputed as a constant array; the
    same loss with the target *not* detached gives a clearly different step. (cDNI:
    the label input is exercised too; the target logic is the same for DNI.)"""
    lr, conditioned = 0.5, True
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = sg(
            model,
            loss,
            synth_hidden_layers=1,
            synth_width=8,
            optimizer=make_optimizer("sgd", lr, total_steps=1),
            conditioned=conditioned,
        )
        state = _random_state(rule, params, 2)
        _, new_state, m = jax.jit(rule.update)(params, state, batch, None)
        theta = state.trainable.params
        B = batch.x.shape[0]
        hs, t = _targets_by_hand(
            model,
            params,
            batch,
            loss,
            jax.tree_util.tree_map(np.asarray, theta),
            conditioned,
        )

        def apply(th, h):  # the synthesizer in jnp, for jax.grad
            z = jnp.asarray(_synth_input(h, batch.y, conditioned))
            for layer in th[:-1]:
                z = jax.nn.relu(z @ layer["kernel"] + layer["bias"])
            return z @ th[-1]["kernel"] + th[-1]["bias"]

        def regression(th):
            return sum(
                jnp.mean(jnp.sum((apply(th[l], hs[l]) - B * t[l]) ** 2, axis=-1))
                for l in range(len(hs))
            )

        expected = jax.tree_util.tree_map(
            lambda p, g: p - lr * g, theta, jax.jit(jax.grad(regression))(theta)
        )
        assert _max_rel_err(new_state.trainable.params, expected) < 1e-10
        theta_np = jax.tree_util.tree_map(np.asarray, theta)
        per_stage = [
            np.mean(
                np.sum(
                    (
                        _mlp_by_hand(
                            theta_np[l], _synth_input(hs[l], batch.y, conditioned)
                        )
                        - B * t[l]
                    )
                    ** 2,
                    axis=-1,
                )
            )
            for l in range(len(hs))
        ]
        np.testing.assert_allclose(m["synth_loss"], per_stage, rtol=1e-10)

        # the bug this guards against: a target that carries gradient into M_{l+1}
        def leaky(th):
            total = 0.0
            for l in range(len(hs)):
                if l == len(hs) - 1:
                    target = jnp.asarray(t[l])
                else:
                    f = stage_fn(model.stages[l + 1])
                    _, vjp = jax.vjp(partial(f, params[l + 1]), jnp.asarray(hs[l]))
                    target = vjp(apply(th[l + 1], hs[l + 1]) / B)[0]
                total += jnp.mean(
                    jnp.sum((apply(th[l], hs[l]) - B * target) ** 2, axis=-1)
                )
            return total

        leaky_value, leaky_grad = jax.jit(jax.value_and_grad(leaky))(theta)
        leaky_step = jax.tree_util.tree_map(lambda p, g: p - lr * g, theta, leaky_grad)
        assert float(abs(leaky_value - sum(per_stage))) < 1e-10  # same value...
        assert (
            _max_rel_err(leaky_step[1], new_state.trainable.params[1]) > 1e-3
        )  # ...not step


def test_no_gradient_reaches_a_synthesizer_through_the_target_of_another():
    """d synth_loss[l] / d theta_{l'} is exactly zero for l' != l, through the rule's
    own update (the target of M_l depends on M_{l+1} only as a constant)."""
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = sg(model, loss, synth_width=8)
        state = _random_state(rule, params, 2)

        def synth_losses(theta):  # [3]: each synthesizer's regression loss
            _, _, m = rule.update(params, _with_theta(state, theta), batch, None)
            return m["synth_loss"]

        jac = jax.jit(jax.jacrev(synth_losses))(state.trainable.params)
        for l in range(3):
            for k in range(3):
                leaves = jax.tree_util.tree_leaves(jac[k])
                norm = float(
                    np.sqrt(sum(np.sum(np.asarray(j)[l] ** 2) for j in leaves))
                )
                if k == l:
                    assert norm > 1e-3, (l, k)
                else:
                    assert norm == 0.0, (l, k)


# --- warm-up --------------------------------------------------------------------------


@pytest.mark.parametrize("diagnostics", [True, False])
def test_warmup_trains_with_exact_backprop_then_switches(diagnostics):
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = sg(
            model,
            loss,
            synthesizer="linear",  # zero at init, no random draws to compile
            warmup_steps=2,
            diagnostics=diagnostics,
        )
        state = _init(rule, 1, params)
        update = jax.jit(rule.update)
        ref = jax.jit(bp(model, loss).update)
        B = batch.x.shape[0]
        for step in range(3):
            d, state, m = update(params, state, batch, None)
            g, _, _ = ref(params, None, batch, None)
            assert int(state.step) == step + 1
            assert ("synth_angle_deg" in m) == diagnostics
            if step < 2:
                assert float(m["warmup"]) == 1.0
                assert _max_rel_err(d, g) < 1e-10
            else:
                assert float(m["warmup"]) == 0.0
                assert _max_rel_err(d[0], g[0]) > 1e-2  # synthetic now
                assert _max_rel_err(d[-1], g[-1]) < 1e-10  # the read-out stays exact
            if step == 0:
                # warm-up targets are the true dL/dh_l; the synthesizers start at zero,
                # so each loss is mean ||B dL/dh_l||^2 (bootstrapped targets would be 0
                # below the last hidden stage)
                true = _true_dL_dh(model, params, batch, loss)
                expected = [np.mean(np.sum((B * t) ** 2, -1)) for t in true]
                np.testing.assert_allclose(m["synth_loss"], expected, rtol=1e-10)
                assert min(expected) > 1e-6
            params = jax.tree_util.tree_map(
                lambda p, u: jnp.asarray(np.asarray(p) - 0.1 * np.asarray(u)), params, d
            )


def test_diagnostics_do_not_change_the_update():
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        out = []
        for diagnostics in (True, False):
            rule = sg(model, loss, synth_width=8, diagnostics=diagnostics)
            state = _random_state(rule, params, 2)
            out.append(jax.jit(rule.update)(params, state, batch, None))
        (d1, s1, m1), (d2, s2, m2) = out
        assert _max_rel_err(d1, d2) < 1e-13
        assert _max_rel_err(s1.trainable.params, s2.trainable.params) < 1e-13
        assert "synth_angle_deg" in m1 and "synth_angle_deg" not in m2
        assert m1["synth_angle_deg"].shape == (3,)
        assert bool(
            jnp.all((m1["synth_angle_deg"] > 0) & (m1["synth_angle_deg"] < 180))
        )


# --- bad input -----------------------------------------------------------------------


# --- rule.decouple: which boundaries get a synthesizer ------------------------------


def test_decouple_nothing_is_exact_backprop():
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = sg(model, loss, decouple=[])
        state = _init(rule, 1, params)
        assert state.trainable.params == ((), (), ())
        d, _, m = jax.jit(rule.update)(params, state, batch, None)
        assert _max_rel_err(d, _grads(model, loss, params, batch)) < 1e-12
        assert "synth_loss" not in m
        assert float(jnp.max(m["synth_angle_deg"])) < 1e-4


def test_decoupling_one_boundary_backpropagates_its_synthetic_gradient_below():
    """decouple=[1] on three hidden stages: stage 2 and the read-out get bp's gradient;
    stages 0-1 get delta_hat_1 = M_1(h_1) / B backpropagated through stages 1 and 0
    (jax.vjp of the two-stage stack); M_1's target is the true dL/dh_1 (no
    bootstrapping), so its loss is mean_b ||M_1(h_1) - B dL/dh_1||^2."""
    with jax.enable_x64(True):
        model, params, batch, loss = _net()
        rule = sg(model, loss, decouple=[1], synth_width=7)
        state = _random_state(rule, params, 2)
        assert state.trainable.params[0] == () and state.trainable.params[2] == ()
        d, _, m = jax.jit(rule.update)(params, state, batch, None)
        g = _grads(model, loss, params, batch)
        assert _max_rel_err(d[2:], g[2:]) < 1e-12
        _, caches = _forward(model, params, batch.x)
        B = batch.x.shape[0]
        theta = jax.tree_util.tree_map(np.asarray, state.trainable.params[1])
        m_1 = _mlp_by_hand(theta, np.asarray(caches[1].out))
        f = [stage_fn(s) for s in model.stages]
        _, vjp = jax.vjp(lambda p0, p1: f[1](p1, f[0](p0, batch.x)), *params[:2])
        ref = vjp(jnp.asarray(m_1 / B))
        assert _max_rel_err(d[:2], ref) < 1e-10
        assert _max_rel_err(d[:2], g[:2]) > 1e-2  # not the true gradient
        true_1 = _true_dL_dh(model, params, batch, loss)[1]
        want = np.mean(np.sum((m_1 - B * true_1) ** 2, axis=-1))
        assert m["synth_loss"].shape == (1,)
        assert abs(float(m["synth_loss"][0]) - want) < 1e-10 * want


def test_model_without_hidden_stage_is_unsupported():
    model = mlp((5,), 3, hidden=())
    with pytest.raises(UnsupportedModelError, match="hidden stage"):
        sg(model, get_loss("cross_entropy"))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"synthesizer": "conv"}, "rule.synthesizer"),
        ({"synth_hidden_layers": 0}, "rule.synth_hidden_layers"),
        ({"synth_width": 0}, "rule.synth_width"),
        ({"warmup_steps": -1}, "rule.warmup_steps"),
        ({"decouple": "some"}, "rule.decouple"),
        ({"decouple": [1]}, "rule.decouple"),  # only hidden stage 0 exists
        ({"decouple": [-1]}, "rule.decouple"),
    ],
)
def test_bad_options_name_the_field(kwargs, field):
    model = mlp((5,), 3, hidden=(4,))
    with pytest.raises(ValueError, match=field):
        sg(model, get_loss("cross_entropy"), **kwargs)


def test_unknown_synthesizer_optimizer_names_the_field():
    cfg = compose_cfg(["rule=sg", "rule.optimizer.name=rmsprop"])
    with pytest.raises(ValueError, match="rule.optimizer: unknown optimizer 'rmsprop'"):
        build_rule(cfg, mlp((5,), 3, hidden=(4,)), total_steps=1, steps_per_epoch=1)


# --- configs and the command-line path -----------------------------------------------


@pytest.mark.slow  # compiles the trainer's epoch, eval and probe functions
def test_run_from_config_reports_synthesizer_metrics(cfg_factory):
    cfg = cfg_factory(
        "rule=sg", "model.hidden=[16,16]", "trainer.epochs=2", "optim.lr=3e-3"
    )
    assert dict(cfg.rule.optimizer) == {"name": "adam", "lr": 3e-3}
    res = run(cfg)
    assert res["status"] == "ok"
    h = res["history"][-1]
    assert len(h["rule/synth_loss"]) == 2 and len(h["rule/synth_angle_deg"]) == 2
    assert all(0 < a < 180 for a in h["rule/synth_angle_deg"])
    assert len(h["alignment_deg"]) == 3


def test_paper_experiment_config_composes_for_every_row():
    base = ["experiment=jaderberg2017_mnist_fcn"]
    dni = compose_cfg(
        [
            *base,
            "rule.conditioned=false",
            "rule.synthesizer=mlp",
            "rule.synth_hidden_layers=2",
            "rule.synth_width=1024",
        ]
    )
    assert dni.rule.name == "sg" and dni.data.name == "mnist"
    assert not dni.rule.conditioned and dni.rule.synthesizer == "mlp"
    default = compose_cfg(["rule=sg"]).rule
    assert default.conditioned and default.synthesizer == "linear"
    assert default.decouple == "all"
    assert list(dni.model.hidden) == [256, 256] and dni.trainer.batch_size == 256
    assert dni.rule.optimizer.lr == dni.optim.lr
    cdni = compose_cfg([*base, "rule.conditioned=true", "rule.synthesizer=linear"])
    assert cdni.rule.conditioned and cdni.rule.synthesizer == "linear"
    bp_cfg = compose_cfg([*base, "rule=bp"])
    assert dict(bp_cfg.rule) == {
        "_target_": "bp_alternatives.rules.bp",
        "_partial_": True,
        "name": "bp",
        "remat": False,
    }
    assert bp_cfg.paper.test_error.bp == 2.0


# --- learning on digits ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("conditioned", [False, True], ids=["DNI", "cDNI"])
def test_learns_digits(conditioned):
    """64-256-256-10 tanh on digits, Adam 3e-4 (synthesizers: Adam 1e-3), batch 64,
    30 epochs: >= 93% test accuracy; every synthesizer's loss falls; its prediction
    ends well below 90 degrees from the true gradient."""
    data = load_digits()
    model = mlp(data.input_shape, 10, hidden=(256, 256), activation=TANH)
    loss = get_loss("cross_entropy")
    rule = sg(model, loss, conditioned=conditioned)  # synthesizers: Adam 1e-3
    out = fit(
        model,
        loss,
        rule,
        optax.adam(3e-4),
        data,
        epochs=30,
        batch_size=64,
        key=jax.random.PRNGKey(0),
        progress=False,
    )
    first, last = out["history"][0], out["history"][-1]
    summary = {
        k: (first.get(k), last.get(k))
        for k in ("test_accuracy", "rule/synth_loss", "rule/synth_angle_deg")
    }
    assert out["status"] == "ok"
    assert last["test_accuracy"] >= 0.93, summary
    for l in range(2):
        assert last["rule/synth_loss"][l] < 0.25 * first["rule/synth_loss"][l], summary
        assert last["rule/synth_angle_deg"][l] < 70.0, summary
