"""Benchmark the learning rules on convolutional nets (LeNet-5, the default CNN):
speed, cost relative to bp, the fraction of a convolution ceiling, compiled memory,
and the patches + matmul convolutions against XLA's own.

Usage::

    python scripts/benchmark_conv.py                     # lenet, batch 64
    python scripts/benchmark_conv.py --model cnn --rules bp,fa --epochs 5

The rows are timed as in ``scripts/benchmark.py`` (whose helpers this reuses): each
rule's epoch program (the trainer's ``make_epoch_fn``, one ``lax.scan``, SGD momentum
0.9 as in the biotorch LeNet benchmark) compiled ahead, on synthetic data resident on
the device (``N = steps * batch`` random normal images, uniform random labels),
timed round-robin after ``--warmup`` untimed epochs; medians of wall and CPU time.
Each rule runs twice: with the model's convolutions as built (``matmul``: patches +
matmul with their own VJP on CPU, :mod:`bp_alternatives.model.conv`) and with
flax's plain ``lax.conv_general_dilated`` (``lax``).

``% ceil``: the convolution ceiling is a ``lax.scan`` doing, per step, exactly the
matrix products one bp step does on the patches + matmul path -- for every linear
part with patches ``A`` ``[B prod(M), prod(K) C]`` (a Dense part: ``[B, n_in]``)
and kernel ``W``: ``A W``, ``A^T D`` and, except for the first part, ``D W^T`` --
with ``W -= lr dW`` carried between steps; no im2col, col2im, bias, nonlinearity,
pooling or loss. Both it and every rule are counted with those bp-equivalent FLOPs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bp_alternatives.model import Model, apply_stage, cnn, lenet
from bp_alternatives.model.losses import get_loss
from bp_alternatives.optim import make_optimizer
from bp_alternatives.rules import RULES
from bp_alternatives.train import init_state, make_epoch_fn

_spec = importlib.util.spec_from_file_location(
    "_benchmark_mlp", os.path.join(os.path.dirname(__file__), "benchmark.py")
)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)

MODELS = {
    "lenet": (lambda: lenet((32, 32, 1), 10), (32, 32, 1)),
    "cnn": (lambda: cnn((28, 28, 1), 10), (28, 28, 1)),
}


def with_lax_convs(model: Model) -> Model:
    """The same model with flax's own ``lax.conv_general_dilated`` in every conv."""
    stages = tuple(
        s._replace(linear=s.linear.clone(conv_general_dilated=None))
        if hasattr(s.linear, "conv_general_dilated")
        else s
        for s in model.stages
    )
    return model._replace(stages=stages)


def matmul_shapes(model: Model, batch_size: int) -> list[tuple[int, int, int]]:
    """``(rows, inner, out)`` of each linear part's forward product on the patches
    path: a conv's ``[B prod(M), prod(K) C] x [prod(K) C, O]``, a Dense's
    ``[B, n_in] x [n_in, n_out]``."""
    shapes = []
    x = jax.ShapeDtypeStruct((batch_size, *model.input_shape), jnp.float32)
    for stage in model.stages:
        p = jax.eval_shape(lambda x, s=stage: s.linear.init(jax.random.key(0), x), x)
        W = p["params"]["kernel"].shape
        c = jax.eval_shape(lambda p, x, s=stage: apply_stage(s, p["params"], x), p, x)
        rows = math.prod(c.a.shape[:-1])
        shapes.append((rows, math.prod(W[:-1]), W[-1]))
        x = c.out
    return shapes


def bp_flops_per_example(shapes, batch_size: int) -> float:
    """Forward and dW for every part, the delta sent down for all but the first."""
    total = sum(
        2 * r * i * o * (2 if l == 0 else 3) for l, (r, i, o) in enumerate(shapes)
    )
    return total / batch_size


def make_conv_ceiling(steps: int, lr: float = 1e-4):
    """``ceiling((ws, acc), As) -> (ws, acc)``: ``steps`` bp steps' matrix products
    (module docstring); ``acc`` sums the deltas sent down so they are computed."""

    def ceiling(carry, As):
        def step(carry, _):
            ws, acc = carry
            new = []
            for l, (w, A) in enumerate(zip(ws, As)):
                D = bench._dot(A, w, 1, 0) * 1e-3  # forward, standing in for delta
                if l > 0:
                    acc = acc + jnp.sum(bench._dot(D, w, 1, 1))  # delta sent down
                new.append(w - lr * bench._dot(A, D, 0, 0))  # dW = A^T D
            return (tuple(new), acc), None

        return lax.scan(step, carry, None, length=steps)[0]

    return ceiling


def build_ceiling(setup: dict[str, Any]) -> bench.Variant:
    shapes, steps = setup["shapes"], setup["steps"]
    keys = jax.random.split(jax.random.key(setup["seed"] + 4), 2 * len(shapes))
    ws = tuple(
        jax.random.normal(k, (i, o)) / math.sqrt(i)
        for k, (_, i, o) in zip(keys, shapes)
    )
    As = tuple(
        jax.random.normal(k, (r, i))
        for k, (r, i, _) in zip(keys[len(shapes) :], shapes)
    )
    carry = [(ws, jnp.zeros(()))]
    fn = jax.jit(make_conv_ceiling(steps), donate_argnums=0)
    compiled = fn.lower(carry[0], As).compile()

    def run() -> None:
        carry[0] = compiled(carry[0], As)
        jax.block_until_ready(carry[0])

    return bench.Variant("conv ceiling", run, steps * setup["batch_size"], {})


def build_variant(label: str, rule_name: str, model: Model, setup) -> bench.Variant:
    """One rule's compiled epoch program on ``model``; compile time and memory."""
    x, y, b, n = setup["x"], setup["y"], setup["batch_size"], setup["num_train"]
    kwargs = bench.rule_kwargs(rule_name, {})
    rule = RULES[rule_name](model, setup["loss"], **kwargs)
    opt = setup["optimizer"]
    state = init_state(model, rule, opt, jax.random.key(setup["seed"]))
    key = jax.random.key(setup["seed"] + 1)
    t0 = time.perf_counter()
    epoch_fn = jax.jit(make_epoch_fn(rule, opt, n, b), donate_argnums=0)
    compiled = epoch_fn.lower(state, x, y, key, 1).compile()
    info = {
        "rule": rule_name,
        "kwargs": kwargs,
        "compile_seconds": time.perf_counter() - t0,
        "memory": bench.memory_stats(compiled),
    }
    return bench.Variant(
        label, bench._epoch_runner(compiled, [state], x, y, [key]), n, info
    )


def summarise(variants, ceiling, setup) -> list[dict[str, Any]]:
    """One row per variant: speed, cost vs bp (same conv implementation), % ceil."""
    flops = setup["bp_flops_per_example"]
    by_name = {v.name: v for v in variants}
    rows = []
    for v in variants:
        convs = v.name.split()[-1]
        bp = by_name.get(f"bp {convs}", variants[0])
        t = statistics.median(v.times)
        rows.append(
            {
                "name": v.name,
                **v.info,
                "examples_per_second": v.examples_per_epoch / t,
                "seconds_per_epoch": t,
                "relative_to_bp": bench._median_ratio(v.times, bp.times),
                "relative_to_bp_cpu": bench._median_ratio(v.cpu_times, bp.cpu_times),
                "fraction_of_ceiling": statistics.median(
                    tc / tv for tc, tv in zip(ceiling.times, v.times)
                ),
                "fraction_of_ceiling_cpu": statistics.median(
                    tc / tv for tc, tv in zip(ceiling.cpu_times, v.cpu_times)
                ),
                "achieved_flops_per_second": flops * v.examples_per_epoch / t,
                "cpu_seconds_per_epoch": statistics.median(v.cpu_times),
                "epoch_seconds": v.times,
                "epoch_cpu_seconds": v.cpu_times,
            }
        )
    return rows


def format_table(result: dict[str, Any]) -> str:
    lines = [
        "| variant | ex/s | s/epoch | vs bp | cpu: vs bp | % ceil | cpu: % ceil "
        "| compile s | resident MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        mem = r.get("memory", {}).get("resident_bytes")
        lines.append(
            f"| {r['name']} | {r['examples_per_second']:.0f} "
            f"| {r['seconds_per_epoch']:.3f} | {r['relative_to_bp']:.2f} "
            f"| {r['relative_to_bp_cpu']:.2f} | {100 * r['fraction_of_ceiling']:.1f} "
            f"| {100 * r['fraction_of_ceiling_cpu']:.1f} | {r['compile_seconds']:.1f} "
            f"| {bench._mib(mem)} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet", choices=sorted(MODELS))
    p.add_argument("--rules", default="bp,fa,dfa,manual_bp")
    p.add_argument("--convs", default="matmul,lax", help="matmul, lax or both")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (N/batch)")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/benchmark_conv.json")
    args = p.parse_args(argv)
    args.rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    args.convs = [c.strip() for c in args.convs.split(",") if c.strip()]
    unknown = [r for r in args.rules if r not in RULES]
    unknown += [c for c in args.convs if c not in ("matmul", "lax")]
    if unknown:
        p.error(f"unknown --rules/--convs {unknown}; rules: {sorted(RULES)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table, write the JSON, return it as a dict."""
    args = parse_args(argv)
    b, steps, n = args.batch_size, args.steps, args.steps * args.batch_size
    load_start = os.getloadavg()
    make_model, shape = MODELS[args.model]
    model = make_model()
    kx, ky = jax.random.split(jax.random.key(args.seed))
    shapes = matmul_shapes(model, b)
    setup = {
        "loss": get_loss("cross_entropy"),
        "optimizer": make_optimizer("sgd", 1e-3, total_steps=steps, momentum=0.9),
        "x": jax.random.normal(kx, (n, *shape), jnp.float32),
        "y": jax.random.randint(ky, (n,), 0, 10, jnp.int32),
        "batch_size": b,
        "steps": steps,
        "num_train": n,
        "seed": args.seed,
        "shapes": shapes,
        "bp_flops_per_example": bp_flops_per_example(shapes, b),
    }
    models = {"matmul": model, "lax": with_lax_convs(model)}
    variants = []
    for convs in args.convs:
        for r in ["bp", *(r for r in args.rules if r != "bp")]:
            variants.append(build_variant(f"{r} {convs}", r, models[convs], setup))
            print(f"compiled {r} {convs}", file=sys.stderr, flush=True)
    ceiling = build_ceiling(setup)
    bench.time_round_robin([ceiling, *variants], args.warmup, args.epochs)
    t_ceil = statistics.median(ceiling.times)
    result = {
        "config": {**{k: v for k, v in vars(args).items()}, "dtype": "float32"},
        "command": "python scripts/benchmark_conv.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": list(load_start),
            "loadavg": list(os.getloadavg()),
        },
        "ceiling": {
            "matmul_shapes": shapes,
            "bp_flops_per_example": setup["bp_flops_per_example"],
            "seconds_per_epoch": t_ceil,
            "flops_per_second": setup["bp_flops_per_example"] * n / t_ceil,
            "epoch_seconds": ceiling.times,
            "epoch_cpu_seconds": ceiling.cpu_times,
        },
        "rows": summarise(variants, ceiling, setup),
    }
    print(format_table(result))
    bench.write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
