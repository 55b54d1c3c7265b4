"""Forward-forward (``rule=ff``): its pieces, its direction against a hand-derived
reference, locality, prediction, and learning (a separable toy; digits, slow)."""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bp_alternatives.data import Dataset, load_digits
from bp_alternatives.model import Model, Stage, init_params, mlp, output
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import (
    Batch,
    UnsupportedModelError,
    ff,
    get_rule,
    headline_candidates,
)
from bp_alternatives.rules._forward_forward import (
    embed_label,
    hardest_wrong_labels,
    label_scale_of,
    sample_readout_wrong_labels,
    sample_wrong_labels,
    stage_ranges,
)
from bp_alternatives.train import choose_headline, fit, make_eval_fn
from tests.conftest import compose_cfg, to_f64

CE = get_loss("cross_entropy")


def _modes(pred):
    """Every prediction mode of a ``Prediction``: the headline's, then the others."""
    return {**pred.headline, **pred.others}


# ------------------------------------------------------------------ negatives, labels


def test_wrong_labels_never_true_and_uniform_over_the_wrong_ones():
    c, n = 10, 200_000
    y = jax.random.randint(jax.random.PRNGKey(0), (n,), 0, c)
    y_neg = np.asarray(sample_wrong_labels(jax.random.PRNGKey(1), y, c))
    y = np.asarray(y)
    assert not np.any(y_neg == y)  # exactly never the true label
    assert y_neg.min() >= 0 and y_neg.max() < c
    # every (true, wrong) pair equally likely: chi-square over the 90 off-diagonal
    # cells (80 degrees of freedom given the row totals; p = 1e-4 at about 127)
    counts = np.zeros((c, c))
    np.add.at(counts, (y, y_neg), 1)
    expected = counts.sum(1, keepdims=True) / (c - 1)
    off = ~np.eye(c, dtype=bool)
    chi2 = np.sum(
        (counts - expected)[off] ** 2 / np.broadcast_to(expected, (c, c))[off]
    )
    assert chi2 < 127, chi2
    # a label permutation (the bug avoided) hits the true label ~1/C of the time
    perm = np.random.RandomState(0).permutation(y)
    assert np.mean(perm == y) > 0.05


def test_two_classes_negative_is_the_other_label():
    y = jnp.array([0, 1, 1, 0, 1])
    assert np.array_equal(sample_wrong_labels(jax.random.PRNGKey(3), y, 2), 1 - y)


def test_hard_negatives_are_the_most_confused_wrong_label():
    scores = jnp.array([[5.0, 1.0, 3.0], [0.0, 9.0, 8.0], [1.0, 2.0, 3.0]])
    y = jnp.array([0, 1, 0])
    assert np.array_equal(hardest_wrong_labels(scores, y), [2, 2, 2])
    # sampled from the read-out's softmax over the wrong labels: never the true one,
    # and in proportion to the probabilities
    logits = jnp.log(jnp.array([[0.97, 0.01, 0.02]] * 20000))
    y = jnp.zeros((20000,), jnp.int32)
    s = np.asarray(sample_readout_wrong_labels(jax.random.PRNGKey(0), logits, y))
    assert not np.any(s == 0)
    assert abs(np.mean(s == 2) - 2 / 3) < 0.02


def test_embed_label_writes_the_first_c_features_of_any_shape():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2))
    label = jax.nn.one_hot(jnp.array([0, 2, 1]), 3)
    scale = label_scale_of(x, "max")
    out = embed_label(x, label, scale)
    flat, xflat = np.asarray(out).reshape(3, -1), np.asarray(x).reshape(3, -1)
    np.testing.assert_allclose(
        flat[:, :3], np.asarray(label) * np.abs(xflat).max(1)[:, None]
    )
    np.testing.assert_array_equal(flat[:, 3:], xflat[:, 3:])
    # the scale is each example's own: a prediction never depends on its batch-mates
    np.testing.assert_allclose(label_scale_of(x[:1], "max"), scale[:1])
    np.testing.assert_allclose(label_scale_of(x, 0.5), [0.5, 0.5, 0.5])


# ------------------------------------------------------------- the direction, by hand


def _relu(a):
    return np.maximum(a, 0.0)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_direction(params, x, y, y_neg, c, theta, peer_weight, straight_through):
    """Per-stage FF gradients written out in numpy (float64), dense ReLU stages,
    L2 normalisation, sum goodness, label scale = each example's max |x|."""
    eps, m = 1e-8, 0.9
    b = len(x)
    s = np.abs(x).max(1)

    def embed(lbl):
        xe = x.copy()
        xe[:, :c] = np.eye(c)[lbl] * s[:, None]
        return xe

    def norm(v):
        return v / (np.linalg.norm(v, axis=1, keepdims=True) + eps)

    zp, zn = norm(embed(y)), norm(embed(y_neg))
    grads, g_pos, g_neg = [], [], []
    for p in params[:-1]:
        w, bias = np.asarray(p["kernel"]), np.asarray(p["bias"])
        ap, an = zp @ w + bias, zn @ w + bias
        hp, hn = _relu(ap), _relu(an)
        gp, gn = (hp**2).sum(1), (hn**2).sum(1)
        # L = mean_B softplus(theta - G+) + softplus(G- - theta); dG/da = 2 h f'(a)
        # and h f'(a) = h for ReLU
        dap = (-_sigmoid(theta - gp) / b)[:, None] * 2 * hp
        dan = (_sigmoid(gn - theta) / b)[:, None] * 2 * hn
        # peer: r = 0.5 m + mean_B(h+) (1 - m); P = mean_j (mean(r) - r_j)^2;
        # dP/dr_j = (2/D)(r_j - mean(r)); dr_j/dh_bj = (1 - m)/B
        r = 0.5 * m + hp.mean(0) * (1 - m)
        d = w.shape[1]
        gate = 1.0 if straight_through else (ap > 0)
        dap = dap + peer_weight * (2 / d) * (r - r.mean()) * (1 - m) / b * gate
        grads.append({"kernel": zp.T @ dap + zn.T @ dan, "bias": (dap + dan).sum(0)})
        g_pos.append(gp.mean())
        g_neg.append(gn.mean())
        zp, zn = norm(hp), norm(hn)
    last = params[-1]
    grads.append({k: np.zeros_like(v) for k, v in last.items()})
    return grads, np.array(g_pos), np.array(g_neg)


def _tiny(c=3, d=6, hidden=(5, 4, 3), activation="relu"):
    return mlp((d,), c, hidden=hidden, activation=activation)


def _generic_params(model, seed):
    """float64 params with non-zero biases: a generic point, where no pre-activation
    is exactly 0 (a stage whose units are all off would feed the next one z = 0, and
    jnp.maximum splits its gradient at such a tie)."""
    params = to_f64(init_params(model, jax.random.PRNGKey(seed)))
    rng = np.random.RandomState(seed)
    return tuple(
        dict(p, bias=jnp.asarray(rng.normal(0, 0.1, p["bias"].shape))) for p in params
    )


@pytest.mark.parametrize(
    "negatives,peer_weight,straight_through",
    [
        ("random", 0.0, False),
        ("random", 0.7, False),
        ("random", 0.7, True),
        ("hard", 0.0, False),
    ],
)
def test_direction_matches_hand_derived_reference(
    negatives, peer_weight, straight_through
):
    with jax.enable_x64(True):
        model = _tiny()
        params = _generic_params(model, 0)
        rng = np.random.RandomState(0)
        x, y = rng.normal(size=(8, 6)), rng.randint(0, 3, size=8)
        batch, key = Batch(jnp.asarray(x), jnp.asarray(y)), jax.random.PRNGKey(2)
        rule = ff(
            model,
            CE,
            threshold=0.8,
            negatives=negatives,
            peer_weight=peer_weight,
            straight_through=straight_through,
        )
        state = rule.init(jax.random.PRNGKey(1), params)
        direction, _, metrics = rule.update(params, state, batch, key)
        if negatives == "random":  # the rule draws them with the step's key
            y_neg = sample_wrong_labels(key, batch.y, 3)
        else:  # the most-confused wrong label: argmax of goodness over all stages
            # (goodness_from=auto)
            scores = rule.predict(params, state, batch.x).headline["goodness_stages0-2"]
            y_neg = hardest_wrong_labels(scores, batch.y)
        y_neg = np.asarray(y_neg)
        assert not np.any(y_neg == y)
        ref, g_pos, g_neg = reference_direction(
            params, x, y, y_neg, 3, 0.8, peer_weight, straight_through
        )
        for l, (got, want) in enumerate(zip(direction, ref)):
            for k in want:
                np.testing.assert_allclose(
                    got[k], want[k], rtol=1e-9, atol=1e-13, err_msg=f"stage {l} {k}"
                )
        assert not np.any(np.asarray(direction[-1]["kernel"]))  # read-out stage: zero
        np.testing.assert_allclose(metrics["goodness_pos"], g_pos, rtol=1e-12)
        np.testing.assert_allclose(metrics["goodness_neg"], g_neg, rtol=1e-12)


# ------------------------------------------------------------------------- locality


def _batch(n=16, d=8, c=4, seed=0):
    rng = np.random.RandomState(seed)
    return Batch(
        jnp.asarray(rng.normal(size=(n, d)), jnp.float32),
        jnp.asarray(rng.randint(0, c, size=n), jnp.int32),
    )


def test_stage_direction_depends_only_on_its_own_objective():
    """Perturbing stage j's objective (its threshold; j = the middle stage, so one
    stage feeds it and one is fed by it) changes stage j's direction and leaves every
    other stage's direction bit-for-bit unchanged."""
    model = _tiny(c=4, d=8, hidden=(6, 5, 4))
    params = init_params(model, jax.random.PRNGKey(0))
    batch, key = _batch(), jax.random.PRNGKey(5)
    base = [1.0, 1.5, 2.0]

    def direction(thresholds):
        rule = ff(model, CE, threshold=thresholds, peer_weight=0.1)
        state = rule.init(jax.random.PRNGKey(1), params)
        return jax.jit(rule.update)(params, state, batch, key)[0]

    d0 = direction(base)
    for j in [1]:
        d1 = direction([t + 0.5 if i == j else t for i, t in enumerate(base)])
        for k in range(3):
            same = all(np.array_equal(d0[k][n], d1[k][n]) for n in ("kernel", "bias"))
            assert same == (k != j), (j, k)


def test_stage_loss_has_no_gradient_into_other_stages():
    """d(stage k's FF loss and peer loss, as the rule computes them)/d(stage j's
    params) is exactly zero for j != k and non-zero for j == k."""
    model = _tiny(c=4, d=8, hidden=(6, 5, 4))
    params = init_params(model, jax.random.PRNGKey(0))
    rule = ff(model, CE, peer_weight=0.1)
    state = rule.init(jax.random.PRNGKey(1), params)
    batch, key = _batch(), jax.random.PRNGKey(5)

    def stage_losses(p):
        m = rule.update(p, state, batch, key)[2]
        return jnp.stack([m["ff_loss"], m["peer_loss"]])  # [2, N]

    jac = jax.jit(jax.jacrev(stage_losses))(params)  # stage j: leaves [2, N, ...]
    for j in range(model.num_stages):
        for k in range(3):
            block = [
                np.asarray(leaf[:, k]) for leaf in jax.tree_util.tree_leaves(jac[j])
            ]
            nonzero = any(np.any(b != 0) for b in block)
            assert nonzero == (j == k), (j, k)


# ----------------------------------------------------------------------- prediction


def test_predict_scores_are_goodness_per_label_and_readout():
    """Each label's score is the goodness of the stack with that label embedded,
    summed over a range of stages; readout = V^T (normalised stages, neutral label).
    goodness_from=auto: one mode per range (the paper's 1..N-1 first), all of them
    headline candidates; goodness_from=1: the mode ``goodness`` (stages 1..N-1) first,
    the single stages, no candidates."""
    with jax.enable_x64(True):
        c = 3
        model = _tiny()
        params = _generic_params(model, 0)
        rule = ff(model, CE)
        state = rule.init(jax.random.PRNGKey(1), params)
        v = np.random.RandomState(2).normal(size=state.trainable.params.shape)
        state = state._replace(
            trainable=state.trainable._replace(params=jnp.asarray(v))
        )
        x = np.random.RandomState(3).normal(size=(7, 6))
        scores = _modes(rule.predict(params, state, jnp.asarray(x)))
        ranges = [(1, 2), (0, 0), (0, 1), (0, 2), (1, 1), (2, 2)]
        assert stage_ranges(3) == ranges
        names = ["goodness_stages1-2", "goodness_stage0", "goodness_stages0-1"]
        names += ["goodness_stages0-2", "goodness_stage1", "goodness_stage2"]
        assert list(scores) == [*names, "readout"]
        assert headline_candidates(rule, model) == tuple(names)
        fixed = ff(model, CE, goodness_from=1)
        fixed_scores = _modes(fixed.predict(params, state, jnp.asarray(x)))
        assert headline_candidates(fixed, model) is None
        assert list(fixed_scores) == ["goodness"] + names[1:2] + names[4:] + ["readout"]
        s = np.abs(x).max(1)

        def stack(label_rows):
            xe = x.copy()
            xe[:, :c] = label_rows * s[:, None]
            z, hs, zs = xe / (np.linalg.norm(xe, axis=1, keepdims=True) + 1e-8), [], []
            for p in params[:-1]:
                h = _relu(z @ np.asarray(p["kernel"]) + np.asarray(p["bias"]))
                z = h / (np.linalg.norm(h, axis=1, keepdims=True) + 1e-8)
                hs.append(h)
                zs.append(z)
            return hs, zs

        g = np.stack(
            [
                np.stack([(h**2).sum(1) for h in stack(np.eye(c)[[lab] * 7])[0]], -1)
                for lab in range(c)
            ],
            1,
        )  # [B, C, N]
        np.testing.assert_allclose(
            fixed_scores["goodness"], g[..., 1:].sum(-1), rtol=1e-10
        )
        for name, (a, b) in zip(names, ranges):
            want = g[..., a : b + 1].sum(-1)
            np.testing.assert_allclose(scores[name], want, rtol=1e-10)
        _, zs = stack(np.full((7, c), 1.0 / c))
        feats = np.concatenate(zs[1:], 1)
        np.testing.assert_allclose(scores["readout"], feats @ v, rtol=1e-7, atol=1e-9)


def separable(n, c=4, d=10, seed=0):
    """Class = which of the last c features is on (plus noise); the first c features
    (overwritten by the label) are noise. Separable with a wide margin."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, c, size=n).astype(np.int32)
    x = rng.normal(0, 0.3, size=(n, d))
    x[np.arange(n), d - c + y] += 2.0
    return jnp.asarray(x, jnp.float32), jnp.asarray(y)


def train(rule, model, x, y, steps, lr=1e-2, batch=32, seed=0):
    """A minimal loop (independent of the trainer): ``steps`` Adam steps on batches
    drawn with replacement; returns params, state and the per-step metrics."""
    params = init_params(model, jax.random.PRNGKey(seed))
    state = rule.init(jax.random.PRNGKey(seed + 1), params)
    opt = optax.adam(lr)

    def body(carry, t):
        params, state, opt_state = carry
        key = jax.random.fold_in(jax.random.PRNGKey(seed + 2), t)
        i = jax.random.randint(key, (batch,), 0, x.shape[0])
        d, state, m = rule.update(params, state, Batch(x[i], y[i]), key)
        upd, opt_state = opt.update(d, opt_state, params)
        return (optax.apply_updates(params, upd), state, opt_state), m

    (params, state, _), metrics = jax.jit(
        lambda c: jax.lax.scan(body, c, jnp.arange(steps))
    )((params, state, opt.init(params)))
    return params, state, metrics


def _accuracy(scores, y):
    return float(jnp.mean(jnp.argmax(scores, -1) == y))


def test_goodness_prediction_is_exact_on_a_separable_problem():
    """Every train and held-out example right by goodness (summed over both stages;
    the first stage alone is exact too) and by the read-out."""
    model = mlp((10,), 4, hidden=(16, 16), activation="relu")
    rule = ff(model, CE, goodness_from=0)
    x, y = separable(256)
    x_test, y_test = separable(256, seed=1)
    params, state, _ = train(rule, model, x, y, steps=300)
    for xs, ys in ((x, y), (x_test, y_test)):
        scores = _modes(rule.predict(params, state, xs))
        assert _accuracy(scores["goodness"], ys) == 1.0
        assert _accuracy(scores["goodness_stage0"], ys) == 1.0
        assert _accuracy(scores["readout"], ys) == 1.0


def test_default_tanh_stack_headline_is_not_the_below_chance_later_stage():
    """The default model's case (tanh stages on digits, here 64-32-32-10): at
    theta = 2 the tanh units work in their linear range, and after the length
    normalisation the second stage's goodness ranks the true label *below chance*
    while the first stage's predicts ~90%. The paper's fixed choice (stages 2..N)
    would report the former; with ``goodness_from=auto`` (the default) every stage
    range is a headline candidate and the trainer's choice on the training split is
    the first stage (or a range holding it), never below chance."""
    data = load_digits()
    model = mlp(data.input_shape, 10, hidden=(32, 32), activation="tanh")
    rule = ff(model, CE)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    params, state, _ = train(rule, model, x, y, steps=300, lr=3e-3, batch=64)
    eval_fn = make_eval_fn(model, CE, rule, chunk=4096)
    splits = {
        "train": dict(eval_fn(params, state, x, y)),
        "test": dict(eval_fn(params, state, x_test, y_test)),
    }
    train_acc = {m: float(splits["train"][f"accuracy/{m}"]) for m in MODES_2}
    assert train_acc["goodness_stage1"] < 0.1, train_acc  # the pathology
    mode = choose_headline(headline_candidates(rule, model), splits)
    assert mode == max(MODES_2, key=train_acc.get) != "goodness_stage1"
    assert float(splits["test"]["accuracy"]) >= 0.85, train_acc


MODES_2 = ("goodness_stage1", "goodness_stage0", "goodness_stages0-1")


@pytest.mark.parametrize("theta", [2.0, 0.25])
def test_positive_goodness_rises_above_theta_negative_falls_below(theta):
    """theta=2: goodness starts below theta (positives must rise above it);
    theta=0.25: it starts above (negatives must fall below it). Every stage."""
    model = mlp((10,), 4, hidden=(16, 16), activation="relu")
    rule = ff(model, CE, threshold=theta)
    x, y = separable(256)
    _, _, m = train(rule, model, x, y, steps=1000)
    first, last = slice(0, 5), slice(-50, None)
    g_pos0, g_neg0 = m["goodness_pos"][first].mean(0), m["goodness_neg"][first].mean(0)
    g_pos1, g_neg1 = m["goodness_pos"][last].mean(0), m["goodness_neg"][last].mean(0)
    if theta > 1:
        assert np.all(g_pos0 < theta) and np.all(g_neg0 < theta), (g_pos0, g_neg0)
    else:
        assert np.all(g_pos0 > theta) and np.all(g_neg0 > theta), (g_pos0, g_neg0)
    assert np.all(g_pos1 > theta), g_pos1
    assert np.all(g_neg1 < theta), g_neg1


# -------------------------------------------------------------- schedule, conv, errors


def test_layerwise_schedule_trains_one_stage_at_a_time():
    model = _tiny(c=4, d=8, hidden=(6, 5, 4))
    params = init_params(model, jax.random.PRNGKey(0))
    rule = ff(model, CE, schedule="layerwise", steps_per_stage=2)
    state = rule.init(jax.random.PRNGKey(1), params)
    update = jax.jit(rule.update)
    for t, stage in enumerate([0, 0, 1, 1, 2, 2, 2, 2]):
        d, state, m = update(params, state, _batch(seed=t), jax.random.PRNGKey(t))
        assert np.array_equal(m["stage_active"], np.eye(3)[stage]), t
        for l in range(model.num_stages):
            moved = any(np.any(leaf != 0) for leaf in jax.tree_util.tree_leaves(d[l]))
            assert moved == (l == stage), (t, l)
    assert int(state.step) == 8


def _conv_model(c=3):
    stages = (
        Stage(nn.Conv(4, (3, 3), name="conv_0"), "relu", name="conv_0"),
        Stage(nn.Conv(5, (3, 3), name="conv_1"), "relu", "flatten", name="conv_1"),
        Stage(nn.Dense(c, name="readout"), name="readout"),
    )
    return Model(stages, (6, 6, 1), c, {"name": "tiny_cnn"})


@pytest.mark.slow
def test_convolutional_stages_goodness_over_feature_maps():
    model = _conv_model()
    params = init_params(model, jax.random.PRNGKey(0))
    rule = ff(model, CE, goodness_from=0, peer_weight=0.1)
    state = rule.init(jax.random.PRNGKey(1), params)
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 6, 6, 1))
    y = jnp.array([0, 1, 2, 0])
    d, new_state, m = jax.jit(rule.update)(
        params, state, Batch(x, y), jax.random.PRNGKey(3)
    )
    for dl, pl in zip(jax.tree_util.tree_leaves(d), jax.tree_util.tree_leaves(params)):
        assert dl.shape == pl.shape and bool(jnp.all(jnp.isfinite(dl)))
    assert all(float(jnp.abs(d[l]["kernel"]).sum()) > 0 for l in (0, 1))
    assert [r.shape for r in new_state.running_mean] == [(6, 6, 4), (6, 6, 5)]
    # stage 0's goodness for label 1 by hand: conv over the normalised embedded image
    scores = _modes(jax.jit(rule.predict)(params, state, x))
    xe = embed_label(x, jnp.tile(jnp.eye(3)[1], (4, 1)), label_scale_of(x, "max"))
    z = xe / (jnp.sqrt(jnp.sum(xe**2, axis=(1, 2, 3), keepdims=True)) + 1e-8)
    h = jax.nn.relu(model.stages[0].linear.apply({"params": params[0]}, z))
    np.testing.assert_allclose(
        scores["goodness_stage0"][:, 1], jnp.sum(h**2, axis=(1, 2, 3)), rtol=1e-5
    )


def test_bad_configurations_fail_with_the_field_named():
    with pytest.raises(UnsupportedModelError, match="hidden stage"):
        ff(mlp((8,), 4, hidden=()), CE)
    with pytest.raises(UnsupportedModelError, match="first 10 input features"):
        ff(mlp((6,), 10, hidden=(4,)), CE)
    with pytest.raises(ValueError, match="rule.goodness_from=1"):
        # one hidden stage: nothing left to sum
        ff(mlp((8,), 4, hidden=(4,)), CE, goodness_from=1, readout_from=0)
    with pytest.raises(ValueError, match="rule.readout_from=1"):
        ff(mlp((8,), 4, hidden=(4,)), CE)
    with pytest.raises(ValueError, match="rule.goodness_from='last'.*'auto'"):
        ff(mlp((8,), 4, hidden=(4, 4)), CE, goodness_from="last")
    one_stage = mlp((8,), 4, hidden=(4,))
    one = ff(one_stage, CE, readout_from=0)  # fine: one mode, no choice
    p1 = init_params(one_stage, jax.random.PRNGKey(0))
    pred = one.predict(p1, one.init(None, p1), jnp.ones((2, 8)))
    assert list(pred.headline) == ["goodness_stage0"]
    assert headline_candidates(one, one_stage) is None
    model = _tiny(c=4, d=8)
    with pytest.raises(ValueError, match="steps_per_stage"):
        ff(model, CE, schedule="layerwise")
    with pytest.raises(ValueError, match="rule.negatives"):
        ff(model, CE, negatives="permute")
    with pytest.raises(ValueError, match="rule.threshold has 2 values for 3"):
        ff(model, CE, threshold=[1.0, 2.0])
    with pytest.raises(ValueError, match="rule.threshold"):
        ff(model, CE, threshold="auto")


# ------------------------------------------------------------------ configs, digits


@pytest.mark.slow
def test_rule_config_runs_end_to_end(cfg_factory):
    from bp_alternatives.experiment import run

    cfg = cfg_factory(
        "rule=ff", "model.activation=relu", "model.hidden=[32,32]", "trainer.epochs=2"
    )
    res = run(cfg)
    final, pred = res["final"], res["prediction"]
    assert pred["chosen_on"] == "train" and pred["mode"] in pred["candidates"]
    assert final["test_accuracy"] == final[f"test_accuracy/{pred['mode']}"]
    assert "test_accuracy/readout" in final and "test_accuracy/goodness_stage0" in final
    last = res["history"][-1]
    for k in ("ff_loss", "goodness_pos", "goodness_neg", "ff_accuracy"):
        assert len(last[f"rule/{k}"]) == 2, k


def test_reported_loss_is_the_readouts_cross_entropy():
    """train_loss / test_loss for ff: the cross-entropy of the rule's own softmax
    read-out (neutral label, stages readout_from..N-1), not of the unused model
    read-out stage."""
    from bp_alternatives.train import make_eval_fn

    data = load_digits()
    model = mlp(data.input_shape, 10, hidden=(16, 16), activation="relu")
    rule = ff(model, CE)
    params = init_params(model, jax.random.PRNGKey(0))
    state = rule.init(jax.random.PRNGKey(1), params)
    V = jax.random.normal(jax.random.PRNGKey(2), state.trainable.params.shape)
    state = state._replace(trainable=state.trainable._replace(params=V))
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    got = make_eval_fn(model, CE, rule, chunk=100)(params, state, x, y)
    logits = rule.predict(params, state, x).others["readout"]
    want = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    assert float(got["loss"]) == pytest.approx(float(want), rel=1e-5)
    plain = CE.value(output(model, params, x), y)
    assert abs(float(plain) - float(want)) > 0.1


def test_layerwise_epochs_per_stage_become_steps():
    """rule.epochs_per_stage=2 on digits (batch 64): steps_per_stage = 2 * steps/epoch,
    so training switches stage after exactly two epochs."""
    from bp_alternatives.experiment import (
        build_data,
        build_model,
        build_rule,
        run_steps,
    )

    cfg = compose_cfg(
        [
            "rule=ff",
            "model.activation=relu",
            "rule.schedule=layerwise",
            "rule.epochs_per_stage=2",
        ]
    )
    data = build_data(cfg)
    model = build_model(cfg, data)
    total, per_epoch = run_steps(cfg, data)
    assert per_epoch == len(data.x_train) // 64
    _, rule = build_rule(cfg, model, total, per_epoch)
    params = init_params(model, jax.random.PRNGKey(0))
    state = rule.init(jax.random.PRNGKey(1), params)
    batch = Batch(jnp.asarray(data.x_train[:64]), jnp.asarray(data.y_train[:64]))
    for t, want_active in ((2 * per_epoch - 1, 0), (2 * per_epoch, 1)):
        st = state._replace(step=jnp.int32(t))
        d, _, _ = rule.update(params, st, batch, jax.random.PRNGKey(t))
        norms = [float(optax.tree.norm(p)) for p in d[:2]]
        assert norms[want_active] > 0 and norms[1 - want_active] == 0, (t, norms)
    with pytest.raises(ValueError, match="not both"):
        build_rule(
            compose_cfg(
                ["rule=ff", "rule.epochs_per_stage=2", "rule.steps_per_stage=5"]
            ),
            model,
            total,
            per_epoch,
        )


@pytest.mark.parametrize("experiment", ["hinton2022_ff_mnist", "ff_loewex_mnist"])
def test_experiment_configs_build_the_rule(experiment):
    from bp_alternatives.experiment import build_model, build_rule

    cfg = compose_cfg([f"experiment={experiment}"])
    assert cfg.rule.name == "ff" and cfg.data.name == "mnist"
    assert cfg.paper.test_error.ff in (1.36, 1.45)
    fake = Dataset(
        np.zeros((1, 784), np.float32),
        np.zeros(1, np.int32),
        np.zeros((1, 784), np.float32),
        np.zeros(1, np.int32),
        10,
        (784,),
        "mnist",
    )
    model = build_model(cfg, fake)
    # the run's step counts (50k // 100 per epoch) reach the read-out's cool-down
    name, rule = build_rule(cfg, model, total_steps=500 * 60, steps_per_epoch=500)
    assert name == "ff" and model.num_stages == len(cfg.model.hidden) + 1
    params = jax.eval_shape(lambda k: init_params(model, k), jax.random.PRNGKey(0))
    state = jax.eval_shape(rule.init, jax.random.PRNGKey(0), params)
    assert state.trainable.params.shape == (
        sum(cfg.model.hidden[1:]),
        10,
    )  # stages 2..N


@pytest.mark.slow
def test_digits_two_hidden_relu_stages_reach_90_percent():
    """>= 90% test accuracy on digits with a 2-hidden-stage ReLU MLP
    (64-256-256-10, rule defaults, Adam 1e-3, batch 64, 20 epochs)."""
    data = load_digits()
    model = mlp(
        data.input_shape, data.num_classes, hidden=(256, 256), activation="relu"
    )
    rule = get_rule("ff")(model, CE)
    t0 = time.perf_counter()
    out = fit(
        model,
        CE,
        rule,
        optax.adam(1e-3),
        data,
        epochs=20,
        batch_size=64,
        key=jax.random.PRNGKey(0),
        progress=False,
    )
    seconds = time.perf_counter() - t0
    f, last = out["final"], out["history"][-1]
    print(
        f"\nff on digits: goodness {f['test_accuracy']:.4f} "
        f"({out['prediction']['mode']}), readout "
        f"{f['test_accuracy/readout']:.4f}, per stage "
        f"{[round(f[f'test_accuracy/goodness_stage{l}'], 4) for l in range(2)]}, "
        f"{seconds:.1f} s"
    )
    assert out["status"] == "ok"
    assert f["test_accuracy"] >= 0.9
    assert f["test_accuracy/readout"] >= 0.9
    assert all(
        p > 2.0 > n
        for p, n in zip(last["rule/goodness_pos"], last["rule/goodness_neg"])
    )
