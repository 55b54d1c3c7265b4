"""The magnitude of FA's and DFA's backward signal on convolutional stages.

Feedback alignment and its sign-concordant variants (``usf``, ``frsf``, ``brsf``,
Kolen-Pollack) send the error down through a feedback kernel ``B`` shaped like each
conv kernel, drawn from the stage's own initialiser (biotorch, Sanfiz & Akrout 2021:
xavier ``W`` and xavier ``B``; the sign of ``W`` times Glorot's std for ``usf``, after
Xiao et al. 2018). DFA projects the read-out error onto each stage's whole
pre-activation through ``B_l`` uniform in ``+-1/sqrt(n_l)`` (Nøkland 2016). Either
way each hidden stage's direction should have about the norm of backprop's at
initialisation, so one optimizer setting serves every rule; an unscaled sign kernel
or an unscaled DFA projection is ~``sqrt(fan)`` times too large and fails here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_alternatives.model import cnn, init_params
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch, bp, dfa, fa

VARIANTS = ["random", "usf", "frsf", "brsf", "kp", "dfa"]


def small_cnn():
    """conv 4 (3x3) -> pool -> conv 8 -> pool -> dense 16 -> read-out 10, ReLU, He."""
    return cnn((8, 8, 1), 10, channels=(4, 8), hidden=(16,))


def direction_norm_ratios(variant: str, seeds: int = 3) -> np.ndarray:
    """Mean over ``seeds`` of ``||dW_l|| / ||dW_l bp||`` per stage at init."""
    model, loss = small_cnn(), get_loss("cross_entropy")
    rule = dfa(model, loss) if variant == "dfa" else fa(model, loss, feedback=variant)
    reference = bp(model, loss)
    ratios = []
    for s in range(seeds):
        kp, kx, ky = jax.random.split(jax.random.PRNGKey(s), 3)
        params = init_params(model, kp)
        batch = Batch(
            jax.random.normal(kx, (16, 8, 8, 1)), jax.random.randint(ky, (16,), 0, 10)
        )
        got, _, _ = rule.update(params, rule.init(kp, params), batch, kp)
        want, _, _ = reference.update(params, reference.init(kp, params), batch, kp)
        ratios.append(
            [
                float(jnp.linalg.norm(g["kernel"]) / jnp.linalg.norm(w["kernel"]))
                for g, w in zip(got, want)
            ]
        )
    return np.mean(ratios, axis=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_conv_stages_get_backprops_direction_norm_at_init(variant):
    ratios = direction_norm_ratios(variant)
    np.testing.assert_allclose(ratios[-1], 1.0, rtol=1e-5)  # read-out: true gradient
    assert np.all((ratios[:-1] > 0.1) & (ratios[:-1] < 2.5)), (variant, ratios)
