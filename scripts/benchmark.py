"""Benchmark the learning rules: speed, cost relative to bp, FLOP/s against the
machine's own matrix-multiply ceiling, compiled memory, remat, and seeds under vmap.

Usage::

    python scripts/benchmark.py              # 784-1000-1000-10, batch 256, all rules
    python scripts/benchmark.py --widths 784,256,256,10 --batch-size 128
    python scripts/benchmark.py --rules bp,fa --epochs 9 --out bench.json

What is measured, for every registered rule (``--rules``) on an MLP (``--widths``,
float32) trained with the trainer's own ``make_epoch_fn`` (one shuffled epoch = one
compiled ``lax.scan``, state donated) on synthetic data resident on the device
(``N = steps * batch`` random normal inputs, uniform random labels):

* ``ex/s``: examples per second, the median over ``--epochs`` timed epochs after
  ``--warmup`` untimed ones. Programs are compiled ahead (``lower().compile()``), so
  compilation is never timed; every timed epoch ends with ``block_until_ready``.
  Variants are timed round-robin (one epoch of each per round, the order rotated
  each round) so that a change in the machine's load hits all of them alike.
* ``vs bp``: time per step over ``bp``'s, the median of the per-round ratios.
* ``cpu:`` columns: the same two ratios in this process's CPU time (all threads).
  On a machine other jobs share, wall time swings with their load while CPU time
  tracks the work done, so these are the steadier comparison; the performance
  targets are judged on wall time. The JSON also keeps every epoch's times and the
  ratios of the fastest epochs (``*_min``).
* ``% ceil``: achieved FLOP/s over the matmul ceiling measured in the same run,
  both counted with the *bp-equivalent* FLOPs below (so rules compare: a rule that
  does twice bp's arithmetic in the same time shows the same fraction as bp; its own
  count is reported beside it). The ceiling is a jitted ``lax.scan`` over the same
  inputs doing exactly the matmuls of one bp step per step (forward, ``dW`` and the
  delta sent down for every Dense layer except the first), with the weight update
  ``W -= lr * dW`` as the loop-carried dependency (without it XLA may hoist the
  loop-invariant work out of the loop); no bias, nonlinearity, loss or gather.
* memory: XLA's ``compiled.memory_analysis()`` of each rule's epoch program: every
  ``CompiledMemoryStats`` field, plus ``resident = argument + output - alias + temp``
  (``argument`` includes the training set; ``temp`` is the rule's working memory).
* ``bp+remat``: ``bp`` with ``remat=True`` (per-stage ``jax.checkpoint``).
* seeds: ``--seeds`` seeds of ``--seeds-rule`` (default ``bp``) in one program
  (``jax.vmap`` of the epoch over a leading seed axis of the state and key; data
  shared) against the same seeds run one after another by the single-seed program.

FLOP counts (per example; a Dense layer ``l`` maps ``n_l -> n_{l+1}``, one matmul of
``[1, n_l] x [n_l, n_{l+1}]`` is ``2 n_l n_{l+1}`` FLOPs):

* bp / manual_bp (exact, the *bp-equivalent* count): forward ``2 n_l n_{l+1}`` and
  ``dW`` ``2 n_l n_{l+1}`` for every layer, plus the delta sent down ``2 n_l n_{l+1}``
  for every layer but the first (the input needs no gradient):
  ``6 sum_l n_l n_{l+1} - 2 n_0 n_1``.
* fa: the same as bp (``B_l`` in place of ``W_l^T``, same shapes).
* dfa: forward + ``dW`` as bp, the deltas ``e B_l`` cost ``2 K n_{l+1}`` per hidden
  layer (``K`` outputs) instead of ``2 n_l n_{l+1}``.
* ff: hidden stages only (the model's read-out gets a zero direction): forward and
  ``dW`` on positive and negative examples (``2 x 2 x 2 n_l n_{l+1}``) plus one
  forward with the neutral label for the softmax read-out (``2 n_l n_{l+1}``):
  about ``10 sum_hidden n_l n_{l+1}``, plus the read-out's own small matmuls.
* sg: forward and ``dW`` per layer as bp; per hidden stage of width ``n`` with a
  one-hidden-layer synthesizer of width ``w``: its forward ``4 n w``, its regression
  gradient ``6 n w`` (``dW`` of both layers and the delta between them), and the
  bootstrapped target, a delta through the next stage (``2 n_{l+1} n_{l+2}``).
* ep: ``T1 + 2 T2`` relaxation steps (symmetric nudging; one-sided ``T1 + T2``), each
  the drive up and the drive down of every stage but the clamped first
  (``4 sum_{l>=2} n_{l-1} n_l``), plus the input's drive once and the contrast's
  ``dW``. XLA's count below takes each loop body once, whatever ``T1``.

On 784-1000-1000-10 these give, in MFLOP per example: bp 9.196, fa 9.196, dfa 7.216,
ff 17.88, sg (``w = 256``) 14.3; XLA counts 9.22, 9.25, 7.24, 17.96, 14.42 (jax
0.10.2, CPU), the difference being elementwise work.

Each row also gives ``xla GF/ex``: XLA's own count (``compiled.cost_analysis()``) of
one training step of that rule, per example, which includes elementwise work; the
bp-equivalent count above is what ``% ceil`` uses. The default optimizer is plain
SGD (``optax.sgd``) so that an optimizer's elementwise work does not hide the
rules' differences (``--optimizer`` changes it).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import yaml
from jax import lax

from bp_alternatives.model import mlp
from bp_alternatives.model.losses import get_loss
from bp_alternatives.optim import OPTIMIZERS, make_optimizer
from bp_alternatives.rules import RULES, UnsupportedModelError
from bp_alternatives.train import init_state, make_epoch_fn

# Performance targets (reported, never asserted): bp's fraction of the matmul
# ceiling per (widths, batch size), cost relative to bp on the headline net, and
# seeds under vmap no slower than one after another.
HEADLINE = ((784, 1000, 1000, 10), 256)
CEILING_TARGETS = {HEADLINE: 0.85, ((784, 256, 256, 10), 128): 0.70}
RELATIVE_TARGETS = {"manual_bp": 1.10, "fa": 1.15, "dfa": 1.05, "sg": 1.8, "ff": 2.5}
MEMORY_FIELDS = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "alias_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
    "peak_memory_in_bytes",
    "host_argument_size_in_bytes",
    "host_output_size_in_bytes",
    "host_alias_size_in_bytes",
    "host_temp_size_in_bytes",
    "host_generated_code_size_in_bytes",
)


# ------------------------------------------------------------------------ counting


def layer_shapes(widths: Sequence[int]) -> list[tuple[int, int]]:
    """``(n_l, n_{l+1})`` for every Dense layer."""
    return list(zip(widths[:-1], widths[1:]))


def bp_flops_per_example(widths: Sequence[int]) -> int:
    """Matmul FLOPs of one bp step per example: forward and ``dW`` for every layer,
    the delta sent down for every layer but the first."""
    per_layer = [2 * n_in * n_out for n_in, n_out in layer_shapes(widths)]
    return 3 * sum(per_layer) - per_layer[0]


def xla_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled program (``None`` if it gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def memory_stats(compiled) -> dict[str, int]:
    """Every available ``CompiledMemoryStats`` field, plus ``resident_bytes``."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    out = {k: int(getattr(stats, k)) for k in MEMORY_FIELDS if hasattr(stats, k)}
    out["resident_bytes"] = (
        out.get("argument_size_in_bytes", 0)
        + out.get("output_size_in_bytes", 0)
        - out.get("alias_size_in_bytes", 0)
        + out.get("temp_size_in_bytes", 0)
    )
    return out


# ------------------------------------------------------------------------ ceiling


def _dot(a, b, contract_a: int, contract_b: int):
    return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())))


def make_ceiling_fn(widths: Sequence[int], batch_size: int, lr: float = 1e-4):
    """``ceiling(weights, xs) -> weights``: a ``lax.scan`` over ``xs`` ``[S, B, n_0]``
    doing exactly the matmuls of one bp step per step (same shapes and contraction
    layouts as the autodiff of ``x @ W``), then ``W -= lr * dW``."""

    def step(ws, x):
        acts = [x]  # layer inputs [B, n_l]
        for w in ws:
            acts.append(_dot(acts[-1], w, 1, 0))  # forward   [B, n_l] x [n_l, n_l+1]
        d = acts[-1] * (1.0 / batch_size)  # stand-in for dL/d(out)
        new = list(ws)
        for l in reversed(range(len(ws))):
            dw = _dot(acts[l], d, 0, 0)  # dW = x^T d   [n_l, B] x [B, n_l+1]
            if l > 0:
                d = _dot(d, ws[l], 1, 1)  # delta down  [B, n_l+1] x [n_l+1, n_l]
            new[l] = ws[l] - lr * dw
        return tuple(new), None

    def ceiling(ws, xs):
        return lax.scan(step, ws, xs)[0]

    return ceiling


def ceiling_weights(widths: Sequence[int], key) -> tuple[jax.Array, ...]:
    """Weights scaled ``1/sqrt(n_l)`` so activities stay O(1) (no denormals, no inf)."""
    keys = jax.random.split(key, len(widths) - 1)
    return tuple(
        jax.random.normal(k, (n_in, n_out), jnp.float32) / math.sqrt(n_in)
        for k, (n_in, n_out) in zip(keys, layer_shapes(widths))
    )


# ------------------------------------------------------------------------ variants


@dataclass
class Variant:
    """One timed program: ``run()`` does one epoch and blocks until it is done."""

    name: str
    run: Callable[[], None]
    examples_per_epoch: int
    info: dict[str, Any] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)  # wall seconds per epoch
    cpu_times: list[float] = field(default_factory=list)  # process CPU seconds


def _epoch_runner(compiled, states: list, x, y, keys: list) -> Callable[[], None]:
    """Run one epoch of every state in ``states`` in turn, each to completion."""
    epoch = [0]

    def run() -> None:
        epoch[0] += 1
        for i, key in enumerate(keys):
            states[i], metrics = compiled(states[i], x, y, key, epoch[0])
            jax.block_until_ready((states[i], metrics))

    return run


def rule_kwargs(name: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Benchmark kwargs of a rule: diagnostics off where a rule has the switch (they
    run extra work, e.g. exact backprop, that is not part of the rule), then
    ``--set`` overrides."""
    kwargs: dict[str, Any] = {}
    if "diagnostics" in inspect.signature(RULES[name]).parameters:
        kwargs["diagnostics"] = False
    kwargs.update(overrides.get(name, {}))
    return kwargs


def _program_key(name: str, kwargs: dict[str, Any]) -> str:
    return json.dumps([name, kwargs], sort_keys=True, default=str)


def build_rule_variant(
    label: str, name: str, kwargs: dict[str, Any], setup: dict[str, Any]
) -> Variant:
    """Compile one rule's epoch program; record compile time, memory and FLOPs."""
    model, loss, opt = setup["model"], setup["loss"], setup["optimizer"]
    x, y, b, n = setup["x"], setup["y"], setup["batch_size"], setup["num_train"]
    rule = RULES[name](model, loss, **kwargs)
    state = init_state(model, rule, opt, jax.random.key(setup["seed"]))
    key = jax.random.key(setup["seed"] + 1)
    t0 = time.perf_counter()
    epoch_fn = jax.jit(make_epoch_fn(rule, opt, n, b), donate_argnums=0)
    compiled = epoch_fn.lower(state, x, y, key, 1).compile()
    setup["programs"][_program_key(name, kwargs)] = compiled
    info: dict[str, Any] = {
        "rule": name,
        "kwargs": kwargs,
        "compile_seconds": time.perf_counter() - t0,
        "memory": memory_stats(compiled),
    }
    if setup["xla_flops"]:  # one step's count: an epoch of a single batch
        one = jax.jit(make_epoch_fn(rule, opt, b, b))
        flops = xla_flops(one.lower(state, x[:b], y[:b], key, 1).compile())
        info["xla_flops_per_example"] = None if flops is None else flops / b
    run = _epoch_runner(compiled, [state], x, y, [key])
    return Variant(label, run, n, info)


def build_seed_variants(rule_name: str, seeds: int, setup: dict[str, Any]):
    """``seeds`` seeds in one vmapped program, and one after another."""
    model, loss, opt = setup["model"], setup["loss"], setup["optimizer"]
    x, y, b, n = setup["x"], setup["y"], setup["batch_size"], setup["num_train"]
    kwargs = rule_kwargs(rule_name, setup["overrides"])
    rule = RULES[rule_name](model, loss, **kwargs)
    init = jax.vmap(lambda k: init_state(model, rule, opt, k))
    keys = jax.random.split(jax.random.key(setup["seed"] + 2), seeds)
    train_keys = jax.random.split(jax.random.key(setup["seed"] + 3), seeds)
    states = init(keys)
    t0 = time.perf_counter()
    vmapped = jax.vmap(make_epoch_fn(rule, opt, n, b), in_axes=(0, None, None, 0, None))
    compiled = (
        jax.jit(vmapped, donate_argnums=0).lower(states, x, y, train_keys, 1).compile()
    )
    info = {
        "rule": rule_name,
        "kwargs": kwargs,
        "num_seeds": seeds,
        "compile_seconds": time.perf_counter() - t0,
        "memory": memory_stats(compiled),
    }
    vmap_variant = Variant(
        f"{rule_name} x{seeds} vmap",
        _epoch_runner(compiled, [states], x, y, [train_keys]),
        seeds * n,
        info,
    )
    one_state = [init_state(model, rule, opt, k) for k in keys]
    compiled_one = setup["programs"].get(_program_key(rule_name, kwargs))
    if compiled_one is None:  # the single-seed program, unless a row compiled it
        single = jax.jit(make_epoch_fn(rule, opt, n, b), donate_argnums=0)
        compiled_one = single.lower(one_state[0], x, y, train_keys[0], 1).compile()
    seq_variant = Variant(
        f"{rule_name} x{seeds} seq",
        _epoch_runner(compiled_one, one_state, x, y, list(train_keys)),
        seeds * n,
        {"rule": rule_name, "kwargs": kwargs, "num_seeds": seeds},
    )
    return vmap_variant, seq_variant


def build_ceiling_variant(setup: dict[str, Any]) -> Variant:
    widths, b, steps = setup["widths"], setup["batch_size"], setup["steps"]
    xs = setup["x"].reshape(steps, b, widths[0])
    ws = [ceiling_weights(widths, jax.random.key(setup["seed"] + 4))]
    fn = make_ceiling_fn(widths, b)
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=0).lower(ws[0], xs).compile()
    info: dict[str, Any] = {"compile_seconds": time.perf_counter() - t0}
    flops = xla_flops(jax.jit(fn).lower(ws[0], xs[:1]).compile())
    info["xla_flops_per_example"] = None if flops is None else flops / b

    def run() -> None:
        ws[0] = compiled(ws[0], xs)
        jax.block_until_ready(ws[0])

    return Variant("matmul ceiling", run, steps * b, info)


# ------------------------------------------------------------------------ running


def time_round_robin(variants: list[Variant], warmup: int, epochs: int) -> None:
    """``warmup + epochs`` rounds, one epoch of every variant per round (order
    rotated each round); the last ``epochs`` rounds are recorded: wall time and
    this process's CPU time (all its threads), which other load inflates less."""
    for r in range(warmup + epochs):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            c0, t0 = time.process_time(), time.perf_counter()
            v.run()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r >= warmup:
                v.times.append(dt)
                v.cpu_times.append(dc)


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def summarise(
    variants: list[Variant], ceiling: Variant, bp: Variant, setup: dict[str, Any]
) -> list[dict[str, Any]]:
    """One JSON row per variant."""
    bp_flops = setup["bp_flops_per_example"]
    steps, b = setup["steps"], setup["batch_size"]
    rows = []
    for v in variants:
        t = statistics.median(v.times)
        ex_s = v.examples_per_epoch / t
        seeds = v.examples_per_epoch // (steps * b)
        # achieved / ceiling, both bp-equivalent, per round: (t_ceil / t_v) * seeds
        frac = [seeds * tc / tv for tc, tv in zip(ceiling.times, v.times)]
        row = {
            "name": v.name,
            **v.info,
            "examples_per_second": ex_s,
            "seconds_per_epoch": t,
            "seconds_per_step": t / steps,
            "relative_to_bp": _median_ratio(v.times, bp.times) / seeds,
            "achieved_flops_per_second": bp_flops * ex_s,
            "fraction_of_ceiling": statistics.median(frac),
            # fastest epochs: the least disturbed by other load on a shared machine
            "min_seconds_per_epoch": min(v.times),
            "relative_to_bp_min": min(v.times) / min(bp.times) / seeds,
            "fraction_of_ceiling_min": seeds * min(ceiling.times) / min(v.times),
            # CPU time of the process: closer to the work done when others load the
            # machine (it still counts the thread pool's spinning)
            "cpu_seconds_per_epoch": statistics.median(v.cpu_times),
            "relative_to_bp_cpu": _median_ratio(v.cpu_times, bp.cpu_times) / seeds,
            "fraction_of_ceiling_cpu": statistics.median(
                seeds * tc / tv for tc, tv in zip(ceiling.cpu_times, v.cpu_times)
            ),
            "epoch_seconds": v.times,
            "epoch_cpu_seconds": v.cpu_times,
        }
        if row.get("xla_flops_per_example") is not None:
            row["xla_flops_relative_to_bp"] = row["xla_flops_per_example"] / bp_flops
        rows.append(row)
    return rows


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets that apply to this run, with the measured values (wall
    time, which the targets are about; ``value_cpu``: the same in CPU time)."""
    rows = {r["name"]: r for r in result["rows"]}
    cfg = result["config"]
    checks = []  # (what, ">=" or "<=", limit, source dict, key)
    net = (tuple(cfg["widths"]), cfg["batch_size"])
    ceil_target = CEILING_TARGETS.get(net)
    if ceil_target is not None and "bp" in rows:
        checks.append(
            ("bp fraction of matmul ceiling", ">=", ceil_target, rows["bp"], "fraction")
        )
    for name, limit in RELATIVE_TARGETS.items():
        if name in rows and net == HEADLINE:
            checks.append(
                (f"{name} time per step / bp", "<=", limit, rows[name], "relative")
            )
    if result.get("seeds"):
        n = result["seeds"]["num_seeds"]
        checks.append((f"{n} seeds vmap / sequential", "<=", 1.0, result["seeds"], ""))
    keys = {
        "fraction": "fraction_of_ceiling",
        "relative": "relative_to_bp",
        "": "vmap_over_sequential",
    }
    out = []
    for what, op, limit, src, kind in checks:
        value = src[keys[kind]]
        out.append(
            {
                "what": what,
                "target": f"{op} {limit}",
                "value": value,
                "value_cpu": src.get(f"{keys[kind]}_cpu"),
                "met": value >= limit if op == ">=" else value <= limit,
            }
        )
    return out


# ------------------------------------------------------------------------ output


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The printed summary: one line per variant, then seeds, targets, notes."""
    cfg, ceil = result["config"], result["ceiling"]
    head = (
        f"{'variant':<18}{'ex/s':>10}{'ms/step':>9}{'vs bp':>7}{'GFLOP/s':>9}"
        f"{'% ceil':>8}{'cpu:vs bp':>10}{'% ceil':>8}"
        f"{'xla GF/ex':>10}{'temp MiB':>9}{'resid MiB':>10}"
        f"{'compile s':>10}"
    )
    lines = [
        f"model {'-'.join(map(str, cfg['widths']))} {cfg['activation']}, batch "
        f"{cfg['batch_size']}, {cfg['steps']} steps/epoch, float32, optimizer "
        f"{cfg['optimizer']} (plain SGD by default so optimizer cost does not "
        "dominate); median of "
        f"{cfg['epochs']} timed epochs after {cfg['warmup']} warm-up; cpu: the same "
        "ratios in process CPU time (less sensitive to other load)",
        f"{result['machine']['device']}, load average {result['machine']['loadavg']}",
        f"matmul ceiling: {ceil['flops_per_second'] / 1e9:.1f} GFLOP/s "
        f"({ceil['seconds_per_epoch'] * 1e3 / cfg['steps']:.2f} ms/step); bp-equivalent"
        f" count {result['flops']['bp_flops_per_example'] / 1e6:.3f} MFLOP/example",
        head,
        "-" * len(head),
    ]
    for r in result["rows"]:
        mem = r.get("memory", {})
        xla = r.get("xla_flops_per_example")
        lines.append(
            f"{r['name']:<18}{r['examples_per_second']:>10.0f}"
            f"{r['seconds_per_step'] * 1e3:>9.2f}{r['relative_to_bp']:>7.2f}"
            f"{r['achieved_flops_per_second'] / 1e9:>9.1f}"
            f"{100 * r['fraction_of_ceiling']:>7.1f}%"
            f"{r['relative_to_bp_cpu']:>10.2f}"
            f"{100 * r['fraction_of_ceiling_cpu']:>7.1f}%"
            f"{'-' if xla is None else f'{xla / 1e6:.3f}':>10}"
            f"{_mib(mem.get('temp_size_in_bytes')):>9}"
            f"{_mib(mem.get('resident_bytes')):>10}"
            f"{r.get('compile_seconds', float('nan')):>10.1f}"
        )
    for e in result["errors"]:
        lines.append(f"{e['name']:<18}skipped: {e['error']}")
    if result.get("seeds"):
        s = result["seeds"]
        lines.append(
            f"seeds: {s['num_seeds']} x {s['rule']} under vmap "
            f"{s['vmap_seconds_per_epoch'] * 1e3:.1f} ms/epoch vs one after another "
            f"{s['sequential_seconds_per_epoch'] * 1e3:.1f} ms/epoch: ratio "
            f"{s['vmap_over_sequential']:.2f} (fastest epochs "
            f"{s['vmap_over_sequential_min']:.2f}, CPU time "
            f"{s['vmap_over_sequential_cpu']:.2f})"
        )
    for t in result["targets"]:
        mark = "met" if t["met"] else "MISSED"
        cpu = "" if t["value_cpu"] is None else f" (cpu time {t['value_cpu']:.3f})"
        lines.append(f"target {t['what']} {t['target']}: {t['value']:.3f} {mark}{cpu}")
    return "\n".join(lines)


# ------------------------------------------------------------------------ main


def _parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``rule.key=value`` (YAML value) -> ``{rule: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        lhs, sep, value = item.partition("=")
        rule, dot, key = lhs.partition(".")
        if not sep or not dot or not rule or not key:
            raise ValueError(f"--set expects rule.key=value, got {item!r}")
        out.setdefault(rule, {})[key] = yaml.safe_load(value)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--widths", default="784,1000,1000,10", help="MLP widths, in..out")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (N/batch)")
    p.add_argument("--epochs", type=int, default=7, help="timed epochs (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    p.add_argument(
        "--rules",
        default=None,
        help="comma-separated rules (default: every registered rule); bp, the "
        "reference, is always run",
    )
    p.add_argument("--activation", default="tanh")
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, default=3, help="seeds for vmap vs sequential")
    p.add_argument("--seeds-rule", default="bp")
    p.add_argument("--no-remat", action="store_true", help="skip the bp+remat row")
    p.add_argument("--no-seeds", action="store_true", help="skip vmap vs sequential")
    p.add_argument(
        "--no-xla-flops",
        action="store_true",
        help="skip XLA's per-rule FLOP count (saves one compile per rule)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="RULE.KEY=VALUE",
        help="rule kwarg override, e.g. --set sg.synth_width=512 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/benchmark.json", help="JSON output path")
    args = p.parse_args(argv)
    args.widths = [int(w) for w in args.widths.split(",")]
    if len(args.widths) < 2:
        p.error("--widths needs at least an input and an output width")
    names = list(RULES) if args.rules is None else args.rules.split(",")
    unknown = [r for r in names if r not in RULES]
    if unknown:
        p.error(f"unknown rules {unknown}; registered: {sorted(RULES)}")
    args.rules = ["bp"] + [r for r in dict.fromkeys(names) if r != "bp"]
    if args.seeds_rule not in RULES:
        p.error(f"unknown --seeds-rule {args.seeds_rule!r}")
    try:
        args.set = _parse_set(args.set)
    except ValueError as e:
        p.error(str(e))
    for v in ("batch_size", "steps", "epochs", "seeds"):
        if getattr(args, v) < 1:
            p.error(f"--{v.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table, write the JSON, return it as a dict."""
    args = parse_args(argv)
    widths, b, steps = args.widths, args.batch_size, args.steps
    n = steps * b
    load_start = os.getloadavg()
    kx, ky = jax.random.split(jax.random.key(args.seed))
    x = jax.random.normal(kx, (n, widths[0]), jnp.float32)
    y = jax.random.randint(ky, (n,), 0, widths[-1], jnp.int32)
    model = mlp(
        (widths[0],), widths[-1], hidden=widths[1:-1], activation=args.activation
    )
    optimizer = make_optimizer(args.optimizer, args.lr, total_steps=steps)
    setup = {
        "model": model,
        "loss": get_loss("cross_entropy"),
        "optimizer": optimizer,
        "x": x,
        "y": y,
        "widths": widths,
        "batch_size": b,
        "steps": steps,
        "num_train": n,
        "seed": args.seed,
        "xla_flops": not args.no_xla_flops,
        "overrides": args.set,
        "programs": {},  # compiled epoch programs by (rule, kwargs), for reuse
        "bp_flops_per_example": bp_flops_per_example(widths),
    }

    variants, errors = [], []
    plan = [("bp", "bp", rule_kwargs("bp", args.set))]
    if not args.no_remat:
        plan.append(("bp+remat", "bp", {**rule_kwargs("bp", args.set), "remat": True}))
    plan += [(r, r, rule_kwargs(r, args.set)) for r in args.rules if r != "bp"]
    for label, name, kwargs in plan:
        try:
            variants.append(build_rule_variant(label, name, kwargs, setup))
        except UnsupportedModelError as e:
            errors.append({"name": label, "error": str(e)})
        print(f"compiled {label}", file=sys.stderr, flush=True)
    seed_variants = []
    if not args.no_seeds:
        seed_variants = list(build_seed_variants(args.seeds_rule, args.seeds, setup))
    ceiling = build_ceiling_variant(setup)
    everything = [ceiling, *variants, *seed_variants]
    time_round_robin(everything, args.warmup, args.epochs)

    bp = variants[0]
    rows = summarise(variants + seed_variants, ceiling, bp, setup)
    t_ceil = statistics.median(ceiling.times)
    result: dict[str, Any] = {
        "config": {
            "widths": widths,
            "batch_size": b,
            "steps": steps,
            "num_train": n,
            "epochs": args.epochs,
            "warmup": args.warmup,
            "activation": args.activation,
            "dtype": "float32",
            "optimizer": args.optimizer,
            "lr": args.lr,
            "rules": args.rules,
            "seeds": args.seeds,
            "data": "synthetic, on device: x ~ N(0, 1), y ~ U{0..K-1}",
            "data_bytes": int(x.nbytes + y.nbytes),
            "command": " ".join(
                [
                    "python scripts/benchmark.py",
                    *(sys.argv[1:] if argv is None else argv),
                ]
            ),
        },
        "machine": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind),
            "num_devices": jax.device_count(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": list(load_start),
            "loadavg": [round(v, 2) for v in os.getloadavg()],
        },
        "flops": {
            "bp_flops_per_example": setup["bp_flops_per_example"],
            "counting": "6 sum_l n_l n_(l+1) - 2 n_0 n_1 per example: forward, dW, "
            "and delta sent down for all layers but the first; fraction_of_ceiling "
            "uses this bp-equivalent count for every rule",
        },
        "ceiling": {
            "what": "lax.scan of one bp step's matmuls per step + W -= lr dW",
            "seconds_per_epoch": t_ceil,
            "flops_per_second": setup["bp_flops_per_example"] * n / t_ceil,
            "epoch_seconds": ceiling.times,
            "epoch_cpu_seconds": ceiling.cpu_times,
            **ceiling.info,
        },
        "rows": [r for r in rows if r["name"] not in {v.name for v in seed_variants}],
        "errors": errors,
        "seeds": None,
    }
    if seed_variants:
        vm, sq = (next(r for r in rows if r["name"] == v.name) for v in seed_variants)
        result["seeds"] = {
            "rule": args.seeds_rule,
            "num_seeds": args.seeds,
            "vmap_seconds_per_epoch": vm["seconds_per_epoch"],
            "sequential_seconds_per_epoch": sq["seconds_per_epoch"],
            "vmap_over_sequential": _median_ratio(
                seed_variants[0].times, seed_variants[1].times
            ),
            "vmap_over_sequential_min": min(seed_variants[0].times)
            / min(seed_variants[1].times),
            "vmap_over_sequential_cpu": _median_ratio(
                seed_variants[0].cpu_times, seed_variants[1].cpu_times
            ),
            "vmap": vm,
            "sequential": sq,
        }
    result["targets"] = check_targets(result)
    print(format_table(result))
    write_result(result, args.out)
    return result


def write_result(result: dict[str, Any], out: str) -> None:
    """``result`` as indented JSON at ``out`` (its folder created)."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
