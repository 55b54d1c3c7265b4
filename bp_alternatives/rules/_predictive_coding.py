"""Predictive coding (PC): relax value nodes, then learn from local prediction errors.

Stage ``k`` predicts the value node above it from the value node below it; the input is
clamped (``v_{-1} = x``) and the hidden stages' outputs are free value nodes
``v_0 .. v_{L-2}``. With ``B`` examples, per example ``b``:

    prediction   mu_k  = stage_k(theta_k, v_{k-1})                    k = 0..L-1
    error        eps_k = v_k - mu_k                                    k < L-1
                 eps_{L-1} = -gamma * d loss_b / d mu_{L-1}            output error
    free energy  F_b = sum_{k<L-1} 1/2 ||eps_k||^2 + gamma * loss_b(mu_{L-1}, y_b)
    init         v_k = mu_k of the feed-forward pass (every eps_k = 0 but the output's)
    inference    v_k <- v_k - eta * dF_b/dv_k
                      = v_k - eta * (eps_k - (d mu_{k+1} / d v_k)^T eps_{k+1})
    learning     direction_k = -(1 / (gamma B)) sum_b (d mu_k / d theta_k)^T eps_k

``(d mu / d .)^T eps`` is the vjp of one stage, so every update reads only its own
stage's prediction error and input. With ``loss=mse`` and ``gamma = 1`` the output
term is the output value node clamped to the target, ``eps_{L-1} = y - mu_{L-1}``
(Whittington & Bogacz 2017); for any other loss the output error is the loss gradient
(Millidge et al. 2022, the output of an arbitrary computation graph). ``gamma < 1``
nudges instead of clamping: at the equilibrium the errors are ``gamma`` times the
backprop deltas up to ``O(gamma^2)``, so the direction (divided by ``gamma``)
approaches backprop's as ``gamma -> 0`` and as inference converges.

Variants:

    standard          T inference steps, then every stage learns from its error.
    z_il              zero-divergence inference learning (Song et al. 2020): eta = 1,
                      stage k learns at inference step t = L-1-k, the step at which
                      the output error first reaches it; the direction equals
                      backprop's exactly.
    fixed_prediction  the predictions mu_k and the Jacobians stay at their
                      feed-forward values during inference (Millidge et al. 2022): the
                      errors converge to the backprop deltas exactly, eps_k ->
                      (d mu_{k+1}/d v_k)^T eps_{k+1}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bp_alternatives.model import Model, stage_fn
from bp_alternatives.model.losses import Loss
from bp_alternatives.rules._base import LearningRule, UnsupportedModelError

PC_VARIANTS = ("standard", "z_il")

Pull = Callable[[jax.Array], tuple[dict, jax.Array]]  # eps -> (d theta_k, d input_k)


class PredictiveCodingState(NamedTuple):
    """Predictive coding keeps no state between batches: the value nodes start from
    the feed-forward pass on every batch."""


class Relaxed(NamedTuple):
    """The network at some value nodes: every stage's error and vjp (pull)."""

    eps: list[jax.Array]  # eps_0 .. eps_{L-1}   [B, ...] each
    pulls: list[Pull]  # vjp of stage k at its current input
    mu: list[jax.Array]  # mu_0 .. mu_{L-2}, the hidden stages' predictions
    mu_out: jax.Array  # mu_{L-1}, the read-out's prediction [B, C]


def pc_options(
    variant: str = "standard",
    T: int = 20,
    inference_lr: float | None = None,
    gamma: float = 1.0,
) -> float:
    """Check the options of ``rule=pc``; return the inference step size ``eta``.

    ``inference_lr=None`` means the variant's default: 0.1 for ``standard``, 1 for
    ``z_il`` (the only value its exactness holds for). Raises ``ValueError`` naming the
    field, the bad value and the fix.
    """
    if variant not in PC_VARIANTS:
        raise ValueError(
            f"unknown rule.variant {variant!r} for rule=pc; valid: {list(PC_VARIANTS)}"
        )
    if isinstance(T, bool) or int(T) != T or T < 1:
        raise ValueError(f"rule.T (inference steps) must be an integer >= 1, got {T}")
    if not gamma > 0:
        raise ValueError(
            f"rule.gamma (output weight) must be positive, got {gamma}; 1.0 clamps "
            "the output, smaller values nudge it"
        )
    if inference_lr is None:
        return 1.0 if variant == "z_il" else 0.1
    if not inference_lr > 0:
        raise ValueError(f"rule.inference_lr must be positive, got {inference_lr}")
    if variant == "z_il" and inference_lr != 1.0:
        raise ValueError(
            f"rule.variant=z_il needs inference step size 1 (Song et al. 2020), got "
            f"rule.inference_lr={inference_lr}; set rule.inference_lr=1.0 or null"
        )
    return float(inference_lr)


def _mean_norm(e: jax.Array) -> jax.Array:
    """Mean over the batch of each example's error norm ``||eps_b||``."""
    return jnp.mean(jnp.linalg.norm(e.reshape(e.shape[0], -1), axis=-1))


class _Options(NamedTuple):
    """The ``pc`` factory's resolved options, shared by its update's steps."""

    fns: list  # stage_fn of every stage
    loss: Loss
    L: int  # stages
    T: int  # inference steps
    eta: float  # inference step size
    gamma: float  # output weight
    variant: str
    fixed_prediction: bool


def _resolve(
    model: Model, loss: Loss, T, inference_lr, gamma, variant, fixed_prediction
) -> _Options:
    """``pc``'s options checked (errors name the field and the fix) and resolved."""
    eta = pc_options(variant, T, inference_lr, gamma)
    T = int(T)
    L = model.num_stages
    if L < 2:
        raise UnsupportedModelError(
            f"rule=pc needs at least one hidden stage (a value node to infer); the "
            f"model has only the read-out stage {model.stages[0].name!r} (give "
            "model.hidden a width)"
        )
    if variant == "z_il" and T < L - 1:
        raise ValueError(
            f"rule.variant=z_il needs rule.T >= {L - 1} (the output error reaches the "
            f"lowest of the {L - 1} hidden stages at step {L - 1}), got rule.T={T}"
        )
    fns = [stage_fn(s) for s in model.stages]
    return _Options(fns, loss, L, T, eta, gamma, variant, fixed_prediction)


def _relaxed(
    o: _Options, params, x, y, v: Sequence[jax.Array] | None = None
) -> Relaxed:
    """Predictions from the value nodes ``v`` (``None``: the feed-forward pass,
    each stage's input the prediction below it): errors and stage vjps."""
    mus, pulls, h = [], [], x
    for k in range(o.L):
        mu, pull = jax.vjp(o.fns[k], params[k], h)
        mus.append(mu)
        pulls.append(pull)
        h = mu if v is None or k == o.L - 1 else v[k]
    v = mus[:-1] if v is None else v
    B = mus[-1].shape[0]
    eps = [v_k - mu_k for v_k, mu_k in zip(v, mus[:-1], strict=True)]
    eps.append(-o.gamma * B * o.loss.grad(mus[-1], y))  # per-example loss gradient
    return Relaxed(eps, pulls, mus[:-1], mus[-1])


def _fixed(ff: Relaxed, v) -> Relaxed:
    """Fixed prediction: errors from the feed-forward predictions and vjps."""
    eps = [v_k - m_k for v_k, m_k in zip(v, ff.mu, strict=True)]
    return ff._replace(eps=[*eps, ff.eps[-1]])


def _free_energy(o: _Options, net: Relaxed, y) -> jax.Array:
    """``F`` per example, batch mean: hidden errors' energy plus ``gamma`` loss."""
    B = net.mu_out.shape[0]
    hidden = sum(0.5 * jnp.sum(jnp.square(e)) for e in net.eps[:-1]) / B
    return hidden + o.gamma * o.loss.value(net.mu_out, y)


def _infer_step(o: _Options, v, net: Relaxed):
    """One step ``v_k <- v_k - eta dF/dv_k``; also the largest change."""
    dv = [
        o.eta * (net.eps[k] - net.pulls[k + 1](net.eps[k + 1])[1])
        for k in range(o.L - 1)
    ]
    change = jnp.max(jnp.stack([jnp.max(jnp.abs(d)) for d in dv]))
    return [v_k - d for v_k, d in zip(v, dv, strict=True)], change


def _direction_of(o: _Options, net: Relaxed, k: int):
    """Stage ``k``'s local update from its error, on backprop's scale."""
    B = net.mu_out.shape[0]
    return net.pulls[k](-net.eps[k] / (o.gamma * B))[0]


def _update(o: _Options, params, state, batch):
    """Inference on the value nodes, then every stage's local direction."""
    L = o.L
    x, y = batch
    ff = _relaxed(o, params, x, y)  # value nodes start at the feed-forward pass
    at = (
        (lambda v: _fixed(ff, v))
        if o.fixed_prediction
        else (lambda v: _relaxed(o, params, x, y, v))
    )
    v, change = list(ff.mu), jnp.zeros((), ff.mu_out.dtype)
    directions, used = [None] * L, [None] * L
    first = 0
    if o.variant == "z_il":  # stage k learns at step L-1-k (Song et al. 2020)
        net = ff
        for t in range(L):
            k = L - 1 - t
            directions[k], used[k] = _direction_of(o, net, k), net.eps[k]
            if t < L - 1:
                v, change = _infer_step(o, v, net)
                net = at(v)
        first = L - 1

    def body(carry, _):
        v, _ = carry
        return _infer_step(o, v, at(v)), None

    if o.T > first:
        (v, change), _ = jax.lax.scan(body, (v, change), None, length=o.T - first)
    end = _relaxed(o, params, x, y, v)  # the true predictions at the final nodes
    if o.variant == "standard":
        net = at(v) if o.fixed_prediction else end
        for k in range(L):
            directions[k], used[k] = _direction_of(o, net, k), net.eps[k]
    metrics = {
        "loss": o.loss.value(ff.mu_out, y),
        "free_energy_start": _free_energy(o, ff, y),
        "free_energy_end": _free_energy(o, end, y),
        "max_value_change": change,
        "error_norm": jnp.stack([_mean_norm(e) for e in used]),
    }
    return tuple(directions), state, metrics


def pc(
    model: Model,
    loss: Loss,
    *,
    T: int = 20,
    inference_lr: float | None = None,
    gamma: float = 1.0,
    variant: str = "standard",
    fixed_prediction: bool = False,
) -> LearningRule:
    """Predictive coding: ``T`` inference steps on the value nodes, local updates.

    Args:
      model: the stack of stages; it needs at least one hidden stage (a value node).
      loss: the loss on the read-out output; it is the output term of the free
        energy (``mse`` with ``gamma=1``: the output clamped to the target).
      T: inference steps. For ``z_il`` at least ``L-1`` (the hidden stages); the
        steps after the ``L-1``-th leave its direction unchanged.
      inference_lr: the step size ``eta`` of inference; ``None``: 0.1 (standard) or 1
        (``z_il``, which needs 1).
      gamma: weight of the loss in the free energy (1: clamp; small: nudge). The
        direction is divided by ``gamma``, so it stays on backprop's scale.
      variant: ``standard`` | ``z_il`` (zero-divergence inference learning).
      fixed_prediction: hold predictions and Jacobians at their feed-forward values
        during inference.

    Returns a ``LearningRule``; prediction is the feed-forward pass. Metrics: ``loss``
    (the feed-forward loss), ``free_energy_start`` / ``free_energy_end`` (``F`` per
    example, batch mean, before and after inference; the end value always with the
    true predictions at the final value nodes, also under ``fixed_prediction``, whose
    dynamics do not descend ``F``), ``max_value_change`` (the largest change of any
    value node in the last inference step: near 0 once inference has converged),
    ``error_norm`` (``[L]``, per stage the batch mean of ``||eps_k||`` that its update
    used; the last is the output error, ``gamma`` times the loss gradient).

    Raises:
      ValueError: a bad option (see ``pc_options``); ``rule.T < L-1`` with ``z_il``.
      UnsupportedModelError: a model without a hidden stage.

    References:
      Whittington & Bogacz (2017), "An Approximation of the Error Backpropagation
      Algorithm in a Predictive Coding Network with Local Hebbian Synaptic
      Plasticity", Neural Computation 29(5):1229-1262.
      Millidge, Tschantz & Buckley (2022), "Predictive Coding Approximates Backprop
      along Arbitrary Computation Graphs", Neural Computation 34(6):1329-1368 (any
      loss at the output; the fixed prediction assumption).
      Song, Lukasiewicz, Xu & Bogacz (2020), "Can the Brain Do Backpropagation? --
      Exact Implementation of Backpropagation in Predictive Coding Networks",
      NeurIPS 33 (Z-IL).
    """
    o = _resolve(model, loss, T, inference_lr, gamma, variant, fixed_prediction)

    def update_fn(params, state, batch, key):
        del key
        return _update(o, params, state, batch)

    def init_fn(key, params):
        del key, params
        return PredictiveCodingState()

    return LearningRule(init_fn, update_fn)


__all__ = ["PC_VARIANTS", "PredictiveCodingState", "pc", "pc_options"]
