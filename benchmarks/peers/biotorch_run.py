"""biotorch (jsalbert/biotorch) as a black box on Fashion-MNIST: an MLP or LeNet.

Runs in a torch environment (``pip install bp-alternatives[peers]`` or any torch
>= 2.0 with torchvision) against biotorch's source folder as you fetched it::

    git clone https://github.com/jsalbert/biotorch /path/to/biotorch
    python benchmarks/peers/biotorch_run.py --peer-dir /path/to/biotorch \
        --model mlp --mode fa --epochs 3 --seed 0

What comes from biotorch: the learning rule, through its ``BioModule`` converter
(``mode``: backpropagation | fa | usf | brsf | frsf | dfa; every ``nn.Linear`` /
``nn.Conv2d`` replaced by biotorch's layer, its init, its feedback weights), the
LeNet (``biotorch/models/le_net.py``'s ``le_net_mnist``: conv 6, 16, 120, dense 84,
10 on 32x32, converted as ``biotorch.models.<mode>.le_net_mnist`` converts it), and
DFA's loss-gradient broadcast (``BioModule.forward(x, y, loss)``, as biotorch's
``training/functions.py``). The MLP (no biotorch model) is
``nn.Sequential`` of ``nn.Linear`` + activation, converted the same way. What comes
from here: the data (``peer_data.py``: the product's files and preparation), the
batch order (torch.randperm), a plain training loop (biotorch's, without its
metric meters), SGD or Adam. Prints ``PEER_RESULT {json}`` with the test accuracy
after the last epoch and the training seconds of each epoch (evaluation excluded,
as the product's ``epoch_seconds``).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import peer_data
import torch

MODES = ("backpropagation", "fa", "usf", "brsf", "frsf", "dfa")
ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
ENV = "BPA_PEER_BIOTORCH"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peer_data.add_common_args(p, ENV)
    p.add_argument("--model", choices=("mlp", "lenet"), default="mlp")
    p.add_argument("--mode", choices=MODES, default="backpropagation")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    p.add_argument("--init", choices=("xavier", "kaiming"), default="xavier")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=None)
    return p.parse_args(argv)


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """biotorch's model for ``args.mode``: its LeNet, or an MLP it converts."""
    from biotorch.module.biomodule import BioModule

    layer_config = {
        "type": args.mode,
        "options": {
            "init": args.init,
            "constrain_weights": False,
            "gradient_clip": False,
        },
    }
    if args.model == "lenet":
        # biotorch.models.<mode>.le_net_mnist is BioModule(le_net.le_net_mnist(),
        # mode, copy_weights=False, ...) (biotorch/models/utils.py), built here the
        # same way: biotorch.models/__init__ imports torchvision's model zoo, which
        # this script does not need, so its le_net.py is loaded on its own.
        spec = importlib.util.spec_from_file_location(
            "biotorch_le_net", Path(args.peer_dir) / "biotorch" / "models" / "le_net.py"
        )
        le_net = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(le_net)
        net = le_net.le_net_mnist(num_classes=10)
        return BioModule(
            net,
            mode=args.mode,
            copy_weights=False,
            layer_config=layer_config,
            output_dim=10,
        )
    sizes = [28 * 28, *args.hidden, 10]
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[args.activation]())
    return BioModule(
        torch.nn.Sequential(*layers),
        mode=args.mode,
        copy_weights=False,
        layer_config=layer_config,
        output_dim=10,
    )


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(x[i : i + 4096]).argmax(-1) == y[i : i + 4096]).sum())
            for i in range(0, len(x), 4096)
        )
    model.train()
    return correct / len(x)


def main(argv=None) -> None:
    args = parse_args(argv)
    peer_data.import_peer(args.peer_dir, "biotorch", ENV)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    data = peer_data.load(
        args.data_dir,
        resize=32 if args.model == "lenet" else None,
        train_subset=args.train_subset,
    )
    x_tr, y_tr, x_te, y_te = (
        torch.from_numpy(data[k]) for k in ("x_train", "y_train", "x_test", "y_test")
    )
    model = build_model(args)
    loss_fn = torch.nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    else:
        opt = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    steps = len(x_tr) // args.batch_size  # drop the last partial batch, as the product
    epoch_seconds, test_acc = [], []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(x_tr))
        for s in range(steps):
            idx = order[s * args.batch_size : (s + 1) * args.batch_size]
            x, y = x_tr[idx], y_tr[idx]
            out = model(x, y, loss_fn) if args.mode == "dfa" else model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_seconds.append(time.perf_counter() - t0)
        test_acc.append(accuracy(model, x_te, y_te))
        print(
            f"epoch {epoch + 1}: test_accuracy={test_acc[-1]:.4f} "
            f"loss={loss.item():.4f} {epoch_seconds[-1]:.1f} s",
            flush=True,
        )
    peer_data.print_result(
        peer="biotorch",
        rule=args.mode,
        model=args.model,
        seed=args.seed,
        epochs=args.epochs,
        test_accuracy=test_acc[-1],
        test_accuracy_per_epoch=test_acc,
        epoch_seconds=epoch_seconds,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )


if __name__ == "__main__":
    main()
