"""Normalisation stages: ``a = norm(z)`` between a stage's linear part and its
activation (``model.norm``: ``none`` | ``batchnorm`` | ``layernorm``), with the
hand-written backward ``rules.manual_bp`` calls.

Parameters ``{"scale", "offset"}`` (one per channel, the last axis) live in the
stage's params under ``"norm"``. BatchNorm trains on the batch's statistics and
evaluates on running ones (Ioffe & Szegedy 2015; PyTorch's ``BatchNorm1d``, which the
public DNI code uses): ``model.inference_params`` adds ``{"mean", "var"}`` under
``"norm"``, which switches the forward to them. LayerNorm normalises each example
over all its axes (one group: GroupNorm(1) for convolutional stages) with a
per-channel affine.

References:
  S. Ioffe, C. Szegedy (2015), "Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift", ICML 2015.
  J. L. Ba, J. R. Kiros, G. E. Hinton (2016), "Layer Normalization", arXiv:1607.06450.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

NORMS = ("none", "batchnorm", "layernorm")
NORM_EPS = 1e-5  # PyTorch's BatchNorm1d / LayerNorm default
NORM_MOMENTUM = 0.1  # running <- (1 - m) running + m batch: PyTorch's BatchNorm default


def check_norm(norm: str) -> str:
    """``norm`` if it is one of ``NORMS``; ValueError naming ``model.norm``."""
    if norm not in NORMS:
        raise ValueError(f"unknown model.norm {norm!r}; valid: {list(NORMS)}")
    return norm


def norm_axes(norm: str, z: jax.Array) -> tuple[int, ...]:
    """The axes a normalisation averages over: BatchNorm every axis but the channel
    (the last: batch and space), LayerNorm every axis but the batch (the first)."""
    if norm == "batchnorm":
        return tuple(range(z.ndim - 1))
    return tuple(range(1, z.ndim))


def init_norm(channels: int, dtype) -> dict[str, jax.Array]:
    """``{"scale": ones [C], "offset": zeros [C]}``: starts as the identity affine."""
    return {
        "scale": jnp.ones((channels,), dtype),
        "offset": jnp.zeros((channels,), dtype),
    }


def batch_moments(norm: str, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance of ``z`` over ``norm_axes`` (kept as broadcastable
    axes)."""
    axes = norm_axes(norm, z)
    mu = jnp.mean(z, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(z - mu), axis=axes, keepdims=True)
    return mu, var


def norm_forward(norm: str, pn: dict[str, jax.Array], z: jax.Array) -> jax.Array:
    """``a = scale * (z - mu) / sqrt(var + eps) + offset``.

    ``mu``, ``var``: the batch's (BatchNorm, training), the example's (LayerNorm), or
    the running statistics ``pn["mean"]``, ``pn["var"]`` ``[C]`` when ``pn`` holds
    them (BatchNorm, evaluation). ``"none"``: ``a = z``.
    """
    if norm == "none":
        return z
    if "mean" in pn:
        mu, var = pn["mean"], pn["var"]
    else:
        mu, var = batch_moments(norm, z)
    return pn["scale"] * (z - mu) * jax.lax.rsqrt(var + NORM_EPS) + pn["offset"]


def norm_backward(
    norm: str, pn: dict[str, jax.Array], z: jax.Array, delta_a: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Backward of ``norm_forward`` with batch (or per-example) statistics:
    ``({"scale": d_scale, "offset": d_offset}, delta_z)``.

    With ``zhat = (z - mu) / s``, ``s = sqrt(var + eps)``, ``g = delta_a * scale`` and
    means ``<.>`` over the normalised axes (Ioffe & Szegedy 2015, sec. 3)::

        d_scale = sum_{all but C} delta_a * zhat,   d_offset = sum_{all but C} delta_a
        delta_z = (g - <g> - zhat <g zhat>) / s
    """
    if norm == "none":
        return {}, delta_a
    axes = norm_axes(norm, z)
    mu, var = batch_moments(norm, z)
    inv_s = jax.lax.rsqrt(var + NORM_EPS)
    zhat = (z - mu) * inv_s
    per_channel = tuple(range(z.ndim - 1))
    grads = {
        "scale": jnp.sum(delta_a * zhat, axis=per_channel),
        "offset": jnp.sum(delta_a, axis=per_channel),
    }
    g = delta_a * pn["scale"]
    mean_g = jnp.mean(g, axis=axes, keepdims=True)
    mean_gz = jnp.mean(g * zhat, axis=axes, keepdims=True)
    return grads, (g - mean_g - zhat * mean_gz) * inv_s


def running_update(stats: dict[str, jax.Array], z: jax.Array) -> dict[str, jax.Array]:
    """BatchNorm's running statistics moved toward the batch's (PyTorch's rule:
    momentum ``NORM_MOMENTUM``, the *unbiased* batch variance)."""
    axes = tuple(range(z.ndim - 1))
    n = math.prod(z.shape[a] for a in axes)
    mu, var = batch_moments("batchnorm", z)
    m = NORM_MOMENTUM
    return {
        "mean": (1 - m) * stats["mean"] + m * mu.reshape(-1),
        "var": (1 - m) * stats["var"] + m * var.reshape(-1) * n / max(n - 1, 1),
    }
