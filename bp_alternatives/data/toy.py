"""Toy datasets that need no file: scikit-learn's 8x8 digits and the four XOR points."""

from __future__ import annotations

import numpy as np

from bp_alternatives.data.dataset import Dataset


def _standardise(x_train: np.ndarray, x_test: np.ndarray):
    """Per-feature standardisation with statistics of the training split only."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant pixels (digits' borders) stay 0
    return (x_train - mean) / std, (x_test - mean) / std


def load_digits(
    test_size: int = 360, standardise: bool = True, split_seed: int = 0
) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    Embedded with scikit-learn, so it never downloads. The train/test split is fixed
    (a permutation from ``split_seed``, 1437 train / 360 test by default), so every
    rule and seed sees the same split. Inputs are flat (64 features), standardised with
    the training split's per-pixel mean and std.
    """
    # Imported here, not at module level: importing sklearn.datasets takes seconds
    # and only data=digits needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int32)
    perm = np.random.RandomState(split_seed).permutation(len(x))
    test, train = perm[:test_size], perm[test_size:]
    x_train, x_test = x[train], x[test]
    if standardise:
        x_train, x_test = _standardise(x_train, x_test)
    else:
        x_train, x_test = x_train / 16.0, x_test / 16.0
    return Dataset(
        x_train.astype(np.float32),
        y[train],
        x_test.astype(np.float32),
        y[test],
        num_classes=10,
        input_shape=(64,),
        name="digits",
    )


def load_xor() -> Dataset:
    """The four XOR points; the test set is the training set (the classic demo)."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0], np.int32)
    return Dataset(
        x, y, x.copy(), y.copy(), num_classes=2, input_shape=(2,), name="xor"
    )
