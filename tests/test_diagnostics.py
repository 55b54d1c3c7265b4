"""with_alignment and bp_alternatives.geometry: the angle and norms reported, against
directions built by hand, and the zero-vector convention (90 degrees)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from bp_alternatives.diagnostics import with_alignment
from bp_alternatives.geometry import angle_deg, global_norm
from bp_alternatives.model import init_params, mlp, output
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch, LearningRule, manual_bp
from tests.conftest import to_f64

CE = get_loss("cross_entropy")


def _setup():
    model = mlp((5,), 3, hidden=(4,), activation="tanh")
    params = to_f64(init_params(model, jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5), jnp.float64)
    y = jnp.arange(8) % 3
    return model, params, Batch(x, y)


def _grads(model, params, batch):
    return jax.grad(lambda p: CE.value(output(model, p, batch.x), batch.y))(params)


@pytest.mark.parametrize("degrees", [0.0, 30.0, 90.0, 135.0])
def test_angle_and_norms_of_a_hand_made_direction(degrees):
    """Stage l's direction = 2|g_l| (cos(t) g_l/|g_l| + sin(t) o_l/|o_l|), with o_l
    orthogonal to the exact gradient g_l: angle t to g_l, norm 2|g_l|."""
    with jax.enable_x64(True):
        model, params, batch = _setup()
        g = _grads(model, params, batch)
        t = math.radians(degrees)

        def rotate(gl, key):
            flat_g, unravel = ravel_pytree(gl)
            r = jax.random.normal(key, flat_g.shape, jnp.float64)
            o = r - jnp.dot(r, flat_g) / jnp.dot(flat_g, flat_g) * flat_g
            n = jnp.linalg.norm(flat_g)
            d = (
                2
                * n
                * (math.cos(t) * flat_g / n + math.sin(t) * o / jnp.linalg.norm(o))
            )
            return unravel(d)

        direction = [rotate(gl, jax.random.PRNGKey(10 + l)) for l, gl in enumerate(g)]
        fake = LearningRule(
            init=lambda key, p: (),
            update=lambda p, s, b, k: (direction, s, {"loss": jnp.zeros(())}),
        )
        _, _, m = with_alignment(fake, model, CE).update(params, (), batch, None)
        norms = [float(jnp.linalg.norm(ravel_pytree(gl)[0])) for gl in g]
        np.testing.assert_allclose(m["alignment_deg"], [degrees] * 2, atol=1e-6)
        np.testing.assert_allclose(m["grad_norm"], norms, rtol=1e-10)
        np.testing.assert_allclose(m["update_norm"], [2 * n for n in norms], rtol=1e-10)


def test_manual_bp_is_at_zero_degrees():
    with jax.enable_x64(True):
        model, params, batch = _setup()
        rule = with_alignment(manual_bp(model, CE), model, CE)
        _, _, m = rule.update(params, rule.init(None, params), batch, None)
        np.testing.assert_allclose(m["alignment_deg"], [0.0, 0.0], atol=1e-5)
        np.testing.assert_allclose(m["update_norm"], m["grad_norm"], rtol=1e-12)


def test_a_zero_direction_is_at_90_degrees_with_zero_norm():
    """The convention of bp_alternatives.geometry: a zero vector is orthogonal to
    everything (also to another zero vector), so alignment stays finite; the norm
    tells it apart from a nonzero orthogonal direction."""
    with jax.enable_x64(True):
        model, params, batch = _setup()
        zero = jax.tree_util.tree_map(jnp.zeros_like, params)
        fake = LearningRule(
            init=lambda key, p: (),
            update=lambda p, s, b, k: (zero, s, {"loss": jnp.zeros(())}),
        )
        _, _, m = with_alignment(fake, model, CE).update(params, (), batch, None)
        np.testing.assert_array_equal(m["alignment_deg"], [90.0, 90.0])
        np.testing.assert_array_equal(m["update_norm"], [0.0, 0.0])
    ones = {"kernel": jnp.ones((2, 2))}
    zeros = {"kernel": jnp.zeros((2, 2))}
    for u, v in [(zeros, ones), (ones, zeros), (zeros, zeros)]:
        assert float(jax.jit(angle_deg)(u, v)) == 90.0
    assert float(global_norm(zeros)) == 0.0


@pytest.mark.parametrize(
    "u, v, degrees",
    [
        ([1.0, 0.0], [0.0, 3.0], 90.0),
        ([1.0, 1.0], [2.0, 2.0], 0.0),
        ([1.0, 0.0], [-1.0, 0.0], 180.0),
        ([1.0, 0.0], [1.0, 1.0], 45.0),
    ],
)
def test_angle_of_plain_vectors(u, v, degrees):
    with jax.enable_x64(True):
        got = float(angle_deg(jnp.array(u), (jnp.array(v),)))
    assert got == pytest.approx(degrees, abs=1e-5)  # arccos near 1: ~1e-6 deg
