"""Preprocessing shared by the file-backed datasets and MNIST-1D: arrays -> ``Dataset``.

``prepare`` takes these options (each loader passes its ``**options`` through):

- ``scale``: pixels ``uint8 -> [0, 1]`` (``/ 255``);
- ``standardise``: subtract the training split's mean and divide by its std, one
  scalar per channel (Fashion-MNIST: 0.2860 / 0.3530, as biotorch uses);
- ``flatten``: ``[N, D]`` vectors for MLPs; otherwise images ``[N, H, W, C]``
  (MNIST-1D: ``[N, 40, 1]``). The data configs read it from the model config, so
  ``model=cnn`` gets images and ``model=mlp`` gets vectors without further flags;
- ``resize`` (side length) with ``resize_mode``: ``bilinear`` (as torchvision's
  ``Resize`` on a PIL image, which biotorch's LeNet benchmark applies to 28x28
  digits to make 32x32 inputs, less PIL's rounding back to uint8) or ``pad`` (zero
  border, as LeCun et al. 1998 framed 28x28 digits in 32x32);
- ``val_fraction``: a validation split carved at random (``split_seed``) from the
  training split, returned as ``x_val`` / ``y_val``; the test split is untouched;
- ``train_subset`` / ``test_subset``: a random subset of that many examples (quick
  experiments, tests).
"""

from __future__ import annotations

import numpy as np

from bp_alternatives.data.dataset import Dataset, check_finite, check_not_empty


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear interpolation weights ``[n_out, n_in]`` with half-pixel centres
    (``align_corners=False``), sources clamped at the border: what PIL's bilinear
    filter does when enlarging (torchvision ``Resize``). Not an antialiasing filter,
    so use it to enlarge only."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def resize_images(x: np.ndarray, size: int, mode: str = "bilinear") -> np.ndarray:
    """``[N, H, W, C] -> [N, size, size, C]``: bilinear enlargement or zero padding."""
    n, h, w, c = x.shape
    if (h, w) == (size, size):
        return x
    if size < max(h, w):
        raise ValueError(
            f"data.resize={size} would shrink {h}x{w} images; only enlarging"
        )
    if mode == "pad":
        top, left = (size - h) // 2, (size - w) // 2
        out = np.zeros((n, size, size, c), x.dtype)
        out[:, top : top + h, left : left + w] = x
        return out
    if mode == "bilinear":
        mh = _resize_matrix(h, size).astype(x.dtype)  # [size, H]
        mw = _resize_matrix(w, size).astype(x.dtype)  # [size, W]
        planes = np.moveaxis(x, -1, 1)  # [N, C, H, W]
        return np.moveaxis(mh @ planes @ mw.T, 1, -1)
    raise ValueError(f"unknown data.resize_mode {mode!r}; valid: ['bilinear', 'pad']")


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (last axis) mean and std of ``x``, summed in float64."""
    axes = tuple(range(x.ndim - 1))
    n = float(np.prod(x.shape[:-1]))
    mean = x.sum(axis=axes, dtype=np.float64) / n
    var = np.square(x).sum(axis=axes, dtype=np.float64) / n - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _subset(rng, x, y, n):
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(rng.permutation(len(x))[: int(n)])
    return x[idx], y[idx]


def _splits(name, arrays, val_fraction, split_seed, train_subset, test_subset):
    """``(x_tr, y_tr, x_va, y_va, x_te, y_te)``: the subsets, then a validation split
    carved at random from the (subset of the) training split; ``None`` without one."""
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.RandomState(split_seed)
    x_tr, y_tr = _subset(rng, arrays["x_train"], arrays["y_train"], train_subset)
    x_te, y_te = _subset(rng, arrays["x_test"], arrays["y_test"], test_subset)
    x_va = y_va = None
    n_val = int(round(float(val_fraction) * len(x_tr)))
    check_not_empty(
        name,
        len(x_tr) - n_val,
        f"data.train_subset={train_subset} and data.val_fraction={val_fraction} "
        f"(of {len(arrays['x_train'])} training examples)",
    )
    if n_val > 0:
        perm = rng.permutation(len(x_tr))
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        x_va, y_va, x_tr, y_tr = x_tr[val], y_tr[val], x_tr[train], y_tr[train]
    return x_tr, y_tr, x_va, y_va, x_te, y_te


def _to_float(x: np.ndarray, is_image: bool, scale: bool) -> np.ndarray:
    """A float32 copy with a channel axis (``[N, H, W, 1]`` / ``[N, L, 1]`` when the
    input has none), pixels divided by 255 when ``scale``."""
    x = np.array(x, np.float32)  # a copy: the in-place ops of prepare may use it
    if x.ndim == (3 if is_image else 2):
        x = x[..., None]
    if scale and is_image:
        np.divide(x, 255.0, out=x)
    return x


def prepare(
    name: str,
    arrays: dict[str, np.ndarray],
    num_classes: int,
    *,
    scale: bool = True,
    standardise: bool = True,
    flatten: bool = True,
    resize: int | None = None,
    resize_mode: str = "bilinear",
    val_fraction: float = 0.0,
    split_seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> Dataset:
    """Raw arrays (images ``[N, H, W]``/``[N, H, W, C]`` uint8, or signals ``[N, L]``)
    -> ``Dataset`` with the options described in the module docstring."""
    x_tr, y_tr, x_va, y_va, x_te, y_te = _splits(
        name, arrays, val_fraction, split_seed, train_subset, test_subset
    )
    is_image = arrays["x_train"].dtype == np.uint8
    if not is_image:  # the real index of a NaN, before standardising spreads it
        for split, x in (("train", x_tr), ("val", x_va), ("test", x_te)):
            if x is not None:
                check_finite(x, f"dataset {name!r}, {split} split")
    xs = [
        None if x is None else _to_float(x, is_image, scale) for x in (x_tr, x_va, x_te)
    ]
    mean, std = _channel_stats(xs[0])  # the training split's, before any resize
    out = []
    for x in xs:
        if x is None:
            out.append(None)
            continue
        if resize is not None:
            if not is_image:
                raise ValueError(f"data.resize applies to images, not to {name}")
            x = resize_images(x, int(resize), resize_mode)
        if standardise:
            x -= mean
            x /= std
        out.append(x.reshape(len(x), -1) if flatten else x)
    x_tr, x_va, x_te = out

    def as_labels(y):
        return None if y is None else np.asarray(y, np.int32)

    return Dataset(
        x_tr,
        as_labels(y_tr),
        x_te,
        as_labels(y_te),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_tr.shape[1:]),
        name=name,
        x_val=x_va,
        y_val=as_labels(y_va),
    )
