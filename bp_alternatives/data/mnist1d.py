"""MNIST-1D: a procedurally generated 1-D analogue of MNIST (Greydanus 2020).

Ten 12-point templates (one per digit) are padded, dilated, scaled, translated,
sheared and noised into 40-point signals. Generating it needs no download.

This is an equivalent of ``mnist1d.data.make_dataset`` (package ``mnist1d``
0.0.2.post1) with one difference: that code reseeds numpy's *global* RNG
(``np.random.seed``) and draws from it; here every draw comes from a private
``np.random.RandomState(seed)``, in the same order, so the arrays are the same (the
tests compare them with the package where it is installed) and nothing else in the
process has its random numbers changed.

References:
  Greydanus (2020), "Scaling down deep learning", arXiv:2011.14439;
  github.com/greydanus/mnist1d (``mnist1d/data.py``, ``mnist1d/transform.py``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from bp_alternatives.data import files as df
from bp_alternatives.data.dataset import Dataset
from bp_alternatives.data.files import SPLIT_KEYS
from bp_alternatives.data.prepare import prepare

# Bump when the generator's output changes: it keys the dataset cache
# (``load_mnist1d``), so a cached set made by an older generator is never read back
# as the current one.
GENERATOR_VERSION = 1

# The defaults of mnist1d.data.get_dataset_args(): 4000 train / 1000 test signals.
DEFAULTS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": (36, 60),
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}


def templates() -> dict[str, np.ndarray]:
    """The ten hand-drawn 12-point digit templates, whitened, starting at 0."""
    d = np.asarray(
        [
            [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
            [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
            [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
            [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
            [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
            [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
            [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
            [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
            [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
            [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
        ]
    )
    d -= d.mean(1, keepdims=True)
    d /= d.std(1, keepdims=True)
    d -= d[:, :1]  # each signal starts (and ends) at 0
    return {"x": d / 6.0, "t": np.linspace(-5, 5, d.shape[1]) / 6.0, "y": np.arange(10)}


def _interpolate(x: np.ndarray, n: int) -> np.ndarray:
    """Linear resampling of ``x`` onto ``n`` evenly spaced points over [0, 1].

    ``np.interp`` is what ``scipy.interpolate.interp1d(kind="linear")`` delegates to
    for 1-D float64 data (scipy >= 1.10); older scipy computed the same line through
    the two neighbours with its own formula, equal to within float64 rounding.
    """
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def _transform(x: np.ndarray, rng: np.random.RandomState, a: dict) -> np.ndarray:
    """One example: pad, dilate, scale, translate, noise, shear, subsample."""
    low, high = a["padding"]
    p = low + int(rng.rand() * (high - low + 1))
    new_x = np.concatenate([x + 1e-8, np.zeros(p)])  # pad (the +1e-8 marks the signal)
    new_x = _interpolate(new_x, a["template_len"] + high)  # dilate
    new_x *= 1 + a["scale_coeff"] * (rng.rand() - 0.5)  # scale
    k = rng.choice(a["max_translation"])
    new_x = np.concatenate([new_x[-k:], new_x[:-k]])  # translate (k = 0: unchanged)
    mask = new_x != 0  # correlated noise only where there is no signal
    corr = gaussian_filter1d(a["corr_noise_scale"] * rng.randn(*new_x.shape), 2)
    new_x = mask * new_x + (1 - mask) * corr
    new_x = new_x + a["iid_noise_scale"] * rng.randn(*new_x.shape)
    coeff = a["shear_scale"] * (rng.rand() - 0.5)
    new_x = new_x - coeff * np.linspace(-0.5, 0.5, len(new_x))  # shear
    return _interpolate(new_x, a["final_seq_length"])  # subsample


def make_mnist1d(**overrides: Any) -> dict[str, np.ndarray]:
    """Generate MNIST-1D: ``{"x", "y", "x_test", "y_test"}`` (x float64 ``[N, 40]``).

    ``overrides`` change the generator's arguments (``DEFAULTS``). The whole set is
    centred and scaled to unit standard deviation, as the reference does.
    """
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown mnist1d options {unknown}; valid: {sorted(DEFAULTS)}"
        )
    a = {**DEFAULTS, **overrides}
    rng = np.random.RandomState(int(a["seed"]))
    t = templates()
    per_class = int(a["num_samples"]) // len(t["y"])
    xs, ys = [], []
    for label in t["y"]:
        for _ in range(per_class):
            xs.append(_transform(t["x"][label], rng, a))
            ys.append(label)
    perm = rng.permutation(len(ys))
    x = np.stack(xs)[perm]
    y = np.asarray(ys)[perm]
    if a["shuffle_seq"]:
        x = x[..., rng.permutation(int(a["final_seq_length"]))]
    x = (x - x.mean()) / x.std()
    split = int(len(y) * float(a["train_split"]))
    return {"x": x[:split], "y": y[:split], "x_test": x[split:], "y_test": y[split:]}


def load_mnist1d(
    root: str | None = None,
    cache: bool = True,
    flatten: bool = True,
    val_fraction: float = 0.0,
    split_seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    **generator: Any,
) -> Dataset:
    """MNIST-1D: 40-point signals of 10 classes, generated offline (4000 / 1000 by
    default); ``generator`` overrides the generator's arguments (``num_samples``,
    ``seed``, ``shuffle_seq``, ...; see ``DEFAULTS``).

    The generator standardises the whole set itself, so there is no ``scale`` or
    ``standardise`` option. Cached in ``<root>/mnist1d/`` per set of arguments.

    References:
      Greydanus (2020), "Scaling down deep learning", arXiv:2011.14439.
    """
    # the cache key: every generator argument (defaults included) and its version
    spec = {"args": {**DEFAULTS, **generator}, "version": GENERATOR_VERSION}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    path = df.resolve_root(root) / "mnist1d" / f"mnist1d-{key[:16]}.npz"
    arrays = df.load_cache(path, SPLIT_KEYS, need_verified=False) if cache else None
    if arrays is None:
        d = make_mnist1d(**generator)
        arrays = {
            "x_train": d["x"],
            "y_train": d["y"].astype(np.uint8),
            "x_test": d["x_test"],
            "y_test": d["y_test"].astype(np.uint8),
        }
        if cache:
            df.save_cache(path, arrays, verified=True)
    return prepare(
        "mnist1d",
        arrays,
        10,
        scale=False,
        standardise=False,
        flatten=flatten,
        val_fraction=val_fraction,
        split_seed=split_seed,
        train_subset=train_subset,
        test_subset=test_subset,
    )
