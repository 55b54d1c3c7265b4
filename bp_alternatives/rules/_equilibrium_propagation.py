"""Equilibrium propagation (EP): learn from the contrast of two relaxed states.

The Dense stages' weights and biases define a layered Hopfield-like energy over the
states ``s_1 .. s_L`` of the hidden stages and the read-out (``L`` = number of
stages), with the input ``x`` clamped::

    E(s)  = sum_l 1/2 ||s_l||^2 - sum_l < rho_{l-1}(s_{l-1}) W_l + b_l , rho_l(s_l) >
            rho_0(s_0) := x,   rho_l = stage l's activation
    F(s)  = E(s) + beta * C(s_L, y)         C: the run's loss on the read-out state
    free phase:    s <- s - epsilon * dE/ds     T1 steps            -> s^0
    nudged phase:  s <- s - epsilon * dF/ds     T2 steps from s^0   -> s^beta
    direction      = (dE/dtheta(s^beta) - dE/dtheta(s^0)) / beta
    symmetric      = (dE/dtheta(s^+beta) - dE/dtheta(s^-beta)) / (2 beta)

As ``beta -> 0`` (states relaxed to their fixed points) the direction tends to the
gradient of ``C(s^0_L, y)`` in ``theta`` (Scellier & Bengio 2017, Theorem 1): it is
descent-signed like a gradient (the parameter change is ``-lr * direction``, which is
the paper's ``Delta W ~ (rho(s_i^beta) rho(s_j^beta) - rho(s_i^0) rho(s_j^0)) /
beta``). One-sided nudging has an ``O(beta)`` bias, symmetric nudging ``O(beta^2)``
(Laborieux et al. 2021). Every sum over examples is a sum of independent per-example
energies: each example relaxes on its own, and the direction is the batch mean.

The prediction is the read-out state ``s^0_L`` of the free phase (not the model's
feed-forward output); train/test loss and the alignment diagnostics' exact gradient
(``Prediction.output``: ``jax.grad`` through the ``T1`` free-phase steps) are
taken on it too.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bp_alternatives.model import Model, Stage, apply_linear, forward
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules._base import (
    LearningRule,
    Prediction,
    UnsupportedModelError,
    refuse_norm,
)

RHOS = ("hard_sigmoid", "sigmoid", "tanh")  # bounded: E is bounded below
READOUT_RHOS = (*RHOS, "identity")  # 1/2 ||s_L||^2 keeps a linear read-out bounded
FREE_INITS = ("zeros", "feedforward")


class EquilibriumPropagationState(NamedTuple):
    """EP keeps nothing between batches: every free phase starts afresh."""


class Relaxed(NamedTuple):
    """The end of a relaxation: states ``s_l`` ``[B, n_l]`` and, per stage, the
    largest ``|s_l(t) - s_l(t-1)|`` of the last step (``[L]``; 0 at convergence)."""

    s: tuple[jax.Array, ...]
    delta: jax.Array


def _check_model(model: Model) -> None:
    """Raise ``UnsupportedModelError`` for the first stage EP has no energy for."""
    refuse_norm(model, "ep", "EP's energy has no term for a normalisation")
    for l, stage in enumerate(model.stages):
        where = f"rule=ep: stage {stage.name!r}"
        if not isinstance(stage.linear, nn.Dense):
            raise UnsupportedModelError(
                f"{where} has a {type(stage.linear).__name__} linear part; EP's energy "
                "is written for Dense stages only (use model=mlp)"
            )
        if stage.post != "none":
            raise UnsupportedModelError(
                f"{where} has post op {stage.post!r}; EP's energy has no term for "
                "pooling or reshaping (use model=mlp)"
            )
        readout = l == model.num_stages - 1
        valid = READOUT_RHOS if readout else RHOS
        if stage.activation not in valid:
            field = "model.output_activation" if readout else "model.activation"
            raise UnsupportedModelError(
                f"{where} has activation {stage.activation!r}; EP needs a bounded "
                f"rho so that the energy is bounded below: set {field} to one of "
                f"{list(valid)} (Scellier & Bengio use hard_sigmoid)"
            )


def energy(
    stages: tuple[Stage, ...], params, s: tuple[jax.Array, ...], a_1: jax.Array
) -> jax.Array:
    """Per-example energy ``E(s)`` ``[B]``.

    ``a_1 = x W_1 + b_1`` ``[B, n_1]`` is the clamped input's drive on stage 1 (passed
    in so a relaxation computes it once); ``s[l]`` ``[B, n_l]`` is stage ``l``'s state.
    """
    rho = [stage.act.fn(s_l) for stage, s_l in zip(stages, s)]
    e = sum(0.5 * jnp.sum(s_l * s_l, axis=-1) for s_l in s)
    e = e - jnp.sum(a_1 * rho[0], axis=-1)
    for l in range(1, len(stages)):
        drive = apply_linear(stages[l], params[l], rho[l - 1])  # rho W_l + b_l
        e = e - jnp.sum(drive * rho[l], axis=-1)
    return e


class _Options(NamedTuple):
    """The ``ep`` factory's resolved options, shared by its update and predict."""

    model: Model
    loss: Loss
    beta: float
    T1: int
    T2: int
    epsilon: float
    symmetric: bool
    random_sign: bool
    free_init: str
    clipped: list[bool]  # per stage: hard_sigmoid states are clipped to [0, 1]


def _resolve(
    model: Model, loss: Loss, beta, T1, T2, epsilon, symmetric, random_sign, free_init
) -> _Options:
    """``ep``'s options checked (ValueError/UnsupportedModelError name the fix)."""
    for name, value in (("beta", beta), ("epsilon", epsilon)):
        if not value > 0:
            raise ValueError(f"rule.{name} must be > 0 for rule=ep, got {value}")
    for name, value in (("T1", T1), ("T2", T2)):
        if int(value) != value or value < 1:
            raise ValueError(f"rule.{name} must be an integer >= 1, got {value}")
    if free_init not in FREE_INITS:
        raise ValueError(
            f"unknown rule.free_init {free_init!r} for rule=ep; valid: "
            f"{list(FREE_INITS)}"
        )
    if symmetric and random_sign:
        raise ValueError(
            "rule.symmetric=true already nudges with +beta and -beta; "
            "set rule.random_sign=false"
        )
    _check_model(model)
    clipped = [stage.activation == "hard_sigmoid" for stage in model.stages]
    return _Options(
        model,
        loss,
        beta,
        int(T1),
        int(T2),
        epsilon,
        symmetric,
        random_sign,
        free_init,
        clipped,
    )


def _relax(o: _Options, params, s, a_1, T, beta_, y) -> Relaxed:
    """``T`` steps of ``s <- s - epsilon dF/ds``; ``beta_ = None``: free phase."""
    stages, L, epsilon = o.model.stages, o.model.num_stages, o.epsilon
    n = a_1.shape[0]

    def F_sum(s):  # sum over examples of F: each example's own dynamics
        F = jnp.sum(energy(stages, params, s, a_1))
        if beta_ is not None:
            F = F + beta_ * n * o.loss.value(s[-1], y)  # n * mean = sum of C_i
        return F

    def step(_, carry):
        s, _ = carry
        grad = jax.grad(F_sum)(s)
        # hard_sigmoid states are clipped to [0, 1] after each step, as in
        # Scellier & Bengio's code (model.py); outside it rho' = 0 and the
        # 1/2 ||s||^2 term alone would pull them back
        new = tuple(
            jnp.clip(s_l - epsilon * g, 0.0, 1.0) if c else s_l - epsilon * g
            for s_l, g, c in zip(s, grad, o.clipped)
        )
        delta = jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in zip(new, s)])
        return new, delta

    delta0 = jnp.zeros((L,), a_1.dtype)
    return Relaxed(*jax.lax.fori_loop(0, T, step, (s, delta0)))


def _free_phase(o: _Options, params, x) -> tuple[Relaxed, jax.Array]:
    """The free phase from ``free_init``; also ``a_1``, the input's drive on stage 1."""
    a_1 = apply_linear(o.model.stages[0], params[0], x)
    if o.free_init == "zeros":
        s = tuple(
            jnp.zeros((x.shape[0], p["kernel"].shape[-1]), a_1.dtype) for p in params
        )
    else:
        s = tuple(c.h for c in forward(o.model, params, x)[1])
    return _relax(o, params, s, a_1, o.T1, None, None), a_1


def _contrast(stages, params, x, s_hi, s_lo, scale):
    """``scale * (dE/dtheta(s_hi) - dE/dtheta(s_lo))``, batch mean."""

    def diff(p):
        a_1 = apply_linear(stages[0], p[0], x)
        e_hi = energy(stages, p, s_hi, a_1)
        return scale * jnp.mean(e_hi - energy(stages, p, s_lo, a_1))

    return jax.grad(diff)(params)


def _update(o: _Options, params, state, batch, key):
    """Free phase, nudged phase(s), the contrast of the two as the direction."""
    stages, loss = o.model.stages, o.loss
    x, y = batch
    free, a_1 = _free_phase(o, params, x)
    s0 = free.s
    b = o.beta
    if o.random_sign:
        b = o.beta * jax.random.rademacher(key, (), a_1.dtype)
    plus = _relax(o, params, s0, a_1, o.T2, b, y)
    if o.symmetric:
        minus = _relax(o, params, s0, a_1, o.T2, -b, y)
        direction = _contrast(stages, params, x, plus.s, minus.s, 0.5 / b)
        delta_nudged = jnp.maximum(plus.delta, minus.delta)
    else:
        direction = _contrast(stages, params, x, plus.s, s0, 1.0 / b)
        delta_nudged = plus.delta
    e_plus = jnp.mean(energy(stages, params, plus.s, a_1))
    metrics = {
        "loss": loss.value(s0[-1], y),
        "energy_free": jnp.mean(energy(stages, params, s0, a_1)),
        "energy_nudged": e_plus + b * loss.value(plus.s[-1], y),
        "delta_free": free.delta,
        "delta_nudged": delta_nudged,
    }
    return direction, state, metrics


def _predict(o: _Options, params, state, x) -> Prediction:
    """The read-out state of the free fixed point ``[B, C]``: output, headline
    and loss output (the direction approximates the gradient of the loss there)."""
    del state
    s_L = _free_phase(o, params, x)[0].s[-1]
    return Prediction(output=s_L, headline={"": s_L}, others={})


def ep(
    model: Model,
    loss: Loss,
    *,
    beta: float = 0.5,
    T1: int = 40,
    T2: int = 4,
    epsilon: float = 0.5,
    symmetric: bool = True,
    random_sign: bool = False,
    free_init: str = "zeros",
) -> LearningRule:
    """Equilibrium propagation on the model's Dense stages.

    Args:
      model: an MLP: Dense stages with no post op; hidden activations (``rho``) in
        ``hard_sigmoid`` (``clip(s, 0, 1)``; states are projected onto ``[0, 1]``
        after every step), ``sigmoid``, ``tanh``; the read-out's in those or
        ``identity``. Anything else raises ``UnsupportedModelError``.
      loss: the cost ``C`` on the read-out state (``mse``: Scellier & Bengio's
        squared error; ``cross_entropy``: the states are the logits).
      beta: nudging strength ``> 0``.
      T1, T2: steps of the free and the nudged phase (``>= 1``).
      epsilon: step size of the gradient dynamics ``> 0``.
      symmetric: nudge with ``+beta`` and ``-beta`` from the free fixed point and take
        the difference over ``2 beta`` (Laborieux et al. 2021).
      random_sign: draw the sign of ``beta`` per batch (from ``key``), as Scellier &
        Bengio's code does; not with ``symmetric``.
      free_init: the free phase starts from ``zeros``, or from the model's
        ``feedforward`` activities (fewer steps to the fixed point). Scellier & Bengio
        start from persistent per-example states instead, which a rule that sees
        batches without their indices cannot keep.

    Metrics: ``loss`` (at the free fixed point), ``energy_free`` (mean ``E(s^0)``),
    ``energy_nudged`` (mean ``F(s^beta)``; symmetric: of the ``+beta`` phase),
    ``delta_free`` / ``delta_nudged`` (``[L]``: largest state change per stage in the
    phase's last step; symmetric: the larger of both phases).

    Raises:
      ValueError: an option out of range (names the option and the fix).
      UnsupportedModelError: a stage EP has no energy for.

    References:
      Scellier & Bengio (2017), "Equilibrium Propagation: Bridging the Gap between
      Energy-Based Models and Backpropagation", Front. Comput. Neurosci. 11:24
      (code: github.com/bscellier/Towards-a-Biologically-Plausible-Backprop).
      Laborieux, Ernoult, Scellier, Bengio, Grollier & Querlioz (2021), "Scaling
      Equilibrium Propagation to Deep ConvNets by Drastically Reducing its Gradient
      Estimator Bias", Front. Neurosci. 15:633674 (symmetric nudging).
    """
    o = _resolve(model, loss, beta, T1, T2, epsilon, symmetric, random_sign, free_init)

    def init_fn(key, params):
        del key, params
        return EquilibriumPropagationState()

    def update_fn(params, state, batch, key):
        return _update(o, params, state, batch, key)

    def predict_fn(params, state, x):
        return _predict(o, params, state, x)

    return LearningRule(init_fn, update_fn, predict=predict_fn)
