"""The training entry point: results.json, digits accuracy, divergence, errors."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hydra.errors import MissingConfigException

from bp_alternatives.data import load_xor
from bp_alternatives.experiment import run
from bp_alternatives.model import mlp
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch, bp, manual_bp
from bp_alternatives.train import init_state, make_train_step
from tests.conftest import compose_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONTRACT = {
    "rule",
    "dataset",
    "model",
    "seed",
    "epochs",
    "optimizer",
    "final",
    "history",
    "examples_per_second",
    "wall_seconds",
    "device",
    "config",
    "status",
}
FINAL = {"test_accuracy", "test_loss", "train_accuracy", "train_loss"}


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """bp and manual_bp on the default digits config, same seed, 10 epochs."""
    out = {}
    for rule in ("bp", "manual_bp"):
        d = tmp_path_factory.mktemp(rule)
        cfg = compose_cfg([f"rule={rule}", "trainer.epochs=10", "seed=0"])
        out[rule] = run(cfg, out_dir=str(d))
        with open(d / "results.json") as f:
            assert json.load(f)["final"] == out[rule]["final"]
    return out


@pytest.mark.parametrize("rule", ["bp", "manual_bp"])
def test_digits_accuracy_and_contract(digits_runs, rule):
    res = digits_runs[rule]
    assert CONTRACT <= set(res)
    assert FINAL <= set(res["final"])
    assert res["status"] == "ok" and res["rule"] == rule and res["dataset"] == "digits"
    assert res["model"]["widths"] == [64, 256, 256, 10]
    assert len(res["history"]) == 10
    entry = res["history"][-1]
    assert FINAL <= set(entry)
    assert len(entry["alignment_deg"]) == len(entry["grad_norm"]) == 3
    assert max(entry["alignment_deg"]) < 1.0  # exact gradients: 0 degrees
    assert res["final"]["test_accuracy"] >= 0.95
    assert res["examples_per_second"] > 0
    assert res["device"]["count"] >= 1


def test_bp_and_manual_bp_histories_agree(digits_runs):
    h_bp, h_man = digits_runs["bp"]["history"], digits_runs["manual_bp"]["history"]
    for a, b in zip(h_bp, h_man):
        for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["epoch"], k)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)


def test_diverging_run_is_marked_and_still_written(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "optim=sgd",
        "optim.lr=1e8",
        "model.activation=relu",
        "model.hidden=[32]",
        "loss=mse",
        "trainer.epochs=5",
    )
    res = run(cfg)
    assert res["status"] == "diverged"
    assert res["diverged_epoch"] == len(res["history"]) <= 5
    with open(tmp_path / "results.json") as f:
        on_disk = json.load(f)  # NaN written as null: valid JSON
    assert on_disk["status"] == "diverged"


def test_diverged_epoch_reports_no_accuracy(cfg_factory, tmp_path, capsys):
    """argmax of a NaN row is class 0: no accuracy of a non-finite epoch may survive,
    in results.json, the one-line summary, sweep_summary.md, the table or the value
    returned to a sweeper."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from bp_alternatives.compare import build_table, load_runs
    from bp_alternatives.sweep import run_job, summarise

    cfg = cfg_factory(
        "optim=sgd",
        "optim.lr=1e4",
        "model.activation=relu",
        "model.hidden=[32]",
        "trainer.epochs=2",
        "data.val_fraction=0.2",
        "optimized_metric=val_accuracy",
    )
    hydra_cfg = OmegaConf.create(
        {
            "mode": RunMode.MULTIRUN,
            "sweep": {"dir": str(tmp_path)},
            "runtime": {"output_dir": str(tmp_path / "job")},
            "job": {"override_dirname": "job", "num": 0},
            "overrides": {"task": []},
        }
    )
    assert run_job(cfg, hydra_cfg) is None  # what a sweeper gets
    res = json.loads((tmp_path / "job" / "results.json").read_text())
    assert res["status"] == "diverged" and res["diverged_epoch"] == 1
    accuracies = {k: v for k, v in res["history"][-1].items() if "accuracy" in k}
    assert set(accuracies) >= {"train_accuracy", "val_accuracy", "test_accuracy"}
    assert set(accuracies.values()) == {None}
    assert res["final"]["test_accuracy"] is None and res["selected"] is None
    assert "status=diverged test_accuracy=None" in capsys.readouterr().out
    summarise(str(tmp_path))
    assert "| 0 | job | diverged |  |  |" in (tmp_path / "sweep_summary.md").read_text()
    cell = build_table(load_runs([str(tmp_path)])).cells[("bp", "digits")]
    assert cell.test_error is None and cell.n_diverged == 1


def test_eval_accuracy_is_nan_when_an_output_is_not_finite():
    from bp_alternatives.model import init_params
    from bp_alternatives.train import make_eval_fn

    model = mlp((2,), 2, hidden=(4,))
    ce = get_loss("cross_entropy")
    eval_fn = make_eval_fn(model, ce, bp(model, ce), chunk=3)
    params = init_params(model, jax.random.PRNGKey(0))
    x = jnp.zeros((5, 2)).at[4, 0].set(jnp.nan)  # the last chunk's one real example
    y = jnp.zeros(5, jnp.int32)
    bad, good = eval_fn(params, (), x, y), eval_fn(params, (), x[:4], y[:4])
    assert jnp.isnan(bad["accuracy"]) and jnp.isnan(bad["loss"])
    assert jnp.isfinite(good["accuracy"])


def test_cli_diverged_run_exits_zero(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "optim=sgd",
            "optim.lr=1e8",
            "model.activation=relu",
            "model.hidden=[16]",
            "loss=mse",
            "trainer.epochs=3",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "status=diverged" in proc.stdout
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["status"] == "diverged"


@pytest.mark.parametrize(
    "override,group",
    [("rule=nope", "rule"), ("data=nope", "data"), ("optim=nope", "optim")],
)
def test_unknown_group_option_lists_valid_ones(override, group):
    with pytest.raises(MissingConfigException, match="Available options") as err:
        compose_cfg([override])
    assert group in str(err.value)


def test_unknown_activation_lists_valid_ones(cfg_factory):
    with pytest.raises(
        ValueError, match=r"activation=.swish.; valid activations.*.relu."
    ):
        run(cfg_factory("model.activation=swish", "trainer.epochs=1"))


def test_batch_larger_than_dataset_is_rejected(cfg_factory):
    with pytest.raises(ValueError, match="batch_size=64 is larger than the xor"):
        run(cfg_factory("data=xor", "trainer.epochs=1"))


@pytest.mark.parametrize("factory", [bp, manual_bp], ids=["bp", "manual_bp"])
def test_xor_learned_by_a_small_sigmoid_net(factory):
    """The backprop article's XOR demo (docs/references.md): 2-4-2 sigmoid net, MSE,
    plain SGD, 3000 steps."""
    data = load_xor()
    model = mlp(
        (2,),
        2,
        hidden=(4,),
        activation="sigmoid",
        output_activation="sigmoid",
        init="normal",
        init_std=1.0,
    )
    loss = get_loss("mse")
    rule = factory(model, loss)
    opt = optax.sgd(2.0)
    state = init_state(model, rule, opt, jax.random.PRNGKey(0))
    step = make_train_step(rule, opt)
    batch = Batch(jnp.asarray(data.x_train), jnp.asarray(data.y_train))

    def body(s, t):
        s, m = step(s, batch, jax.random.PRNGKey(t))
        return s, m["loss"]

    state, losses = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(3000)))(state)
    from bp_alternatives.model import output

    pred = jnp.argmax(output(model, state.params, batch.x), axis=-1)
    assert losses[-1] < 0.25 * losses[0]
    np.testing.assert_array_equal(np.asarray(pred), data.y_train)


def test_validation_split_selects_the_epoch_and_reports_its_test_numbers(cfg_factory):
    from bp_alternatives.data import load_digits
    from bp_alternatives.train import fit

    d = load_digits()
    n_val = 300
    data = d._replace(
        x_train=d.x_train[n_val:],
        y_train=d.y_train[n_val:],
        x_val=d.x_train[:n_val],
        y_val=d.y_train[:n_val],
    )
    model = mlp((64,), 10, hidden=(16,))
    out = fit(
        model,
        get_loss("cross_entropy"),
        bp(model, get_loss("cross_entropy")),
        optax.sgd(0.05),
        data,
        epochs=6,
        batch_size=64,
        key=jax.random.PRNGKey(0),
        progress=False,
    )
    hist = out["history"]
    assert all("val_accuracy" in e and "val_loss" in e for e in hist)
    best = max(hist, key=lambda e: e["val_accuracy"])
    sel = out["selected"]
    assert sel["epoch"] == best["epoch"]
    assert sel["test_accuracy"] == best["test_accuracy"]
    assert sel["val_accuracy"] == best["val_accuracy"]
    # without a validation split nothing is selected
    plain = fit(
        model,
        get_loss("cross_entropy"),
        bp(model, get_loss("cross_entropy")),
        optax.sgd(0.05),
        d,
        epochs=1,
        batch_size=64,
        key=jax.random.PRNGKey(0),
        progress=False,
    )
    assert plain["selected"] is None


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_on_a_terminal_plain_lines_otherwise(tty, monkeypatch):
    from bp_alternatives.progress import Progress

    monkeypatch.setenv("COLUMNS", "200")  # rich's width: room for every column
    stream = _Stream(tty)
    bar = Progress(4, steps_per_epoch=10, stream=stream)
    for e in range(1, 5):
        bar.update(
            e,
            {
                "train_loss": 1.0 / e,
                "train_accuracy": 0.5,
                "test_accuracy": None if e == 2 else 0.25,
                "lr": 1e-3,
                "epoch_seconds": 0.5,
                "examples_per_second": 1280.0,
            },
        )
    out = stream.getvalue()
    if tty:  # one display redrawn in place, with steps, ETA, s/epoch and ex/s
        assert "\x1b[" in out and out.count("\n") <= 2
        out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)  # colours and cursor moves
        assert "epoch 4/4" in out and "step 40/40" in out and "ETA" in out
        assert "0.50 s 1,280 ex/s" in out
    else:  # a plain line per epoch, for logs and Slurm output files
        lines = out.splitlines()
        assert len(lines) == 4 and "\r" not in out and "\x1b" not in out
        assert lines[1] == (
            "epoch 2/4 train_loss 0.5000 train_accuracy 0.5000 test_accuracy nan "
            "lr 0.001 0.50 s 1,280 ex/s"
        )


def test_train_log_holds_every_epoch(cfg_factory, tmp_path):
    res = run(cfg_factory("trainer.epochs=3", "optim.schedule=cosine"))
    with open(tmp_path / "train.log") as f:
        lines = f.read().splitlines()
    assert [line.split("] ")[1].split(" train_loss")[0] for line in lines] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]
    lrs = [e["lr"] for e in res["history"]]  # the rate of each epoch's first step
    assert lrs[0] == pytest.approx(1e-3) and lrs[0] > lrs[1] > lrs[2] > 0
    assert f"lr {lrs[1]:.3g}" in lines[1]
