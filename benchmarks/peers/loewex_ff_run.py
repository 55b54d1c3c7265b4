"""loeweX/Forward-Forward as a black box on Fashion-MNIST, with its own set-up.

Runs in a torch environment (``pip install bp-alternatives[peers]``: torch,
hydra-core and omegaconf, which loeweX's code imports; torchvision is not needed)
against loeweX's source folder as you
fetched it::

    git clone https://github.com/loeweX/Forward-Forward /path/to/Forward-Forward
    python benchmarks/peers/loewex_ff_run.py --peer-dir /path/to/Forward-Forward \
        --epochs 2 --train-subset 12000 --seed 0

What comes from loeweX: its ``config.yaml`` (3 x 1000 ReLU, batch 100, SGD momentum
0.9, lr 1e-3, weight decay 3e-4, peer normalisation 0.03, read-out lr 1e-2 / weight
decay 3e-3, 100 epochs unless ``--epochs``), its model (``src.ff_model.FF_model``),
optimizer (``src.utils.get_model_and_optimizer``), data set wrapper and loader
(``src.ff_mnist.FF_MNIST`` via ``src.utils.get_data``: label over the first 10
pixels, random wrong label, neutral label 0.1), lr cool-down
(``src.utils.update_learning_rate``) and the training step and evaluation of its
``main.py`` (``model(inputs, labels)["Loss"].backward()``;
``model.forward_downstream_classification_model``: the accuracy of its softmax
read-out). What comes from here: the images -- ``src.utils.get_MNIST_partition`` is
replaced by one that serves Fashion-MNIST (``peer_data.py``: the product's files,
pixels in [0, 1] as loeweX's ``ToTensor``, the product's train / validation split)
-- and ``device: cpu``. Prints ``PEER_RESULT {json}`` with the test accuracy of the
read-out after the last epoch and each epoch's training seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import peer_data
import torch

ENV = "BPA_PEER_LOEWEX"


class Images(torch.utils.data.Dataset):
    """``(x [1, 28, 28] float in [0, 1], label int)``, as torchvision's MNIST with
    ``ToTensor`` gives loeweX's ``FF_MNIST`` (a fresh tensor: it writes into it)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.tensor(self.x[i]), int(self.y[i])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peer_data.add_common_args(p, ENV)
    p.add_argument("--epochs", type=int, default=None, help="default: loeweX's 100")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--val-fraction", type=float, default=1 / 6, help="loeweX: 10k/60k")
    return p.parse_args(argv)


def evaluate(model, loader, utils, opt) -> float:
    """loeweX's ``validate_or_test``: mean read-out accuracy over the batches."""
    model.eval()
    acc = 0.0
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = utils.preprocess_inputs(opt, inputs, labels)
            out = model.forward_downstream_classification_model(inputs, labels)
            acc += float(out["classification_accuracy"]) / len(loader)
    model.train()
    return acc


def main(argv=None) -> None:
    args = parse_args(argv)
    peer_data.import_peer(args.peer_dir, "src", ENV)
    try:
        import torchvision  # noqa: F401  (loeweX's src/utils imports it)
    except (ImportError, RuntimeError):
        # src/utils uses torchvision only in get_MNIST_partition, replaced below
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    from omegaconf import OmegaConf
    from src import utils

    if args.threads:
        torch.set_num_threads(args.threads)
    opt = OmegaConf.load(Path(args.peer_dir) / "config.yaml")
    opt.device, opt.seed = "cpu", args.seed
    if args.epochs is not None:
        opt.training.epochs = args.epochs
    opt = utils.parse_args(opt)  # loeweX: seeds numpy, torch, random; prints opt
    data = peer_data.load(
        args.data_dir,
        standardise=False,
        val_fraction=args.val_fraction,
        train_subset=args.train_subset,
    )
    parts = {"train": "train", "val": "val", "test": "test"}
    utils.get_MNIST_partition = lambda opt, partition: Images(
        data[f"x_{parts[partition]}"], data[f"y_{parts[partition]}"]
    )
    model, optimizer = utils.get_model_and_optimizer(opt)
    train_loader = utils.get_data(opt, "train")
    epoch_seconds, train_acc = [], []
    for epoch in range(opt.training.epochs):  # loeweX main.train
        t0 = time.perf_counter()
        results = defaultdict(float)
        optimizer = utils.update_learning_rate(optimizer, opt, epoch)
        for inputs, labels in train_loader:
            inputs, labels = utils.preprocess_inputs(opt, inputs, labels)
            optimizer.zero_grad()
            scalar_outputs = model(inputs, labels)
            scalar_outputs["Loss"].backward()
            optimizer.step()
            results = utils.log_results(results, scalar_outputs, len(train_loader))
        epoch_seconds.append(time.perf_counter() - t0)
        train_acc.append(results["classification_accuracy"])
        utils.print_results("train", epoch_seconds[-1], results, epoch)
    val = evaluate(model, utils.get_data(opt, "val"), utils, opt)
    test = evaluate(model, utils.get_data(opt, "test"), utils, opt)
    peer_data.print_result(
        peer="loeweX/Forward-Forward",
        rule="ff",
        seed=args.seed,
        epochs=int(opt.training.epochs),
        train_images=len(data["x_train"]),
        test_accuracy=test,
        val_accuracy=val,
        train_accuracy_per_epoch=train_acc,
        epoch_seconds=epoch_seconds,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )


if __name__ == "__main__":
    main()
