"""The backprop article's demonstrations do what their headers claim: XOR decision
boundaries drawn from the trained parameters, vanishing gradients, a diverged vs a
clipped run, remat's identical curve; and the table's best-validation epoch."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from bp_alternatives.compare import (
    build_table,
    load_runs,
    plot_all,
    restore_predictor,
)
from bp_alternatives.experiment import run
from tests.experiment_helpers import (
    job_cfg,
)

# ------------------------------------------------------------ the demonstrations


def test_xor_decision_boundaries_from_the_trained_parameters(tmp_path):
    sweep = tmp_path / "xor"
    for rule in ("bp", "fa"):
        res = run(job_cfg(sweep / f"rule={rule}", "experiment=xor", f"rule={rule}"))
        assert res["status"] == "ok"
        assert res["final"]["test_accuracy"] == 1.0  # the header's claim, seed 0
    runs = load_runs([str(sweep)])
    assert {r.input_width for r in runs} == {2}
    for r in runs:
        # the restored predictor is the trained network: it reproduces the run's
        # final predictions on the four points
        data, scores = restore_predictor(r)
        pred = np.argmax(np.asarray(scores(jnp.asarray(data.x_test))), -1)
        assert pred.tolist() == data.y_test.tolist() == [0, 1, 1, 0]
    paths = plot_all(runs, str(tmp_path / "plots"))
    names = {os.path.basename(p) for p in paths}
    boundary = [n for n in names if n.startswith("decision_boundary_xor")]
    assert sorted(n.rsplit(".", 1)[1] for n in boundary) == ["pdf", "png"]
    assert all(os.path.getsize(tmp_path / "plots" / n) > 10_000 for n in boundary)


@pytest.mark.slow
def test_restore_predictor_uses_the_rules_prediction(tmp_path):
    """FF predicts by goodness from its rule state: the restored predictor must give
    the run's own test accuracy."""
    res = run(
        job_cfg(
            tmp_path / "ff",
            "rule=ff",
            "model.activation=relu",
            "model.hidden=[128,128]",
            "trainer.epochs=3",
        )
    )
    (record,) = load_runs([str(tmp_path / "ff")])
    data, scores = restore_predictor(record)
    pred = np.argmax(np.asarray(scores(jnp.asarray(data.x_test))), -1)
    acc = float(np.mean(pred == data.y_test))
    assert acc == pytest.approx(res["final"]["test_accuracy"], abs=1e-6)
    assert acc > 0.3  # trained (~0.5 after 3 epochs), not an initial state


def test_no_checkpoint_no_decision_boundary(tmp_path):
    run(
        job_cfg(
            tmp_path / "xor0",
            "experiment=xor",
            "rule=bp",
            "trainer.epochs=5",
            "trainer.checkpoint_every=0",
        )
    )
    (record,) = load_runs([str(tmp_path / "xor0")])
    assert record.input_width == 2 and restore_predictor(record) is None
    paths = plot_all([record], str(tmp_path / "plots"))
    assert paths and not any("decision_boundary" in p for p in paths)


def test_vanishing_gradients_sigmoid_vs_relu(tmp_path):
    """Epoch 1 of the experiment: the exact gradient reaching the first sigmoid stage
    is > 1000x smaller than at the read-out; with ReLU it is not."""
    ratios = {}
    for act in ("sigmoid", "relu"):
        res = run(
            job_cfg(
                tmp_path / act,
                "experiment=vanishing_gradients",
                f"model.activation={act}",
                "trainer.epochs=1",
            )
        )
        g = res["history"][0]["grad_norm"]
        assert len(g) == 9  # 8 hidden stages + read-out
        ratios[act] = g[0] / g[-1]
    assert ratios["sigmoid"] < 1e-3
    assert ratios["relu"] > 0.1


def test_exploding_gradients_diverge_unless_clipped(tmp_path):
    out = {}
    for clip in ("null", "5.0"):
        out[clip] = run(
            job_cfg(
                tmp_path / clip,
                "experiment=exploding_gradients",
                f"optim.clip_norm={clip}",
                "trainer.epochs=2",
            )
        )
    assert out["null"]["status"] == "diverged" and out["null"]["diverged_epoch"] == 1
    clipped = out["5.0"]
    assert clipped["status"] == "ok"
    losses = [e["train_loss"] for e in clipped["history"]]
    assert all(np.isfinite(losses)) and losses[1] < losses[0]
    assert clipped["final"]["test_accuracy"] > 0.5
    # the table counts the diverged run beside its row instead of averaging a NaN
    table = build_table(load_runs([str(tmp_path)]), extras=())
    assert table.rows == ["bp (clip_norm=5.0)", "bp (clip_norm=None)"]
    (column,) = table.columns
    assert table.cells[("bp (clip_norm=None)", column)].n_diverged == 1
    assert table.cells[("bp (clip_norm=5.0)", column)].test_error is not None


@pytest.mark.slow
def test_remat_gives_the_same_curve(tmp_path):
    hist = {}
    for remat in ("false", "true"):
        res = run(
            job_cfg(
                tmp_path / remat,
                "experiment=remat",
                f"rule.remat={remat}",
                "trainer.epochs=1",
                "data.train_subset=512",
            )
        )
        hist[remat] = [[e["train_loss"], e["test_accuracy"]] for e in res["history"]]
    np.testing.assert_allclose(hist["true"], hist["false"], rtol=1e-5)
    table = build_table(load_runs([str(tmp_path)]), extras=())
    assert table.rows == ["bp (remat=false)", "bp (remat=true)"]


def test_table_reports_the_epoch_selected_on_validation(tmp_path):
    """Runs with a validation split (compare_fashion_mnist, biotorch_fashion_mnist)
    report the test error of their best-validation epoch, and the caption says so."""
    for seed, (last, sel) in enumerate([(0.80, 0.90), (0.70, 0.86)]):
        d = tmp_path / f"seed={seed}"
        d.mkdir()
        res = {
            "rule": "bp",
            "dataset": "fashion_mnist",
            "seed": seed,
            "status": "ok",
            "final": {"test_accuracy": last, "train_accuracy": 1.0},
            "selected": {"epoch": 3, "val_accuracy": 0.9, "test_accuracy": sel},
            "history": [{"epoch": e, "test_accuracy": last} for e in (1, 2, 3, 4)],
            "config": {"rule": {"name": "bp"}, "seed": seed},
        }
        (d / "results.json").write_text(json.dumps(res))
    runs = load_runs([str(tmp_path)])
    assert [r.selected_epoch for r in runs] == [3, 3]
    table = build_table(runs, extras=())
    mean, _ = table.cells[("bp", "fashion_mnist")].test_error
    assert mean == pytest.approx(100 * (1 - (0.90 + 0.86) / 2))
    assert "best validation accuracy" in table.caption
