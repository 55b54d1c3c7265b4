"""Real datasets: Fashion-MNIST, MNIST, CIFAR-10 (from files) and MNIST-1D (generated).

Every loader returns the shared ``Dataset`` (``bp_alternatives.data``) and takes the
same preprocessing options:

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

Where the files come from, how they are checked and cached: ``data_files``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bp_alternatives import data_files as df
from bp_alternatives.data_files import FileSpec
from bp_alternatives.mnist1d import DEFAULTS as MNIST1D_DEFAULTS
from bp_alternatives.mnist1d import GENERATOR_VERSION, make_mnist1d

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

# MNIST (LeCun et al. 1998). NOT verified on this machine: no copy of MNIST could be
# obtained offline, so no checksum of the decompressed files is recorded. packed_md5 is
# the md5 of the original .gz files as the canonical mirrors serve them, as published
# in torchvision's datasets/mnist.py and repeated identically by many independent
# loaders (read via public code search). A download is checked against it; a local
# copy that is decompressed or recompressed cannot be checked (data.verify=false
# accepts it on the IDX header and length checks alone).
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

# CIFAR-10 (Krizhevsky 2009), python version. NOT verified on this machine (no copy
# offline). The md5 of each extracted batch (decompressed bytes) and of the archive are
# as published in torchvision's datasets/cifar.py; the archive's sha256 as in Keras'
# datasets/cifar10.py (file_hash), and listed beside the same md5 by independent
# provenance records (read via public code search). A download is checked against the
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

_KEYS = ("x_train", "y_train", "x_test", "y_test")


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
    hint: str,
) -> dict[str, np.ndarray]:
    cache = root / dataset / f"{dataset}.npz"
    arrays = df.load_cache(cache, _KEYS, need_verified=verify)
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
        verify=verify,
        hint=hint,
    )
    parsed = []
    for spec in files:
        path = paths[spec.name]
        parsed.append(df.parse_idx(df.load_verified(spec, path, verify), path))
    arrays = dict(zip(_KEYS, parsed))
    for split, (xs, ys) in (("train", files[0:2]), ("test", files[2:4])):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        xp, yp = paths[xs.name], paths[ys.name]
        if x.ndim != 3:
            raise df.CorruptFileError(f"{xp}: images must be [N, H, W], got {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise df.CorruptFileError(
                f"{yp}: {y.shape} labels for the {len(x)} images in {xp}"
            )
        if len(y) and int(y.max()) >= 10:
            raise df.CorruptFileError(f"{yp}: label {int(y.max())} outside 0..9")
    df.save_cache(cache, arrays, verified=verify)
    return arrays


def _cifar_arrays(
    *,
    root: Path,
    mirrors: Sequence[str],
    download: bool,
    verify: bool,
    timeout: float,
) -> dict[str, np.ndarray]:
    dataset = "cifar10"
    cache = root / dataset / f"{dataset}.npz"
    arrays = df.load_cache(cache, _KEYS, need_verified=verify)
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
            verify=verify,
            hint=f"or put the archive's extracted {CIFAR10_DIR}/ directory there",
        )[CIFAR10_ARCHIVE.name]
        blobs = df.read_tar_members(archive, [m.name for m in members])
        raws = {n: (b, f"{archive}:{CIFAR10_DIR}/{n}") for n, b in blobs.items()}
    parts: dict[str, list] = {"train": [], "test": []}
    for split, specs in (("train", CIFAR10_TRAIN), ("test", CIFAR10_TEST)):
        for m in specs:
            raw, where = raws[m.name]
            if verify:
                df.check(m, Path(where), raw, raw)
            parts[split].append(df.parse_cifar_batch(raw, where))
    arrays = {}
    for split, batches in parts.items():
        labels = np.concatenate([b[1] for b in batches])
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= 10):
            raise df.CorruptFileError(f"cifar10 {split}: a label outside 0..9")
        arrays[f"x_{split}"] = np.concatenate([b[0] for b in batches])
        arrays[f"y_{split}"] = labels.astype(np.uint8)
    df.save_cache(cache, arrays, verified=verify)
    return arrays


# --------------------------------------------------------------------------------------
# Preprocessing


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
):
    """Raw arrays (images ``[N, H, W]``/``[N, H, W, C]`` or signals ``[N, L]``) ->
    ``Dataset`` with the options described in the module docstring."""
    from bp_alternatives.data import Dataset  # data.py imports this module

    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.RandomState(split_seed)
    x_tr, y_tr = _subset(rng, arrays["x_train"], arrays["y_train"], train_subset)
    x_te, y_te = _subset(rng, arrays["x_test"], arrays["y_test"], test_subset)
    x_va = y_va = None
    n_val = int(round(float(val_fraction) * len(x_tr)))
    if n_val > 0:
        perm = rng.permutation(len(x_tr))
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        x_va, y_va, x_tr, y_tr = x_tr[val], y_tr[val], x_tr[train], y_tr[train]

    is_image = arrays["x_train"].dtype == np.uint8

    def to_float(x):
        x = np.array(x, np.float32)  # a copy: the in-place ops below may use it
        if x.ndim == (3 if is_image else 2):
            x = x[..., None]  # a channel axis: [N, H, W, 1] / [N, L, 1]
        if scale and is_image:
            np.divide(x, 255.0, out=x)
        return x

    xs = [to_float(x) if x is not None else None for x in (x_tr, x_va, x_te)]
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


# --------------------------------------------------------------------------------------
# Loaders (registered in bp_alternatives.data.DATASETS)


def load_fashion_mnist(
    root: str | None = None,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = df.DEFAULT_TIMEOUT,
    **options: Any,
):
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
        hint="or run `apt-get install dataset-fashion-mnist` (Debian, Ubuntu)",
    )
    return prepare("fashion_mnist", arrays, 10, **options)


def load_mnist(
    root: str | None = None,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = df.DEFAULT_TIMEOUT,
    **options: Any,
):
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
        hint="",
    )
    return prepare("mnist", arrays, 10, **options)


def load_cifar10(
    root: str | None = None,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = df.DEFAULT_TIMEOUT,
    **options: Any,
):
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
    )
    return prepare("cifar10", arrays, 10, **options)


def load_mnist1d(
    root: str | None = None,
    cache: bool = True,
    flatten: bool = True,
    val_fraction: float = 0.0,
    split_seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    **generator: Any,
):
    """MNIST-1D: 40-point signals of 10 classes, generated offline (4000 / 1000 by
    default); ``generator`` overrides the generator's arguments (``num_samples``,
    ``seed``, ``shuffle_seq``, ...; see ``bp_alternatives.mnist1d.DEFAULTS``).

    The generator standardises the whole set itself, so there is no ``scale`` or
    ``standardise`` option. Cached in ``<root>/mnist1d/`` per set of arguments.

    References:
      Greydanus (2020), "Scaling down deep learning", arXiv:2011.14439.
    """
    # the cache key: every generator argument (defaults included) and its version
    spec = {"args": {**MNIST1D_DEFAULTS, **generator}, "version": GENERATOR_VERSION}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    path = df.resolve_root(root) / "mnist1d" / f"mnist1d-{key[:16]}.npz"
    arrays = df.load_cache(path, _KEYS, need_verified=False) if cache else None
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


__all__ = [
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist1d",
    "prepare",
    "resize_images",
]
