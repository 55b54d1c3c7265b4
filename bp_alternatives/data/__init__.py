"""The data interface: plain arrays plus metadata, and the loaders that make them.

Modules, one concept each:

- ``dataset``: the ``Dataset`` type and ``validate_dataset``;
- ``toy``: scikit-learn's digits and the XOR points (no files);
- ``files``: where dataset files are found, downloaded, checked and cached;
- ``formats``: the IDX, CIFAR-batch and tar.gz parsers;
- ``prepare``: raw arrays -> ``Dataset`` (scaling, standardising, resizing, splits);
- ``images``: Fashion-MNIST, MNIST and CIFAR-10 from their files;
- ``mnist1d``: MNIST-1D, generated offline;
- ``registry``: ``DATASETS`` and ``load_dataset`` by command-line name.
"""

from bp_alternatives.data.dataset import DataError, Dataset, validate_dataset
from bp_alternatives.data.files import CorruptFileError, DatasetNotFoundError
from bp_alternatives.data.images import load_cifar10, load_fashion_mnist, load_mnist
from bp_alternatives.data.mnist1d import load_mnist1d, make_mnist1d
from bp_alternatives.data.prepare import prepare, resize_images
from bp_alternatives.data.registry import DATASETS, load_dataset
from bp_alternatives.data.toy import load_digits, load_xor

__all__ = [
    "DATASETS",
    "CorruptFileError",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist1d",
    "load_xor",
    "make_mnist1d",
    "prepare",
    "resize_images",
    "validate_dataset",
]
