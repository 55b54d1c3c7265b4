"""Where a run's wall time goes (results.json ``time_split``) and train metrics on a
fixed subset (``trainer.train_eval_size``)."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from bp_alternatives.data import load_digits
from bp_alternatives.experiment import run
from bp_alternatives.model import mlp
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import bp
from bp_alternatives.train import fit
from bp_alternatives.train.record import CompileClock


def _fit(data, **kwargs):
    model = mlp(data.input_shape, data.num_classes, hidden=(16,))
    loss = get_loss("cross_entropy")
    return fit(
        model,
        loss,
        bp(model, loss),
        optax.sgd(0.1),
        data,
        epochs=2,
        batch_size=32,
        key=jax.random.PRNGKey(0),
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_time_split_adds_up_and_counts_compilation(digits):
    split = _fit(digits)["time_split"]
    parts = ("compile", "train", "eval", "other")
    assert all(split[f"{p}_seconds"] >= 0 for p in parts)
    assert split["compile_seconds"] > 0  # fresh programs were compiled
    total = sum(split[f"{p}_seconds"] for p in parts)
    assert total == pytest.approx(split["wall_seconds"], rel=1e-6)


def test_compile_clock_counts_only_while_listening():
    clock = CompileClock()
    with clock.listening():
        jax.jit(lambda x: x * 3.0 + 1.0)(np.ones(7)).block_until_ready()
    seen = clock.total
    assert seen > 0
    jax.jit(lambda x: x * 5.0 - 2.0)(np.ones(9)).block_until_ready()
    assert clock.total == seen


def test_train_metrics_on_a_fixed_subset(digits):
    n = len(digits.x_train)
    full = _fit(digits)["history"]
    same = _fit(digits, train_eval_size=n)["history"]
    sub = _fit(digits, train_eval_size=100)["history"]
    assert [e["train_loss"] for e in same] == [e["train_loss"] for e in full]
    assert [e["test_loss"] for e in sub] == [e["test_loss"] for e in full]
    assert sub[-1]["train_loss"] != full[-1]["train_loss"]  # 100 of them only
    # 100 examples: accuracies are multiples of 1/100
    assert all(
        abs(e["train_accuracy"] * 100 - round(e["train_accuracy"] * 100)) < 1e-4
        for e in sub
    )


def test_results_json_has_the_split(cfg_factory):
    res = run(cfg_factory("trainer.epochs=1", "model.hidden=[8]"))
    assert set(res["time_split"]) == {
        "compile_seconds",
        "train_seconds",
        "eval_seconds",
        "other_seconds",
        "wall_seconds",
    }
