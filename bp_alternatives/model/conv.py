"""Convolutions as patches + matrix products, with their own VJP (fast on CPU).

XLA's CPU backend runs small-channel convolutions slowly, and the weight-gradient
convolutions of a backward pass far more slowly still inside the trainer's epoch
``lax.scan``. Written as an explicit im2col (strided slices of the padded input,
stacked) and one matrix product, the forward, the weight gradient and the input
gradient (the matrix product, then col2im: the taps' columns padded back into place
and summed) all run as matmuls, which XLA compiles well in and out of the scan:

    forward   a[b, p, o] = sum_{k, i} x_pad[b, s p + k, i] W[k, i, o]
              a = P(x) @ W_mat,      P(x)[b, p, (k, i)] = x_pad[b, s p + k, i]
    dW        W_mat' = P(x)^T @ delta_a
    delta_x   P^T(delta_a @ W_mat^T)  (col2im, the adjoint of im2col)

``W_mat`` is the ``[*K, in, out]`` kernel reshaped to ``[prod(K) in, out]``. Shapes
are channels last, ``x: [B, *N, in]``, any number of spatial axes (1-D signals, 2-D
images). :func:`conv_general_dilated` is a drop-in for ``lax.conv_general_dilated``
that flax's ``nn.Conv(conv_general_dilated=...)`` calls: it takes the matmul path on
the CPU backend for plain convolutions (no dilation, one feature group, flax's
channels-last layout, non-negative padding) and hands everything else to
``lax.conv_general_dilated``. On GPU/TPU the vendor convolutions (cuDNN, the TPU's
convolution unit) are kept: the matmul path is measured faster on CPU only
(``docs/benchmarks.md``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Pads = tuple[tuple[int, int], ...]


def _out_size(N, K, strides, pads) -> tuple[int, ...]:
    return tuple(
        (n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(N, K, strides, pads)
    )


def _taps(K: Sequence[int]) -> list[tuple[int, ...]]:
    """Every kernel offset, in the row-major order of a ``[*K, ...]`` kernel."""
    return list(itertools.product(*(range(k) for k in K)))


def im2col(x: jax.Array, K: Sequence[int], strides, pads: Pads) -> jax.Array:
    """Patches ``[B, *N, C] -> [B, *M, prod(K) * C]``, ordered ``(k_1, ..., k_n, c)``
    so that a ``[*K, C, O]`` kernel reshaped to ``[prod(K) C, O]`` multiplies them.
    ``M`` is the convolution's output size for ``strides`` and ``pads``."""
    M = _out_size(x.shape[1:-1], K, strides, pads)
    xp = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    cols = [
        xp[
            (
                slice(None),
                *(slice(k, k + s * (m - 1) + 1, s) for k, s, m in zip(t, strides, M)),
                slice(None),
            )
        ]
        for t in _taps(K)
    ]
    c = jnp.stack(cols, axis=-2)  # [B, *M, prod(K), C]
    return c.reshape(*c.shape[:-2], -1)


def col2im(cols: jax.Array, x_shape, K: Sequence[int], strides, pads: Pads):
    """The adjoint of :func:`im2col`: ``[B, *M, prod(K) * C] -> x_shape``; each tap's
    column is padded back to where it was read (zeros between strided taps) and the
    taps are summed; the padding is cropped off."""
    N, C = x_shape[1:-1], x_shape[-1]
    M = cols.shape[1:-1]
    taps = _taps(K)
    cols = cols.reshape(*cols.shape[:-1], len(taps), C)
    Np = [n + lo + hi for n, (lo, hi) in zip(N, pads)]
    zero = jnp.zeros((), cols.dtype)
    out = None
    for i, t in enumerate(taps):
        cfg = [
            (k, np_ - (k + s * (m - 1) + 1), s - 1)
            for k, s, m, np_ in zip(t, strides, M, Np)
        ]
        piece = lax.pad(cols[..., i, :], zero, [(0, 0, 0), *cfg, (0, 0, 0)])
        out = piece if out is None else out + piece
    crop = [(0, 0, 0), *((-lo, -hi, 0) for lo, hi in pads), (0, 0, 0)]
    return lax.pad(out, zero, crop)


def conv_forward(x: jax.Array, W: jax.Array, strides, pads: Pads) -> jax.Array:
    """``a = conv(x, W)`` (cross-correlation, no bias): ``[B, *N, in] -> [B, *M, out]``
    for a ``[*K, in, out]`` kernel, as ``im2col(x) @ W_mat``."""
    return im2col(x, W.shape[:-2], strides, pads) @ W.reshape(-1, W.shape[-1])


def conv_weight_grad(x, delta_a, K: Sequence[int], strides, pads: Pads) -> jax.Array:
    """``dW[k, i, o] = sum_{b, p} x_pad[b, s p + k, i] delta_a[b, p, o]``:
    ``[*K, in, out]``, as ``im2col(x)^T @ delta_a``."""
    P = im2col(x, K, strides, pads)
    g = P.reshape(-1, P.shape[-1]).T @ delta_a.reshape(-1, delta_a.shape[-1])
    return g.reshape(*K, x.shape[-1], delta_a.shape[-1])


def conv_input_grad(delta_a, W: jax.Array, x_shape, strides, pads: Pads):
    """``delta_x = col2im(delta_a @ W_mat^T)``: the gradient with respect to the
    input, shaped ``x_shape``."""
    cols = delta_a @ W.reshape(-1, W.shape[-1]).T
    return col2im(cols, x_shape, W.shape[:-2], strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, W: jax.Array, strides: tuple[int, ...], pads: Pads):
    """:func:`conv_forward` whose VJP is :func:`conv_input_grad` and
    :func:`conv_weight_grad` (equal to ``jax.grad`` of ``lax.conv_general_dilated``
    to float rounding)."""
    return conv_forward(x, W, strides, pads)


def _conv_fwd(x, W, strides, pads):
    return conv_forward(x, W, strides, pads), (x, W)


def _conv_bwd(strides, pads, res, delta_a):
    x, W = res
    return (
        conv_input_grad(delta_a, W, x.shape, strides, pads),
        conv_weight_grad(x, delta_a, W.shape[:-2], strides, pads),
    )


conv.defvjp(_conv_fwd, _conv_bwd)


def explicit_pads(padding, x_shape, K, strides) -> Pads:
    """``(lo, hi)`` per spatial axis from a lax padding string or explicit pairs."""
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x_shape[1:-1], K, strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _channels_last(x_ndim: int, dimension_numbers) -> bool:
    """Whether ``dimension_numbers`` is flax's ``[B, *N, C]`` / ``[*K, in, out]``."""
    if dimension_numbers is None:
        return False
    nd = x_ndim - 2
    sp = "HWDUVXYZ"[:nd]
    want = lax.conv_dimension_numbers(
        (1,) * x_ndim, (1,) * x_ndim, ("N" + sp + "C", sp + "IO", "N" + sp + "C")
    )
    return tuple(dimension_numbers) == tuple(want)


def matmul_path(x_ndim, padding, lhs_dilation, rhs_dilation, dn, groups) -> bool:
    """Whether :func:`conv_general_dilated` takes the patches + matmul path: the
    default backend is CPU and the convolution is a plain one."""
    plain = (
        all(d == 1 for d in (lhs_dilation or ()))
        and all(d == 1 for d in (rhs_dilation or ()))
        and groups == 1
        and _channels_last(x_ndim, dn)
        and (isinstance(padding, str) or all(v >= 0 for p in padding for v in p))
    )
    return plain and jax.default_backend() == "cpu"


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **kwargs,
):
    """``lax.conv_general_dilated``'s signature (what flax's ``nn.Conv`` calls); a
    plain channels-last convolution on CPU runs as :func:`conv`, anything else as
    ``lax.conv_general_dilated`` itself."""
    if kwargs or not matmul_path(
        lhs.ndim,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
            **kwargs,
        )
    strides = tuple(int(s) for s in window_strides)
    pads = explicit_pads(padding, lhs.shape, rhs.shape[:-2], strides)
    return conv(lhs, rhs, strides, pads)
