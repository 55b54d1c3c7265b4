"""Direct feedback alignment: hand-computed directions, the BP equivalence, B as state.

- A 1-hidden-layer net with hand-set weights and B: the direction equals the DFA
  equations written out in numpy.
- A 2-hidden-layer numpy reference, independent and shared (sliced) feedback.
- One hidden stage with ``B = W_2^T`` is exactly backprop (MLP and a conv stage).
- Weight decay never touches ``B``; a zero-initialised model (``model.init=zeros``, the
  official code's set-up for tanh nets) still learns with DFA.
- On digits, DFA reaches >= 93% (slow).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bp_alternatives.data import load_dataset
from bp_alternatives.model import Model, Stage, init_params, mlp, output
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import (
    Batch,
    DirectFeedbackAlignmentState,
    UnsupportedModelError,
    dfa,
    loss_fn,
)
from bp_alternatives.train import fit
from tests.conftest import to_f64, tree_allclose
from tests.test_feedback_alignment import train_steps


def _params(model: Model, seed: int = 0):
    return to_f64(jax.jit(lambda k: init_params(model, k))(jax.random.PRNGKey(seed)))


def _bp(model, loss, params, batch):
    return jax.jit(jax.grad(lambda p, b: loss_fn(model, loss, p, b)))(params, batch)


def test_one_hidden_layer_with_hand_set_B_matches_the_hand_computed_direction():
    with jax.enable_x64(True):
        x = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])  # [N=2, 3]
        y = np.array([[1.0, 0.0], [0.0, 1.0]])  # float targets for the mse loss
        W1 = np.array([[0.1, -0.2, 0.4], [0.0, 0.3, -0.1], [0.2, 0.1, 0.0]])
        b1 = np.array([0.0, 0.1, -0.2])
        W2 = np.array([[0.5, -0.5], [0.25, 0.75], [-1.0, 0.5]])
        b2 = np.array([0.0, -0.1])
        B = np.array([[1.0, -1.0, 0.5], [2.0, 0.5, -0.25]])  # [n_out=2, n_1=3]
        model = mlp((3,), 2, hidden=(3,), activation="tanh")
        rule = dfa(model, get_loss("mse"))
        params = (
            {"kernel": jnp.asarray(W1), "bias": jnp.asarray(b1)},
            {"kernel": jnp.asarray(W2), "bias": jnp.asarray(b2)},
        )
        state = DirectFeedbackAlignmentState(B=(jnp.asarray(B),))
        d, new_state, m = rule.update(
            params, state, Batch(jnp.asarray(x), jnp.asarray(y)), jax.random.PRNGKey(0)
        )

        # DFA by hand (Nøkland 2016, eqs. for one hidden layer):
        a1 = x @ W1 + b1
        h1 = np.tanh(a1)
        a2 = h1 @ W2 + b2  # identity read-out
        L = np.mean(0.5 * np.sum((a2 - y) ** 2, axis=1))
        e = (a2 - y) / 2  # dL/da2, mean over N=2
        dW2, db2 = h1.T @ e, e.sum(0)  # the read-out's true gradient
        delta_a1 = (e @ B) * (1 - h1**2)  # e B, then f'(a1); W2 plays no part
        dW1, db1 = x.T @ delta_a1, delta_a1.sum(0)

        np.testing.assert_allclose(m["loss"], L, rtol=1e-12)
        np.testing.assert_allclose(d[1]["kernel"], dW2, rtol=1e-12)
        np.testing.assert_allclose(d[1]["bias"], db2, rtol=1e-12)
        np.testing.assert_allclose(d[0]["kernel"], dW1, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(d[0]["bias"], db1, rtol=1e-12, atol=1e-15)
        # and it is not the backprop direction (B is not W2^T)
        delta_bp = (e @ W2.T) * (1 - h1**2)
        assert not np.allclose(d[0]["kernel"], x.T @ delta_bp)
        assert new_state is state


def numpy_dfa(params, Bs, x, y):
    """2 sigmoid hidden layers, softmax CE: each hidden layer gets e B_l directly."""
    W = [np.asarray(p["kernel"]) for p in params]
    b = [np.asarray(p["bias"]) for p in params]
    x = np.asarray(x)
    h = [x]
    for l in range(2):
        h.append(1 / (1 + np.exp(-(h[-1] @ W[l] + b[l]))))
    a3 = h[2] @ W[2] + b[2]
    p = np.exp(a3 - a3.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e = (p - np.eye(a3.shape[1])[np.asarray(y)]) / x.shape[0]
    grads = []
    for l in range(2):
        delta = (e @ Bs[l]) * h[l + 1] * (1 - h[l + 1])
        grads.append({"kernel": h[l].T @ delta, "bias": delta.sum(0)})
    grads.append({"kernel": h[2].T @ e, "bias": e.sum(0)})
    return grads


@pytest.mark.parametrize("feedback", ["independent", "shared"])
def test_two_hidden_layers_match_a_numpy_reference(feedback):
    with jax.enable_x64(True):
        model = mlp((4,), 3, hidden=(5, 4), activation="sigmoid")
        rule = dfa(model, get_loss("cross_entropy"), feedback=feedback, scale=2.0)
        params = _params(model)
        state = jax.jit(rule.init)(jax.random.PRNGKey(1), params)
        B = [np.asarray(b) for b in state.B]
        if feedback == "independent":
            assert [b.shape for b in B] == [(3, 5), (3, 4)]
            for b, n_l in zip(B, (5, 4)):  # uniform in +-scale/sqrt(n_l)
                assert np.abs(b).max() <= 2.0 / np.sqrt(n_l)
            Bs = B
        else:
            # one matrix [n_out, max n_l]; stage l uses its first n_l columns (so
            # stages of equal width would get the very same feedback: the pitfall)
            assert [b.shape for b in B] == [(3, 5)]
            assert np.abs(B[0]).max() <= 2.0 / np.sqrt(5)
            Bs = [B[0][:, :5], B[0][:, :4]]
        kx, ky = jax.random.split(jax.random.PRNGKey(2))
        batch = Batch(
            jax.random.normal(kx, (6, 4), jnp.float64),
            jax.random.randint(ky, (6,), 0, 3),
        )
        d, _, _ = jax.jit(rule.update)(params, state, batch, jax.random.PRNGKey(0))
        for got, want in zip(d, numpy_dfa(params, Bs, batch.x, batch.y)):
            for k in ("kernel", "bias"):
                np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-14)


def tiny_conv_net() -> Model:
    """conv(3x3, tanh, flatten) -> dense read-out: n_1 = 4*4*3 = 48."""
    stages = (
        Stage(nn.Conv(3, (3, 3), padding="SAME", name="c0"), "tanh", "flatten", "c0"),
        Stage(nn.Dense(4, name="d"), "identity", "none", "readout"),
    )
    return Model(stages, (4, 4, 2), 4, {"name": "tiny_conv_net"})


@pytest.mark.parametrize(
    "make,loss_name",
    [
        (lambda: mlp((6,), 3, hidden=(7,), activation="tanh"), "cross_entropy"),
        (
            lambda: mlp(
                (6,), 3, hidden=(5,), activation="sigmoid", output_activation="sigmoid"
            ),
            "mse",
        ),
        (tiny_conv_net, "cross_entropy"),
    ],
    ids=["mlp-tanh-ce", "mlp-sigmoid-mse", "conv-tanh-ce"],
)
def test_one_hidden_stage_with_B_equal_to_W2_transposed_is_backprop(make, loss_name):
    with jax.enable_x64(True):
        model, loss = make(), get_loss(loss_name)
        params = _params(model)
        kx, ky = jax.random.split(jax.random.PRNGKey(2))
        x = jax.random.normal(kx, (5, *model.input_shape), jnp.float64)
        batch = Batch(x, jax.random.randint(ky, (5,), 0, model.num_outputs))
        rule = dfa(model, loss)
        update = jax.jit(rule.update)
        state = jax.jit(rule.init)(jax.random.PRNGKey(1), params)
        n_1 = int(np.prod(state.B[0].shape[1:]))
        assert state.B[0].shape == (model.num_outputs, n_1)
        grads = _bp(model, loss, params, batch)
        d_rand, _, _ = update(params, state, batch, jax.random.PRNGKey(0))
        assert not tree_allclose(d_rand[0], grads[0], rtol=1e-3, atol=1e-6)
        state = DirectFeedbackAlignmentState(B=(params[1]["kernel"].T,))
        d, _, _ = update(params, state, batch, jax.random.PRNGKey(0))
        assert tree_allclose(d, grads, rtol=1e-10, atol=1e-13)


def test_bad_models_and_options_fail_at_build():
    loss = get_loss("cross_entropy")
    with pytest.raises(UnsupportedModelError, match="hidden stage"):
        dfa(mlp((4,), 3, hidden=()), loss)
    with pytest.raises(ValueError, match="feedback"):
        dfa(mlp((4,), 3, hidden=(5,)), loss, feedback="random")


def test_weight_decay_never_touches_B():
    model = mlp((6,), 3, hidden=(8, 8))
    rule = dfa(model, get_loss("cross_entropy"))
    start, final, _ = train_steps(
        model, rule, optax.adamw(1e-2, weight_decay=0.5), steps=30
    )
    assert not np.allclose(final.params[0]["kernel"], start.params[0]["kernel"])
    assert len(start.rule_state.B) == 2
    for before, after in zip(start.rule_state.B, final.rule_state.B):
        np.testing.assert_array_equal(before, after)


def test_zero_initialised_model_learns_with_dfa_where_bp_cannot_start():
    """``model.init=zeros`` (the official DFA code for tanh nets): backprop's hidden
    gradients are exactly zero there, DFA's hidden directions are not."""
    from tests.test_rule_contract import blobs

    model = mlp((6,), 3, hidden=(16, 12), activation="tanh", init="zeros")
    loss = get_loss("cross_entropy")
    rule = dfa(model, loss)
    start, final, metrics = train_steps(model, rule, optax.adam(1e-2), steps=100)
    assert all(float(jnp.abs(p["kernel"]).sum()) == 0 for p in start.params)
    data = blobs()
    batch = Batch(jnp.asarray(data.x_train[:20]), jnp.asarray(data.y_train[:20]))
    g = _bp(model, loss, start.params, batch)
    assert float(jnp.abs(g[0]["kernel"]).sum()) == 0  # bp: stuck at zero
    d, _, _ = rule.update(start.params, start.rule_state, batch, jax.random.PRNGKey(0))
    assert float(jnp.abs(d[0]["kernel"]).sum()) > 0  # dfa: a signal from step 0
    pred = jnp.argmax(output(model, final.params, jnp.asarray(data.x_test)), -1)
    assert float(jnp.mean(pred == jnp.asarray(data.y_test))) >= 0.9


@pytest.mark.slow  # ~5-10 s alone, more on a loaded box
def test_on_digits_dfa_learns_and_its_hidden_stages_align():
    data = load_dataset("digits")
    model = mlp(
        data.input_shape, data.num_classes, hidden=(256, 256), activation="tanh"
    )
    loss = get_loss("cross_entropy")
    out = fit(
        model,
        loss,
        dfa(model, loss),
        optax.adam(1e-3),
        data,
        epochs=10,
        batch_size=64,
        key=jax.random.PRNGKey(0),
        progress=False,
    )
    assert out["status"] == "ok"
    hist = out["history"]
    assert hist[-1]["test_accuracy"] >= 0.93, hist[-1]
    last = hist[-1]["alignment_deg"]
    # the read-out gets its true gradient (float32 arccos resolves ~0.03 deg)
    assert last[-1] < 0.5 and all(a < 80 for a in last[:-1]), last  # ~71, ~66 deg
