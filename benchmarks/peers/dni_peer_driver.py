"""Run koz4k/dni-pytorch's ``examples/mnist-mlp/main.py`` unchanged in its model,
training and evaluation, on Fashion-MNIST IDX files, under a current PyTorch.

Runs in the peer's Python (a venv with torch; torchvision is not needed). Called by
``dni_mnist_mlp.py``; by hand::

    /path/to/venv/bin/python benchmarks/peers/dni_peer_driver.py \
        --repo /path/to/dni-pytorch --data /usr/share/datasets/fashion-mnist -- \
        --batch-size 128 --epochs 3 --seed 0 --dni [--context]

(everything after ``--`` goes to the example's own argument parser).

What it changes, and nothing else (no peer code is copied here; the example is read
from ``--repo`` and executed):
  * ``torchvision.datasets.MNIST`` reads the IDX files in ``--data`` (Fashion-MNIST)
    instead of downloading MNIST; ``transforms.ToTensor`` / ``Normalize`` do what
    torchvision's do (pixels / 255, then ``(x - mean) / std`` with the example's own
    MNIST constants), one example at a time as the example's ``DataLoader`` asks.
  * PyTorch 0.3 idioms that current PyTorch rejects, rewritten in the source text
    before it runs: ``<tensor>.data[0]`` -> ``.item()`` (indexing a 0-d tensor is an
    error since 0.4) and ``ctx.saved_variables`` -> ``ctx.saved_tensors`` in
    ``dni.py`` (the same tuple). Deprecated-but-working calls (``Variable``,
    ``volatile``, ``size_average``, ``init.constant``) are left as they are.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import types

import numpy as np
import torch


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(data_dir: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(data_dir, name)):
            return os.path.join(data_dir, name)
    raise FileNotFoundError(f"{stem}[.gz] not found in {data_dir}")


def _torchvision_stub(data_dir: str) -> types.ModuleType:
    """A ``torchvision`` with the three names the example uses."""

    class IdxDataset(torch.utils.data.Dataset):
        def __init__(self, root, train=True, download=False, transform=None):
            del root, download
            split = "train" if train else "t10k"
            self.x = _read_idx(_find(data_dir, f"{split}-images-idx3-ubyte"))
            self.y = torch.from_numpy(
                _read_idx(_find(data_dir, f"{split}-labels-idx1-ubyte")).astype(
                    np.int64
                )
            )
            self.transform = transform

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            img = self.x[i]
            if self.transform is not None:
                img = self.transform(img)
            return img, self.y[i]

    class ToTensor:
        def __call__(self, img):  # HxW uint8 -> 1xHxW float in [0, 1]
            return torch.from_numpy(img.astype(np.float32) / 255.0)[None]

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean[0], std[0]

        def __call__(self, t):
            return (t - self.mean) / self.std

    class Compose:
        def __init__(self, fns):
            self.fns = fns

        def __call__(self, x):
            for f in self.fns:
                x = f(x)
            return x

    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(MNIST=IdxDataset)
    tv.transforms = types.SimpleNamespace(
        Compose=Compose, ToTensor=ToTensor, Normalize=Normalize
    )
    return tv


def _load_dni(repo: str) -> None:
    """``import dni`` from ``repo``, with ``saved_variables`` -> ``saved_tensors``."""
    src = open(os.path.join(repo, "dni.py")).read()
    src = src.replace("ctx.saved_variables", "ctx.saved_tensors")
    mod = types.ModuleType("dni")
    mod.__file__ = os.path.join(repo, "dni.py")
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    sys.modules["dni"] = mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", required=True, help="the fetched dni-pytorch folder")
    ap.add_argument("--data", required=True, help="folder with the IDX files")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args, rest = ap.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.modules["torchvision"] = _torchvision_stub(args.data)
    _load_dni(args.repo)
    example = os.path.join(args.repo, "examples", "mnist-mlp", "main.py")
    src = open(example).read().replace(".data[0]", ".item()")
    sys.argv = [example, *rest]
    exec(compile(src, example, "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
