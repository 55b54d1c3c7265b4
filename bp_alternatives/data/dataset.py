"""The data interface: a ``Dataset`` (plain arrays plus metadata) and its checks.

A ``Dataset`` holds numpy arrays (``x_*`` float32 ``[N, ...input_shape]``, ``y_*``
int32 ``[N]``) and its metadata. ``validate_dataset`` rejects arrays that cannot be
trained on, naming the dataset, the split and the index.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """Train and test arrays plus metadata.

    ``x_val`` / ``y_val``: a validation split carved from the training data when a
    loader is asked for one (``data.val_fraction``), else ``None``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


class DataError(ValueError):
    """A dataset whose arrays cannot be trained on; the message says where, ``fix``
    (optional) what to change (printed by ``bp_alternatives.cli``)."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


def check_finite(x: np.ndarray, where: str) -> None:
    """DataError naming the first example of ``x`` (``[N, ...]``) with a NaN or an
    inf. Called on the raw arrays before standardising too: one NaN there would make
    the mean, and so every standardised example, NaN."""
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise DataError(f"{where}: non-finite input (NaN or inf) at index {i}")


def check_not_empty(name: str, n_train: int, options: str) -> None:
    """DataError when the options leave the training split without examples."""
    if n_train < 1:
        raise DataError(
            f"dataset {name!r}: {options} leave no training examples",
            fix="a smaller data.val_fraction or data.test_size, or a larger "
            "data.train_subset",
        )


def validate_dataset(ds: Dataset) -> Dataset:
    """Reject non-finite inputs, labels out of range and mismatched lengths/shapes.

    Returns ``ds`` unchanged so it can wrap a loader call.
    """
    splits = ["train", "test"]
    if getattr(ds, "x_val", None) is not None and len(ds.x_val):
        splits.append("val")  # carved from train by data.val_fraction
    for split in splits:
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        where = f"dataset {ds.name!r}, {split} split"
        if len(x) != len(y):
            raise DataError(f"{where}: {len(x)} inputs but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{where}: no examples")
        if tuple(x.shape[1:]) != tuple(ds.input_shape):
            raise DataError(
                f"{where}: inputs have shape {tuple(x.shape[1:])} per example, "
                f"metadata says input_shape={tuple(ds.input_shape)}"
            )
        check_finite(x, where)
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
        bad = (y < 0) | (y >= ds.num_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where}: label {int(y[i])} at index {i} is outside "
                f"[0, {ds.num_classes}) (num_classes={ds.num_classes})"
            )
    return ds
