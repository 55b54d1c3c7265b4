"""The dataset registry: the names used on the command line (``data=digits``)."""

from __future__ import annotations

from collections.abc import Callable

from bp_alternatives.data.dataset import Dataset
from bp_alternatives.data.images import load_cifar10, load_fashion_mnist, load_mnist
from bp_alternatives.data.mnist1d import load_mnist1d
from bp_alternatives.data.toy import load_digits, load_xor

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "xor": load_xor,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "mnist1d": load_mnist1d,
}


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a dataset by name; unknown names list the valid ones."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid datasets: {sorted(DATASETS)}"
        ) from None
    return loader(**kwargs)
