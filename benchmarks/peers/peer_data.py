"""Fashion-MNIST for the peer scripts, the result line they print, the peer import.

The peer scripts run in a torch environment without the product installed, so this
module needs only numpy: it reads the same IDX files the product reads (Debian's
``dataset-fashion-mnist`` package, ``/usr/share/datasets/fashion-mnist``, or
``--data-dir``) and prepares them as the product's ``data=fashion_mnist`` does
(``bp_alternatives/data/prepare.py``): pixels / 255, minus the training split's mean,
over its std, optional bilinear enlargement (half-pixel centres, as torchvision's
``Resize``), optional train/validation split.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_DIRS = ("/usr/share/datasets/fashion-mnist",)
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
RESULT_PREFIX = "PEER_RESULT "  # then one JSON object; benchmarks/peers/side_by_side.py


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain) -> uint8 array ``[N, ...]``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(
        int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_dir(data_dir: str | None) -> Path:
    """The folder holding the four Fashion-MNIST files; raises FileNotFoundError."""
    candidates = (
        [data_dir] if data_dir else [os.environ.get("BPA_PEERS_DATA"), *DEFAULT_DIRS]
    )
    for d in candidates:
        if d and all((Path(d) / name).exists() for name in FILES.values()):
            return Path(d)
    raise FileNotFoundError(
        f"Fashion-MNIST files {sorted(FILES.values())} not found in {candidates}: "
        "pass --data-dir DIR or run `apt-get install dataset-fashion-mnist`"
    )


def load(
    data_dir: str | None = None,
    standardise: bool = True,
    resize: int | None = None,
    val_fraction: float = 0.0,
    train_subset: int | None = None,
) -> dict[str, np.ndarray]:
    """``x_*`` float32 ``[N, 1, S, S]`` (S = 28 or ``resize``), ``y_*`` int64 ``[N]``.

    ``train_subset`` and ``val_fraction`` draw the same images as the product's
    ``data.train_subset`` / ``data.val_fraction`` with ``data.split_seed=0``
    (``bp_alternatives/data/prepare.py``: ``_splits``): a subset of the training
    split, then a validation split (``x_val``) carved from it at random.
    """
    root = find_dir(data_dir)
    raw = {k: read_idx(root / name) for k, name in FILES.items()}
    x_tr, y_tr = raw["x_train"], raw["y_train"]
    out = {"x_test": raw["x_test"], "y_test": raw["y_test"]}
    rng = np.random.RandomState(0)  # the product's data.split_seed default
    if train_subset and train_subset < len(x_tr):
        idx = np.sort(rng.permutation(len(x_tr))[:train_subset])
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    n_val = int(round(val_fraction * len(x_tr)))
    if n_val:
        perm = rng.permutation(len(x_tr))
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        out["x_val"], out["y_val"] = x_tr[val], y_tr[val]
        x_tr, y_tr = x_tr[train], y_tr[train]
    out["x_train"], out["y_train"] = x_tr, y_tr
    xs = {
        k: v.astype(np.float32)[:, None] / 255.0 for k, v in out.items() if k[0] == "x"
    }
    mean, std = xs["x_train"].mean(), xs["x_train"].std()
    for k, x in xs.items():
        if resize:
            m = _resize_matrix(x.shape[-1], resize)
            x = m @ x @ m.T  # [S, 28] @ [N, 1, 28, 28] @ [28, S]
        out[k] = (x - mean) / std if standardise else x
    for k in [k for k in out if k[0] == "y"]:
        out[k] = out[k].astype(np.int64)
    return out


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear weights ``[n_out, n_in]``, half-pixel centres, clamped at the border."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - (src - lo)
    m[np.arange(n_out), hi] += src - lo
    return m


def add_common_args(p: argparse.ArgumentParser, env: str) -> None:
    """``--peer-dir`` (default ``$<env>``), ``--data-dir``, ``--seed``,
    ``--threads``."""
    p.add_argument(
        "--peer-dir",
        default=os.environ.get(env),
        help=f"the peer's source folder, as you fetched it (default ${env})",
    )
    p.add_argument("--data-dir", default=None, help="folder with the 4 IDX .gz files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def import_peer(peer_dir: str | None, package: str, env: str) -> None:
    """Put ``peer_dir`` first on ``sys.path`` after checking it holds ``package``."""
    if not peer_dir or not (Path(peer_dir) / package).exists():
        raise SystemExit(
            f"--peer-dir={peer_dir!r} does not hold {package}/: fetch the peer "
            f"(docs/peers.md) and pass its folder with --peer-dir or ${env}"
        )
    sys.path.insert(0, str(Path(peer_dir).resolve()))


def print_result(**fields) -> None:
    """One parseable line: ``PEER_RESULT {json}``."""
    print(RESULT_PREFIX + json.dumps(fields, sort_keys=True), flush=True)
