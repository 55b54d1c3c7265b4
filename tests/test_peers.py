"""benchmarks/peers/: the peers see the product's images; the side-by-side table."""

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from bp_alternatives.data import load_fashion_mnist
from bp_alternatives.data.files import DatasetNotFoundError

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers"


def _module(name):
    sys.path.insert(0, str(PEERS))  # side_by_side / the runners import peer_data
    try:
        spec = importlib.util.spec_from_file_location(name, PEERS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(PEERS))


@pytest.mark.parametrize(
    "options",
    [
        dict(train_subset=600, val_fraction=0.2, standardise=False),
        dict(train_subset=300, resize=32),
    ],
)
def test_peer_images_are_the_products(options):
    """peer_data.load draws the same subset / validation split and prepares the
    pixels as data=fashion_mnist does (NCHW against the product's NHWC)."""
    peer_data = _module("peer_data")
    try:
        product = load_fashion_mnist(download=False, flatten=False, **options)
        peer = peer_data.load(**options)
    except (DatasetNotFoundError, FileNotFoundError) as e:
        reason = f"Fashion-MNIST not on this machine: {str(e)[:200]}"
        if os.environ.get("BP_REQUIRE_FASHION_MNIST") == "1":  # CI installs it
            pytest.fail(f"BP_REQUIRE_FASHION_MNIST=1 but {reason}")
        pytest.skip(reason)
    splits = ["train", "test"] + (["val"] if options.get("val_fraction") else [])
    for split in splits:
        x = getattr(product, f"x_{split}")
        np.testing.assert_array_equal(
            peer[f"y_{split}"], getattr(product, f"y_{split}")
        )
        np.testing.assert_allclose(
            peer[f"x_{split}"], np.transpose(x, (0, 3, 1, 2)), atol=1e-5
        )
    size = options.get("resize", 28)
    assert peer["x_train"].shape[1:] == (1, size, size)


def _pair(row, seed, peer_acc, product_acc, peer_s, product_s, **extra):
    return {
        "row": row,
        "seed": seed,
        "load": 2.0,
        "peer": {"test_accuracy": peer_acc, "epoch_seconds": peer_s},
        "product": {
            "test_accuracy": product_acc,
            "epoch_seconds": product_s,
            **extra,
        },
    }


def test_table_gives_mean_std_n_steady_seconds_and_ratio():
    table = _module("side_by_side").table
    pairs = [
        _pair("fa", 0, 0.80, 0.70, [9.0, 4.0], [30.0, 1.0]),
        _pair("fa", 1, 0.90, 0.90, [9.0, 4.0, 6.0], [30.0, 3.0]),
        _pair("ff", 0, 0.50, 0.40, [5.0], [2.0], **{"test_accuracy/readout": 0.6}),
    ]
    lines = table(pairs).splitlines()
    fa = next(line for line in lines if line.startswith("| fa |"))
    # accuracies in %, std over seeds; seconds: epochs after the first, mean over seeds
    cells = [c.strip() for c in fa.strip("|").split("|")]
    assert cells[1:7] == ["85.00 ± 7.07", "80.00 ± 14.14", "2", "4.5", "2.0", "0.44"]
    readout = next(line for line in lines if line.startswith("| ff read-out |"))
    assert "| 60.00 ± – |" in readout  # the product's read-out beside the peer
    assert "| 5.0 | 2.0 | 0.40 |" in readout  # a single epoch counts as it is
