"""scripts/benchmark.py: runs end to end on a tiny net and reports sane numbers.

Speed is never asserted (the machine is shared); the FLOP counting, the ceiling's
arithmetic, the JSON fields and their mutual consistency are.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bp_alternatives.rules import RULES

_PATH = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "scripts", "benchmark.py"
)
_spec = importlib.util.spec_from_file_location("_benchmark_script", _PATH)
benchmark = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = benchmark  # dataclasses look their module up there
_spec.loader.exec_module(benchmark)

WIDTHS = [64, 32, 32, 10]
# 6 * (64*32 + 32*32 + 32*10) - 2 * 64*32: forward, dW, delta down except layer 0
BP_FLOPS = 16256
BATCH, STEPS, EPOCHS = 8, 2, 2


def _positive(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_bp_flop_count_by_hand():
    assert benchmark.bp_flops_per_example(WIDTHS) == BP_FLOPS
    # one layer: forward + dW only (no delta for the input)
    assert benchmark.bp_flops_per_example([5, 3]) == 2 * 2 * 5 * 3


def test_ceiling_step_is_a_bp_step_of_a_linear_net():
    """The ceiling does the real matmuls of bp: one step equals SGD on
    ``L = sum(out^2) / (2B)`` of the bias-free linear net, by ``jax.grad``."""
    b, lr = 4, 0.5
    ws = benchmark.ceiling_weights([6, 5, 3], jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (b, 6))
    new = jax.jit(benchmark.make_ceiling_fn([6, 5, 3], b, lr=lr))(ws, x[None])

    def loss(ws):
        h = x
        for w in ws:
            h = h @ w
        return 0.5 * jnp.sum(h**2) / b

    grads = jax.grad(loss)(ws)
    for w, w_new, g in zip(ws, new, grads):
        np.testing.assert_allclose((w - w_new) / lr, g, rtol=1e-4, atol=1e-6)
        assert float(jnp.max(jnp.abs(g))) > 1e-3  # a real, non-trivial update


def test_benchmark_main_writes_consistent_json(tmp_path, capsys):
    """bp (the reference), bp+remat and 2 seeds vmap vs sequential, end to end."""
    out = tmp_path / "bench.json"
    argv = [
        "--widths", ",".join(map(str, WIDTHS)),
        "--batch-size", str(BATCH),
        "--steps", str(STEPS),
        "--epochs", str(EPOCHS),
        "--rules", "bp",
        "--seeds", "2",
        "--out", str(out),
    ]  # fmt: skip
    result = benchmark.main(argv)
    printed = capsys.readouterr().out
    with open(out) as f:
        assert json.load(f) == json.loads(json.dumps(result))

    cfg = result["config"]
    assert cfg["widths"] == WIDTHS and cfg["batch_size"] == BATCH
    assert cfg["num_train"] == STEPS * BATCH and cfg["optimizer"] == "sgd"
    assert cfg["rules"] == ["bp"]
    assert result["flops"]["bp_flops_per_example"] == BP_FLOPS
    assert result["errors"] == []
    assert len(result["machine"]["loadavg"]) == 3

    ceil = result["ceiling"]
    assert len(ceil["epoch_seconds"]) == EPOCHS
    assert ceil["flops_per_second"] == pytest.approx(
        BP_FLOPS * STEPS * BATCH / ceil["seconds_per_epoch"]
    )
    # XLA's own count of the ceiling step: the bp matmuls plus the SGD axpy
    assert BP_FLOPS <= ceil["xla_flops_per_example"] <= 1.25 * BP_FLOPS

    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["bp", "bp+remat"]
    assert rows["bp+remat"]["kwargs"] == {"remat": True}
    assert rows["bp"]["relative_to_bp"] == rows["bp"]["relative_to_bp_min"] == 1.0
    for name, r in rows.items():
        assert name in printed
        assert len(r["epoch_seconds"]) == EPOCHS
        assert r["seconds_per_epoch"] == statistics.median(r["epoch_seconds"])
        assert r["examples_per_second"] * r["seconds_per_epoch"] == pytest.approx(
            STEPS * BATCH
        )
        assert r["seconds_per_step"] * STEPS == pytest.approx(r["seconds_per_epoch"])
        assert r["min_seconds_per_epoch"] == min(r["epoch_seconds"])
        assert len(r["epoch_cpu_seconds"]) == EPOCHS
        for k in (
            "relative_to_bp",
            "relative_to_bp_min",
            "fraction_of_ceiling",
            "fraction_of_ceiling_min",
            "relative_to_bp_cpu",
            "fraction_of_ceiling_cpu",
            "cpu_seconds_per_epoch",
            "compile_seconds",
        ):
            assert _positive(r[k]), (name, k, r[k])
        assert r["achieved_flops_per_second"] == pytest.approx(
            BP_FLOPS * r["examples_per_second"]
        )
        # XLA's count of one step: the analytic matmuls plus elementwise work
        assert BP_FLOPS <= r["xla_flops_per_example"] <= 1.25 * BP_FLOPS, name
        mem = r["memory"]
        assert mem["argument_size_in_bytes"] >= cfg["data_bytes"]  # data is an arg
        assert mem["temp_size_in_bytes"] >= 0
        assert mem["resident_bytes"] >= mem["argument_size_in_bytes"]

    seeds = result["seeds"]
    assert seeds["rule"] == "bp" and seeds["num_seeds"] == 2
    assert _positive(seeds["vmap_over_sequential"])
    assert _positive(seeds["vmap_over_sequential_min"])
    assert _positive(seeds["vmap_over_sequential_cpu"])
    for key in ("vmap", "sequential"):
        r = seeds[key]
        assert r["examples_per_second"] * r["seconds_per_epoch"] == pytest.approx(
            2 * STEPS * BATCH
        )
    # the vmapped program holds two seeds' state: more memory than one seed's
    assert (
        seeds["vmap"]["memory"]["output_size_in_bytes"]
        > rows["bp"]["memory"]["output_size_in_bytes"]
    )

    # no ceiling target for this net, no relative target for bp+remat
    assert [t["what"] for t in result["targets"]] == ["2 seeds vmap / sequential"]
    assert result["targets"][0]["value_cpu"] == seeds["vmap_over_sequential_cpu"]


def test_targets_apply_to_their_net_only():
    def result(widths, batch):
        rows = [
            {"name": "bp", "fraction_of_ceiling": 0.9, "relative_to_bp": 1.0},
            {"name": "fa", "fraction_of_ceiling": 0.7, "relative_to_bp": 1.2},
            {"name": "dfa", "fraction_of_ceiling": 0.9, "relative_to_bp": 1.01},
        ]
        seeds = {"num_seeds": 3, "vmap_over_sequential": 0.8}
        cfg = {"widths": widths, "batch_size": batch}
        return {"config": cfg, "rows": rows, "seeds": seeds}

    targets = benchmark.check_targets(result([784, 1000, 1000, 10], 256))
    assert {t["what"]: (t["value"], t["met"]) for t in targets} == {
        "bp fraction of matmul ceiling": (0.9, True),
        "fa time per step / bp": (1.2, False),
        "dfa time per step / bp": (1.01, True),
        "3 seeds vmap / sequential": (0.8, True),
    }
    assert all(t["value_cpu"] is None for t in targets)  # no CPU times given
    small = benchmark.check_targets(result([784, 256, 256, 10], 128))
    assert [t["what"] for t in small] == [  # relative targets: headline net only
        "bp fraction of matmul ceiling",
        "3 seeds vmap / sequential",
    ]
    assert small[0]["target"] == ">= 0.7"
    assert not any(
        "ceiling" in t["what"]
        for t in benchmark.check_targets(result([784, 256, 256, 10], 256))
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--rules", "bp,no_such_rule"],
        ["--set", "sg.synth_width"],
        ["--widths", "10"],
        ["--steps", "0"],
    ],
)
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        benchmark.parse_args(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_set_overrides_and_diagnostics_off():
    args = benchmark.parse_args(["--set", "bp.remat=true", "--set", "fa.scale=0.5"])
    assert args.set == {"bp": {"remat": True}, "fa": {"scale": 0.5}}
    assert benchmark.rule_kwargs("bp", args.set) == {"remat": True}
    if "sg" in RULES:  # rules with a diagnostics switch run with it off
        assert benchmark.rule_kwargs("sg", {}) == {"diagnostics": False}


@pytest.mark.slow
def test_every_registered_rule_benchmarks(tmp_path):
    result = benchmark.main(
        [
            "--widths", ",".join(map(str, WIDTHS)),
            "--batch-size", str(BATCH),
            "--steps", "2",
            "--epochs", "1",
            "--warmup", "0",
            "--no-seeds",
            "--no-remat",
            "--out", str(tmp_path / "bench.json"),
        ]
    )  # fmt: skip
    assert result["errors"] == []
    rows = {r["name"]: r for r in result["rows"]}
    assert sorted(rows) == sorted(RULES)
    for name, r in rows.items():
        assert _positive(r["examples_per_second"]), name
        assert _positive(r["xla_flops_per_example"]), name
    # the counts the script's docstring documents: fa = bp's matmuls, dfa fewer
    if "fa" in rows:
        assert 0.9 <= rows["fa"]["xla_flops_relative_to_bp"] <= 1.3
    if "dfa" in rows:
        assert (
            rows["dfa"]["xla_flops_per_example"] <= rows["bp"]["xla_flops_per_example"]
        )


# ------------------------------------------------------------------ conv benchmark

_CONV_PATH = os.path.join(os.path.dirname(_PATH), "benchmark_conv.py")
_conv_spec = importlib.util.spec_from_file_location("_benchmark_conv", _CONV_PATH)
benchmark_conv = importlib.util.module_from_spec(_conv_spec)
sys.modules[_conv_spec.name] = benchmark_conv
_conv_spec.loader.exec_module(benchmark_conv)


def test_conv_matmul_shapes_and_flops_of_lenet_by_hand():
    """LeNet-5 on 32x32: conv1 28x28 outputs of 5*5*1 taps -> 6, conv2 10x10 of
    5*5*6 -> 16, conv3 1x1 of 5*5*16 -> 120, then 120 -> 84 -> 10."""
    from bp_alternatives.model import lenet

    b = 2
    shapes = benchmark_conv.matmul_shapes(lenet((32, 32, 1), 10), b)
    assert shapes == [
        (b * 28 * 28, 25, 6),
        (b * 10 * 10, 150, 16),
        (b, 400, 120),
        (b, 120, 84),
        (b, 84, 10),
    ]
    want = 2 * 2 * 784 * 25 * 6 + 3 * 2 * (
        100 * 150 * 16 + 400 * 120 + 120 * 84 + 84 * 10
    )
    assert benchmark_conv.bp_flops_per_example(shapes, b) == want


def test_conv_ceiling_does_the_products_of_a_bp_step():
    """One step of the ceiling: W -= lr A^T (A W) 1e-3 per part."""
    shapes = [(6, 4, 3), (5, 3, 2)]
    rng = np.random.RandomState(0)
    ws = tuple(jnp.asarray(rng.randn(i, o), jnp.float32) for _, i, o in shapes)
    As = tuple(jnp.asarray(rng.randn(r, i), jnp.float32) for r, i, _ in shapes)
    (new, acc) = benchmark_conv.make_conv_ceiling(1, lr=0.5)((ws, jnp.zeros(())), As)
    for w, A, n in zip(ws, As, new):
        np.testing.assert_allclose(n, w - 0.5 * A.T @ (A @ w * 1e-3), rtol=1e-5)
    D = As[1] @ ws[1] * 1e-3
    np.testing.assert_allclose(acc, jnp.sum(D @ ws[1].T), rtol=1e-5)


def test_conv_benchmark_main_runs_both_conv_implementations(tmp_path, capsys):
    out = tmp_path / "conv.json"
    argv = ["--model", "lenet", "--rules", "bp", "--batch-size", "4"]
    argv += ["--steps", "2", "--epochs", "1", "--warmup", "1", "--out", str(out)]
    result = benchmark_conv.main(argv)
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    names = [r["name"] for r in result["rows"]]
    assert names == ["bp matmul", "bp lax"]
    for r in result["rows"]:
        assert _positive(r["examples_per_second"]) and _positive(
            r["fraction_of_ceiling"]
        )
        assert r["memory"]["resident_bytes"] > 0
    assert result["rows"][0]["relative_to_bp"] == 1.0
    assert "| bp lax |" in capsys.readouterr().out
