"""Feedback alignment: equivalences, a slow numpy reference, feedback as rule state.

- ``B = W`` (``feedback="symmetric"``, or ``random`` with the state overwritten by
  ``W``) gives exactly the backprop direction, for MLPs and a small CNN.
- Every variant matches an obvious numpy implementation on a 2-hidden-layer net.
- ``B`` is rule state: optimizer weight decay never touches it; Kolen-Pollack changes
  it exactly by its own rule (``W - B`` contracts by ``1 - lr*wd`` per SGD step).
- On digits, FA reaches >= 93% and its hidden stages' alignment falls below 90 deg.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bp_alternatives.data import load_dataset
from bp_alternatives.model import Model, Stage, init_params, mlp
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch, UnsupportedModelError, fa, loss_fn
from bp_alternatives.rules._feedback_alignment import usf_scale
from bp_alternatives.train import fit, init_state, make_train_step
from tests.conftest import to_f64, tree_allclose

VARIANTS = ["random", "usf", "brsf", "frsf", "kp"]


def tiny_cnn() -> Model:
    """conv(3x3, tanh) -> conv(2x2 valid, sigmoid, flatten) -> dense read-out."""
    stages = (
        Stage(nn.Conv(3, (3, 3), padding="SAME", name="c0"), "tanh", "none", "conv_0"),
        Stage(
            nn.Conv(2, (2, 2), padding="VALID", name="c1"), "sigmoid", "flatten", "c1"
        ),
        Stage(nn.Dense(4, name="d"), "identity", "none", "readout"),
    )
    return Model(stages, (5, 5, 2), 4, {"name": "tiny_cnn"})


def _batch(model: Model, n: int = 7, seed: int = 1) -> Batch:
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, (n, *model.input_shape), jnp.float64)
    y = jax.random.randint(ky, (n,), 0, model.num_outputs)
    return Batch(x, y)


def _bp(model, loss, params, batch):
    return jax.jit(jax.grad(lambda p, b: loss_fn(model, loss, p, b)))(params, batch)


def _params(model: Model, seed: int = 0):
    """float64 params (jitted: eager flax init costs seconds of dispatch)."""
    return to_f64(jax.jit(lambda k: init_params(model, k))(jax.random.PRNGKey(seed)))


def _init(rule, params, seed: int = 1):
    return jax.jit(rule.init)(jax.random.PRNGKey(seed), params)


MODELS = {
    "mlp_tanh": lambda: mlp((6,), 3, hidden=(5, 4), activation="tanh"),
    "mlp_sigmoid": lambda: mlp(
        (6,), 3, hidden=(5, 4, 3), activation="sigmoid", output_activation="sigmoid"
    ),
    "mlp_relu": lambda: mlp((6,), 3, hidden=(8, 7), activation="relu"),
    "cnn": tiny_cnn,
}


@pytest.mark.parametrize(
    "model_name,loss_name",
    [
        ("mlp_tanh", "cross_entropy"),
        ("mlp_sigmoid", "mse"),
        ("cnn", "cross_entropy"),
    ],
)
def test_feedback_equal_to_W_gives_the_bp_direction(model_name, loss_name):
    with jax.enable_x64(True):
        model, loss = MODELS[model_name](), get_loss(loss_name)
        params = _params(model)
        batch = _batch(model)
        grads = _bp(model, loss, params, batch)
        # the control variant: B is W itself
        sym = fa(model, loss, feedback="symmetric")
        d_sym, _, m = jax.jit(sym.update)(
            params,
            _init(sym, params),
            batch,
            jax.random.PRNGKey(2),
        )
        assert tree_allclose(d_sym, grads, rtol=1e-10, atol=1e-12)
        assert np.allclose(np.asarray(m["weight_alignment_deg"][1:]), 0.0, atol=1e-4)
        # plain FA whose fixed B is overwritten by W: the substitution path itself
        rule = fa(model, loss, feedback="random")
        update = jax.jit(rule.update)
        state = _init(rule, params)
        d_rand, _, _ = update(params, state, batch, jax.random.PRNGKey(2))
        assert not tree_allclose(d_rand[:-1], grads[:-1], rtol=1e-3, atol=1e-6)
        state = state._replace(B=tuple(p["kernel"] for p in params[1:]))
        d_eq, _, _ = update(params, state, batch, jax.random.PRNGKey(2))
        assert tree_allclose(d_eq, grads, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------
# A slow, obvious numpy implementation of FA on a 2-hidden-layer tanh net.


def numpy_fa(params, B, x, y):
    """Loop-free textbook FA: forward, softmax CE, delta sent down through B."""
    W = [np.asarray(p["kernel"]) for p in params]
    b = [np.asarray(p["bias"]) for p in params]
    x = np.asarray(x)
    h0 = x
    a1 = h0 @ W[0] + b[0]
    h1 = np.tanh(a1)
    a2 = h1 @ W[1] + b[1]
    h2 = np.tanh(a2)
    a3 = h2 @ W[2] + b[2]
    p = np.exp(a3 - a3.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    t = np.eye(a3.shape[1])[np.asarray(y)]
    n = x.shape[0]
    e = (p - t) / n  # dL/da3 for the mean softmax cross-entropy
    dW3, db3 = h2.T @ e, e.sum(0)
    d2 = (e @ B[2].T) * (1 - h2**2)  # B[2] replaces W3 (shape [n2, n_out])
    dW2, db2 = h1.T @ d2, d2.sum(0)
    d1 = (d2 @ B[1].T) * (1 - h1**2)  # B[1] replaces W2
    dW1, db1 = h0.T @ d1, d1.sum(0)
    return [
        {"kernel": dW1, "bias": db1},
        {"kernel": dW2, "bias": db2},
        {"kernel": dW3, "bias": db3},
    ]


def _angle(u, v):
    u, v = np.ravel(u), np.ravel(v)
    c = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return math.degrees(math.acos(np.clip(c, -1, 1)))


@pytest.mark.parametrize("feedback", VARIANTS)
def test_fa_matches_a_numpy_reference(feedback):
    with jax.enable_x64(True):
        model = mlp((4,), 3, hidden=(5, 6), activation="tanh")
        loss = get_loss("cross_entropy")
        scale = 0.7
        # B <- B - 0.3 dW - 0.01 B (Kolen-Pollack's optimizer; the others ignore it)
        kp = {
            "optimizer": optax.chain(
                optax.add_decayed_weights(0.01 / 0.3), optax.sgd(0.3)
            )
        }
        rule = fa(
            model, loss, feedback=feedback, scale=scale, init="normal", init_std=1, **kp
        )
        params = _params(model)
        state = _init(rule, params)
        batch = _batch(model, n=5)
        key = jax.random.PRNGKey(3)
        update = jax.jit(rule.update)
        direction, new_state, metrics = update(params, state, batch, key)

        W = [np.asarray(p["kernel"]) for p in params]
        if feedback == "random":
            B = [None, *map(np.asarray, state.B)]
            assert len(state.B) == 2 and state.R == () and state.trainable == ()
        elif feedback == "kp":  # learned: B lives in the rule's trainable parameters
            B = [None, *map(np.asarray, state.trainable.params)]
            assert len(B) == 3 and state.B == () and state.R == ()
        elif feedback == "usf":
            B = [None] + [scale * usf_scale(w.shape) * np.sign(w) for w in W[1:]]
            assert usf_scale(W[1].shape) == pytest.approx(math.sqrt(2 / (5 + 6)))
        elif feedback == "frsf":
            R = [np.asarray(r) for r in state.R]
            assert all((r >= 0).all() for r in R)
            B = [None] + [r * np.sign(w) for r, w in zip(R, W[1:])]
        else:  # brsf: R_l = scale * N(0, 1) drawn from fold_in(step key, l)
            R = [
                scale
                * np.asarray(jax.random.normal(jax.random.fold_in(key, l), W[l].shape))
                for l in (1, 2)
            ]
            B = [None] + [np.abs(r) * np.sign(w) for r, w in zip(R, W[1:])]
            other, _, _ = update(params, state, batch, jax.random.PRNGKey(4))
            assert not np.allclose(other[0]["kernel"], direction[0]["kernel"])
        expected = numpy_fa(params, B, batch.x, batch.y)
        for got, want in zip(direction, expected):
            for k in ("kernel", "bias"):
                np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-13)
        # weight alignment: angle(W_l, B_l), NaN for stage 0 (no feedback below it)
        wa = np.asarray(metrics["weight_alignment_deg"])
        assert wa.shape == (3,) and np.isnan(wa[0])
        np.testing.assert_allclose(
            wa[1:], [_angle(W[l], B[l]) for l in (1, 2)], atol=1e-6
        )
        # the feedback changes only under Kolen-Pollack, and then exactly by its rule:
        # B <- B - 0.3 dW - 0.01 B, with dW the returned direction
        if feedback == "kp":
            pairs = zip(state.trainable.params, new_state.trainable.params)
            for l, (b_old, b_new) in enumerate(pairs, start=1):
                want = b_old - 0.3 * direction[l]["kernel"] - 0.01 * b_old
                np.testing.assert_allclose(b_new, want, rtol=1e-12, atol=1e-14)
        else:
            old, new = (
                jax.tree_util.tree_leaves(state),
                jax.tree_util.tree_leaves(new_state),
            )
            assert len(old) == len(new) == (2 if feedback in ("random", "frsf") else 0)
            for a, b in zip(old, new):
                np.testing.assert_array_equal(a, b)


def train_steps(model, rule, optimizer, steps: int, batch_size: int = 20):
    """``steps`` trainer steps (rule direction -> optimizer) on the toy blobs, as one
    compiled scan. Returns (initial TrainState, final TrainState, per-step metrics)."""
    from tests.test_rule_contract import blobs

    data = blobs()
    per_epoch = len(data.x_train) // batch_size
    idx = (np.arange(steps)[:, None] % per_epoch) * batch_size + np.arange(batch_size)
    xs, ys = jnp.asarray(data.x_train[idx]), jnp.asarray(data.y_train[idx])
    key = jax.random.PRNGKey(0)
    start = init_state(model, rule, optimizer, key)
    step = make_train_step(rule, optimizer)

    def body(state, inp):
        x, y, t = inp
        return step(state, Batch(x, y), jax.random.fold_in(key, t))

    final, metrics = jax.jit(
        lambda s: jax.lax.scan(body, s, (xs, ys, jnp.arange(steps)))
    )(start)
    return start, final, metrics


@pytest.mark.parametrize(
    "feedback,optimizer",
    [
        ("random", optax.adamw(1e-2, weight_decay=0.5)),
        ("frsf", optax.chain(optax.add_decayed_weights(0.5), optax.sgd(0.1))),
    ],
    ids=["random-adamw", "frsf-sgd+l2"],
)
def test_weight_decay_never_touches_the_feedback(feedback, optimizer):
    model = mlp((6,), 3, hidden=(8, 8))
    rule = fa(model, get_loss("cross_entropy"), feedback=feedback)
    start, final, _ = train_steps(model, rule, optimizer, steps=30)
    # the params moved (decay included), the feedback did not move at all
    assert not np.allclose(final.params[1]["kernel"], start.params[1]["kernel"])
    leaves = jax.tree_util.tree_leaves(start.rule_state)
    assert len(leaves) == 2  # stages 1 and 2
    for before, after in zip(leaves, jax.tree_util.tree_leaves(final.rule_state)):
        np.testing.assert_array_equal(before, after)


def test_kolen_pollack_B_and_W_converge_under_matching_sgd_and_decay():
    """optax sgd(lr) after add_decayed_weights(wd) for W and for B: W and B receive
    identical updates, so W - B = (1 - lr*wd)^t (W_0 - B_0)."""
    lr, wd, steps = 0.1, 0.5, 60
    model = mlp((6,), 3, hidden=(8, 8))
    rule = fa(
        model,
        get_loss("cross_entropy"),
        feedback="kp",
        optimizer=optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr)),
    )
    optimizer = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr))
    start, final, metrics = train_steps(model, rule, optimizer, steps=steps)
    for l in (1, 2):
        diff0 = start.params[l]["kernel"] - start.rule_state.trainable.params[l - 1]
        diff = final.params[l]["kernel"] - final.rule_state.trainable.params[l - 1]
        np.testing.assert_allclose(diff, (1 - lr * wd) ** steps * diff0, atol=2e-5)
        # and B itself moved (towards W), it is not frozen
        assert not np.allclose(
            final.rule_state.trainable.params[l - 1],
            start.rule_state.trainable.params[l - 1],
        )
    wa = np.asarray(metrics["weight_alignment_deg"])  # [steps, L]
    assert np.isnan(wa[:, 0]).all()
    assert (wa[-1, 1:] < wa[0, 1:] - 30).all(), (wa[0], wa[-1])


def test_kolen_pollack_runs_the_runs_own_optimizer_on_B(tmp_path):
    """rule=fa rule.feedback=kp optim=adamw: configs/rule/fa.yaml hands the run's
    optimizer to the rule (rule.optimizer: null), so B gets W's Adam step and its own
    decoupled decay: W - B = (1 - lr*wd)^t (W_0 - B_0) exactly, while B moves far."""
    from bp_alternatives.experiment import build_optimizer, build_rule
    from tests.conftest import compose_cfg

    lr, wd, steps = 1e-2, 0.5, 60
    cfg = compose_cfg(
        [
            "rule=fa",
            "rule.feedback=kp",
            "optim=adamw",
            f"optim.lr={lr}",
            f"optim.weight_decay={wd}",
        ]
    )
    assert cfg.rule.optimizer is None  # the run's optim, filled in by build_rule
    model = mlp((6,), 3, hidden=(8, 8))  # sized for train_steps' toy blobs
    _, rule = build_rule(cfg, model, total_steps=steps, steps_per_epoch=steps)
    optimizer = build_optimizer(cfg, total_steps=steps)
    start, final, metrics = train_steps(model, rule, optimizer, steps=steps)
    for l in (1, 2):
        diff0 = start.params[l]["kernel"] - start.rule_state.trainable.params[l - 1]
        diff = final.params[l]["kernel"] - final.rule_state.trainable.params[l - 1]
        np.testing.assert_allclose(diff, (1 - lr * wd) ** steps * diff0, atol=2e-6)
        moved = (
            final.rule_state.trainable.params[l - 1]
            - start.rule_state.trainable.params[l - 1]
        )
        assert float(jnp.linalg.norm(moved)) > 0.5 * float(jnp.linalg.norm(diff0))
    wa = np.asarray(metrics["weight_alignment_deg"])
    assert (wa[-1, 1:] < wa[0, 1:] - 10).all(), (wa[0], wa[-1])


def test_stage_zero_has_no_feedback_and_one_stage_model_is_bp():
    with jax.enable_x64(True):
        model = mlp((4,), 3, hidden=(), activation="tanh")
        loss = get_loss("cross_entropy")
        rule = fa(model, loss)
        params = _params(model)
        state = _init(rule, params)
        assert state.B == () and state.R == ()
        batch = _batch(model)
        d, _, _ = rule.update(params, state, batch, jax.random.PRNGKey(2))
        assert tree_allclose(d, _bp(model, loss, params, batch), rtol=1e-12)


def test_bad_options_fail_at_build_with_clear_errors():
    model = mlp((4,), 3, hidden=(5,))
    loss = get_loss("cross_entropy")
    with pytest.raises(ValueError, match="feedback"):
        fa(model, loss, feedback="transpose")
    zeros = mlp((4,), 3, hidden=(5,), init="zeros")
    with pytest.raises(ValueError, match="all zeros"):
        fa(zeros, loss)  # B drawn like W would be all zeros: no signal
    rule = fa(zeros, loss, init="xavier")  # an explicit B initialiser is fine
    state = rule.init(jax.random.PRNGKey(0), init_params(zeros, jax.random.PRNGKey(0)))
    assert float(jnp.abs(state.B[0]).sum()) > 0
    fa(zeros, loss, feedback="usf")  # usf draws nothing

    class NoKernel(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x * self.param("gain", nn.initializers.ones, (x.shape[-1],))

    odd = Model((Stage(NoKernel(), "tanh"), Stage(nn.Dense(3))), (4,), 3, {})
    with pytest.raises(UnsupportedModelError, match="kernel"):
        fa(odd, loss)


@pytest.mark.slow  # ~5-10 s alone, more on a loaded box
def test_on_digits_fa_learns_and_its_hidden_stages_align():
    """Lillicrap et al.'s observation: the updates come to align with backprop's."""
    data = load_dataset("digits")
    model = mlp(
        data.input_shape, data.num_classes, hidden=(256, 256), activation="tanh"
    )
    out = fit(
        model,
        get_loss("cross_entropy"),
        fa(model, get_loss("cross_entropy")),
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
    first, last = hist[0]["alignment_deg"], hist[-1]["alignment_deg"]
    assert last[-1] < 0.5  # the read-out: true gradient (float32 arccos ~0.03 deg)
    assert all(a < 80 for a in last[:-1]), last  # measured ~74 and ~63 deg
    assert min(last[:-1]) < 70, last
    assert sum(first[:-1]) - sum(last[:-1]) > 30, (first, last)  # from ~90 deg
    # W and B of the top hidden->read-out kernel align too (measured ~66 deg)
    assert hist[-1]["rule/weight_alignment_deg"][-1] < 80


@pytest.mark.slow
def test_cli_sweep_over_every_variant_writes_five_results(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        "-m",
        "rule=fa",
        "rule.feedback=" + ",".join(VARIANTS),
        "trainer.epochs=2",
        "trainer.progress=false",
        f"hydra.sweep.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    found = sorted(tmp_path.rglob("results.json"))
    assert len(found) == 5, found
    seen = set()
    for f in found:
        res = json.loads(f.read_text())
        assert res["rule"] == "fa" and res["status"] == "ok"
        seen.add(res["config"]["rule"]["feedback"])
        assert len(res["history"]) == 2
        assert len(res["history"][-1]["rule/weight_alignment_deg"]) == 3
    assert seen == set(VARIANTS)
