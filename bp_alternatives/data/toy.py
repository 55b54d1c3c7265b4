"""Toy datasets that need no file: scikit-learn's 8x8 digits and the four XOR points."""

from __future__ import annotations

import numpy as np

from bp_alternatives.data.dataset import Dataset, check_not_empty


def _standardise(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Per-feature standardisation with statistics of the training split only."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant pixels (digits' borders) stay 0
    return [(x - mean) / std for x in (x_train, *others)]


def load_digits(
    test_size: int = 360,
    standardise: bool = True,
    split_seed: int = 0,
    val_fraction: float = 0.0,
) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    Embedded with scikit-learn, so it never downloads. The train/test split is fixed
    (a permutation from ``split_seed``, 1437 train / 360 test by default), so every
    rule and seed sees the same split. ``val_fraction`` > 0 carves that share of the
    training split (the permutation's next examples) off as ``x_val`` / ``y_val``; the
    test split is unchanged. Inputs are flat (64 features), standardised with the
    training split's per-pixel mean and std. Raises ``ValueError`` when
    ``val_fraction`` is outside ``[0, 1)``.
    """
    # Imported here, not at module level: importing sklearn.datasets takes seconds
    # and only data=digits needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits

    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    bunch = sklearn_load_digits()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int32)
    perm = np.random.RandomState(split_seed).permutation(len(x))
    test, train = perm[:test_size], perm[test_size:]
    n_val = int(round(float(val_fraction) * len(train)))
    check_not_empty(
        "digits",
        len(train) - n_val,
        f"data.test_size={test_size} and data.val_fraction={val_fraction} "
        f"(of {len(x)} examples)",
    )
    val, train = train[:n_val], train[n_val:]
    xs = [x[train], x[test], x[val]]
    xs = _standardise(*xs) if standardise else [v / 16.0 for v in xs]
    x_train, x_test, x_val = (v.astype(np.float32) for v in xs)
    return Dataset(
        x_train,
        y[train],
        x_test,
        y[test],
        num_classes=10,
        input_shape=(64,),
        name="digits",
        x_val=x_val if n_val else None,
        y_val=y[val] if n_val else None,
    )


def load_xor() -> Dataset:
    """The four XOR points; the test set is the training set (the classic demo)."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0], np.int32)
    return Dataset(
        x, y, x.copy(), y.copy(), num_classes=2, input_shape=(2,), name="xor"
    )
