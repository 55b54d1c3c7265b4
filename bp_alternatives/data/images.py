"""File-backed image datasets: Fashion-MNIST, MNIST and CIFAR-10.

Each loader finds (or downloads) the published files (``bp_alternatives.data.files``),
parses them (``bp_alternatives.data.formats``), caches the raw arrays, and returns a
``Dataset`` built by ``bp_alternatives.data.prepare.prepare``, whose options
(``scale``, ``standardise``, ``flatten``, ``resize``, ``val_fraction``, subsets) every
loader passes through as ``**options``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bp_alternatives.data import files as df
from bp_alternatives.data.dataset import Dataset
from bp_alternatives.data.files import SPLIT_KEYS, CorruptFileError, FileSpec
from bp_alternatives.data.formats import parse_cifar_batch, parse_idx, read_tar_members
from bp_alternatives.data.prepare import prepare

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# The files and their checksums. "verified" below says how each value was checked.

# Fashion-MNIST (Xiao, Rasul & Vollgraf 2017). sha256 of the *decompressed* IDX files,
# computed here from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (its .gz
# files are recompressed, so their own md5 differs from upstream's; the decompressed
# sizes 47040016 / 60008 / 7840016 / 10008 bytes and the per-class counts match the
# published description). packed_md5: the md5 of the original .gz files as published
# in the dataset's README (shipped in the same Debian package), unused while the
# decompressed sha256 is known; kept as the upstream record.
FASHION_MNIST_FILES = (
    FileSpec(
        "train-images-idx3-ubyte.gz",
        sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        packed_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    FileSpec(
        "train-labels-idx1-ubyte.gz",
        sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        packed_md5="25c81989df183df01b3e8a0aad5dffbe",
    ),
    FileSpec(
        "t10k-images-idx3-ubyte.gz",
        sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        packed_md5="bef4ecab320f06d8554ea6380940ec79",
    ),
    FileSpec(
        "t10k-labels-idx1-ubyte.gz",
        sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        packed_md5="bb300cfdad3c16e7a12a480ee83cd310",
    ),
)
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
FASHION_MNIST_SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)

# MNIST (LeCun et al. 1998). No checksum of the decompressed files is recorded: none
# was computed from a copy of the files. packed_md5 is the md5 of the original .gz
# files as the canonical mirrors serve them, as published in torchvision's
# datasets/mnist.py and repeated identically by independent loaders. A download is
# checked against it; a local copy that is decompressed or recompressed cannot be
# checked (data.verify=false accepts it on the IDX header and length checks alone).
MNIST_FILES = (
    FileSpec(
        "train-images-idx3-ubyte.gz", packed_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"
    ),
    FileSpec(
        "train-labels-idx1-ubyte.gz", packed_md5="d53e105ee54ea40749a09fcbcd1e9432"
    ),
    FileSpec(
        "t10k-images-idx3-ubyte.gz", packed_md5="9fb629c4189551a2d022fa330f9573f3"
    ),
    FileSpec(
        "t10k-labels-idx1-ubyte.gz", packed_md5="ec29112dd5afa0611ce80d1b7f02629c"
    ),
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# CIFAR-10 (Krizhevsky 2009), python version. The checksums are the published ones,
# not recomputed from a copy of the files: the md5 of each extracted batch
# (decompressed bytes) and of the archive as in torchvision's datasets/cifar.py; the
# archive's sha256 as in Keras' datasets/cifar10.py (file_hash), listed beside the same
# md5 by independent provenance records. A download is checked against the
# archive sha256; every batch read (from the archive or from an extracted
# cifar-10-batches-py/ directory) is checked against its md5.
CIFAR10_ARCHIVE = FileSpec(
    "cifar-10-python.tar.gz",
    packed_sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    packed_md5="c58f30108f718f92721af3b95e74349a",
)
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = (
    FileSpec("data_batch_1", md5="c99cafc152244af753f735de768cd75f"),
    FileSpec("data_batch_2", md5="d4bba439e000b95fd0a9bffe97cbabec"),
    FileSpec("data_batch_3", md5="54ebc095f3ab1f0389bbae665268c751"),
    FileSpec("data_batch_4", md5="634d18415352ddfa80567beed471001a"),
    FileSpec("data_batch_5", md5="482c414d41f54cd18b22e5b47cb7c3cb"),
)
CIFAR10_TEST = (FileSpec("test_batch", md5="40351d587109b95175f43aff81a1287e"),)
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

# --------------------------------------------------------------------------------------
# Raw arrays (uint8 images, labels) from files or from the cache


def _idx_arrays(
    dataset: str,
    files: Sequence[FileSpec],
    *,
    root: Path,
    system_dirs: Sequence[str],
    mirrors: Sequence[str],
    download: bool,
    verify: bool,
    timeout: float,
    deadline: float,
    hint: str,
) -> dict[str, np.ndarray]:
    cache = root / dataset / f"{dataset}.npz"
    arrays = df.load_cache(cache, SPLIT_KEYS, need_verified=verify)
    if arrays is not None:
        log.info("%s: loaded from cache %s", dataset, cache)
        return arrays
    paths = df.locate(
        dataset,
        files,
        root=root,
        system_dirs=system_dirs,
        mirrors=mirrors,
        download_ok=download,
        timeout=timeout,
        deadline=deadline,
        verify=verify,
        hint=hint,
    )
    parsed = []
    for spec in files:
        path = paths[spec.name]
        parsed.append(parse_idx(df.load_verified(spec, path, verify), path))
    arrays = dict(zip(SPLIT_KEYS, parsed))
    for split, (xs, ys) in (("train", files[0:2]), ("test", files[2:4])):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        xp, yp = paths[xs.name], paths[ys.name]
        if x.ndim != 3:
            raise CorruptFileError(f"{xp}: images must be [N, H, W], got {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise CorruptFileError(
                f"{yp}: {y.shape} labels for the {len(x)} images in {xp}"
            )
        if len(y) and int(y.max()) >= 10:
            raise CorruptFileError(f"{yp}: label {int(y.max())} outside 0..9")
    df.save_cache(cache, arrays, verified=verify)
    return arrays


def _cifar_arrays(
    *,
    root: Path,
    mirrors: Sequence[str],
    download: bool,
    verify: bool,
    timeout: float,
    deadline: float,
) -> dict[str, np.ndarray]:
    dataset = "cifar10"
    cache = root / dataset / f"{dataset}.npz"
    arrays = df.load_cache(cache, SPLIT_KEYS, need_verified=verify)
    if arrays is not None:
        log.info("%s: loaded from cache %s", dataset, cache)
        return arrays
    members = (*CIFAR10_TRAIN, *CIFAR10_TEST)
    raws: dict[str, tuple[bytes, str]] | None = None
    for d in df.search_dirs(root, dataset):  # an extracted directory wins
        ex = d / CIFAR10_DIR
        if all((ex / m.name).is_file() for m in members):
            raws = {
                m.name: (df.read_packed(ex / m.name), str(ex / m.name)) for m in members
            }
            break
    if raws is None:
        archive = df.locate(
            dataset,
            [CIFAR10_ARCHIVE],
            root=root,
            mirrors=mirrors,
            download_ok=download,
            timeout=timeout,
            deadline=deadline,
            verify=verify,
            hint=f"or put the archive's extracted {CIFAR10_DIR}/ directory there",
        )[CIFAR10_ARCHIVE.name]
        blobs = read_tar_members(archive, [m.name for m in members])
        raws = {n: (b, f"{archive}:{CIFAR10_DIR}/{n}") for n, b in blobs.items()}
    parts: dict[str, list] = {"train": [], "test": []}
    for split, specs in (("train", CIFAR10_TRAIN), ("test", CIFAR10_TEST)):
        for m in specs:
            raw, where = raws[m.name]
            if verify:
                df.check(m, Path(where), raw, raw)
            parts[split].append(parse_cifar_batch(raw, where))
    arrays = {}
    for split, batches in parts.items():
        labels = np.concatenate([b[1] for b in batches])
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= 10):
            raise CorruptFileError(f"cifar10 {split}: a label outside 0..9")
        arrays[f"x_{split}"] = np.concatenate([b[0] for b in batches])
        arrays[f"y_{split}"] = labels.astype(np.uint8)
    df.save_cache(cache, arrays, verified=verify)
    return arrays


# --------------------------------------------------------------------------------------
# Loaders (registered in bp_alternatives.data.DATASETS)


def load_fashion_mnist(
    root: str | None = None,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = df.DEFAULT_TIMEOUT,
    deadline: float = df.DEFAULT_DEADLINE,
    **options: Any,
) -> Dataset:
    """Fashion-MNIST: 60000 train / 10000 test 28x28 grey images of 10 clothing types.

    Looked for in ``root`` (``data.root``), then in Debian's
    ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``),
    then downloaded from the Zalando mirrors; checked by the sha256 of the
    decompressed files. ``options``: see ``prepare``.

    References:
      Xiao, Rasul & Vollgraf (2017), "Fashion-MNIST: a novel image dataset for
      benchmarking machine learning algorithms", arXiv:1708.07747.
    """
    arrays = _idx_arrays(
        "fashion_mnist",
        FASHION_MNIST_FILES,
        root=df.resolve_root(root),
        system_dirs=FASHION_MNIST_SYSTEM_DIRS,
        mirrors=FASHION_MNIST_MIRRORS if mirrors is None else mirrors,
        download=download,
        verify=verify,
        timeout=timeout,
        deadline=deadline,
        hint="or run `apt-get install dataset-fashion-mnist` (Debian, Ubuntu)",
    )
    return prepare("fashion_mnist", arrays, 10, **options)


def load_mnist(
    root: str | None = None,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = df.DEFAULT_TIMEOUT,
    deadline: float = df.DEFAULT_DEADLINE,
    **options: Any,
) -> Dataset:
    """MNIST: 60000 train / 10000 test 28x28 handwritten digits.

    Looked for in ``root``, then downloaded; checked by the md5 of the original
    ``.gz`` files (see ``MNIST_FILES`` for what is and is not verified).

    References:
      LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to
      document recognition", Proc. IEEE 86(11):2278-2324.
    """
    arrays = _idx_arrays(
        "mnist",
        MNIST_FILES,
        root=df.resolve_root(root),
        system_dirs=(),
        mirrors=MNIST_MIRRORS if mirrors is None else mirrors,
        download=download,
        verify=verify,
        timeout=timeout,
        deadline=deadline,
        hint="",
    )
    return prepare("mnist", arrays, 10, **options)


def load_cifar10(
    root: str | None = None,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = df.DEFAULT_TIMEOUT,
    deadline: float = df.DEFAULT_DEADLINE,
    **options: Any,
) -> Dataset:
    """CIFAR-10: 50000 train / 10000 test 32x32 colour images, 10 classes.

    Reads the python-pickle batches from an extracted ``cifar-10-batches-py/`` or from
    ``cifar-10-python.tar.gz`` (in memory, nothing extracted), in ``root``; else
    downloads the archive. Every batch is checked against its published md5 and
    unpickled with a loader that accepts only numpy arrays.

    References:
      Krizhevsky (2009), "Learning multiple layers of features from tiny images",
      tech. report, University of Toronto.
    """
    arrays = _cifar_arrays(
        root=df.resolve_root(root),
        mirrors=CIFAR10_MIRRORS if mirrors is None else mirrors,
        download=download,
        verify=verify,
        timeout=timeout,
        deadline=deadline,
    )
    return prepare("cifar10", arrays, 10, **options)
