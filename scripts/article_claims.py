"""Measure the "Gradient Backpropagation" article's claims (docs/article_claims.md).

Usage::

    python scripts/article_claims.py cost   --out outputs/claims/cost.json
    python scripts/article_claims.py memory --out outputs/claims/memory.json
    python scripts/article_claims.py plot --cost outputs/claims/cost.json \
        --memory outputs/claims/memory.json \
        --vanishing outputs/multirun/article_claims_vanishing \
        --depth outputs/multirun/article_claims_depth \
        --width outputs/multirun/article_claims_width

``cost``: for every rule on an MLP and a CNN, XLA's FLOP count
(``compiled.cost_analysis()``) and the median wall and CPU time of one compiled
forward pass (``model.output``) and of one compiled training direction
(``rule.update``: forward, loss and whatever the rule does instead of, or as, the
backward pass), and their ratios.

``memory``: XLA's ``compiled.memory_analysis()`` of ``rule.update`` on MLPs of
growing depth (``temp``: the working memory, where stored activations live), bp
with and without ``remat``.

Both compile programs only, on synthetic inputs (no data). Rules are built from
their ``configs/rule/*.yaml`` defaults (Hydra compose), as
``python -m experiments.train rule=<name>`` builds them.

``plot``: the figures ``docs/figures/claims_{cost,memory,vanishing,scaling}.png``
from the JSON files and the sweeps of the ``article_claims_*`` experiment configs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
from hydra import compose, initialize_config_dir

import bp_alternatives.config  # noqa: F401  (registers the config schemas)
from bp_alternatives.experiment import build_model, build_rule
from bp_alternatives.model import apply_stage, init_params, output
from bp_alternatives.model.losses import get_loss
from bp_alternatives.rules import Batch

CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "bp_alternatives",
    "configs",
)
RULES = ("bp", "manual_bp", "fa", "dfa", "sg", "ff", "pc", "ep")
SEGMENT_REMAT = "bp (remat per sqrt(L) stages)"
MEMORY_RULES = ("bp", "bp (remat)", SEGMENT_REMAT, "fa", "dfa", "sg", "ff", "pc")
# rule option overrides: sg's per-step exact-gradient diagnostic off (it is not part
# of the rule's cost); "bp (remat)" is bp with per-stage jax.checkpoint
RULE_OVERRIDES = {"sg": ["rule.diagnostics=false"], "bp (remat)": ["rule.remat=true"]}
# name: (model overrides, input shape, batch size)
ARCHS = {
    "MLP 784-1024-1024-10 tanh": (
        ["model=mlp", "model.hidden=[1024,1024]", "model.activation=tanh"],
        (784,),
        128,
    ),
    "CNN conv 32-64, dense 128, ReLU, 28x28": (["model=cnn"], (28, 28, 1), 128),
}
MEMORY_WIDTH, MEMORY_BATCH, MEMORY_DEPTHS = 256, 1024, (2, 4, 8, 16)
NUM_CLASSES = 10


def build(rule: str, model_overrides: Sequence[str], input_shape, batch_size: int):
    """(model, learning rule, params, rule state, batch, key) of ``rule`` (a
    ``configs/rule`` name, or ``"bp (remat)"``) on the model ``model_overrides``
    compose, with a random batch ``[batch_size, *input_shape]``."""
    name = rule.split(" ")[0]  # "bp (remat)" -> bp
    overrides = [f"rule={name}", *RULE_OVERRIDES.get(rule, []), *model_overrides]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    data = SimpleNamespace(input_shape=tuple(input_shape), num_classes=NUM_CLASSES)
    model = build_model(cfg, data)
    _, learning_rule = build_rule(cfg, model, total_steps=1000, steps_per_epoch=100)
    kp, ks, kx, ky = jax.random.split(jax.random.PRNGKey(0), 4)
    params = init_params(model, kp)
    state = learning_rule.init(ks, params)
    x = jax.random.normal(kx, (batch_size, *input_shape), jnp.float32)
    y = jax.random.randint(ky, (batch_size,), 0, NUM_CLASSES)
    return model, learning_rule, params, state, Batch(x, y), ks


def xla_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled program (``None`` where it gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _calls_for(fn, args, min_seconds: float) -> int:
    """How many calls of ``fn(*args)`` (compiled, warmed up) last ``min_seconds``."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))


def _timed(fn, args, calls: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per call over ``calls`` calls, results waited for."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - w0) / calls, (time.process_time() - c0) / calls


def paired_seconds(
    fwd, fwd_args, upd, upd_args, repeats: int = 9, min_seconds: float = 0.05
) -> dict[str, float]:
    """Forward and update timed alternately (one batch of calls of each per round, so
    that a change in the machine's load hits both alike): the median seconds per call
    of each, wall and process CPU time (all threads), and the median of the per-round
    ratios update / forward. CPU time is the steadier measure on a shared machine."""
    n_f = _calls_for(fwd, fwd_args, min_seconds)
    n_u = _calls_for(upd, upd_args, min_seconds)
    rounds = [(_timed(fwd, fwd_args, n_f), _timed(upd, upd_args, n_u))]
    rounds += [
        (_timed(fwd, fwd_args, n_f), _timed(upd, upd_args, n_u))
        for _ in range(repeats - 1)
    ]
    med = statistics.median
    out = {}
    for i, clock in enumerate(("wall", "cpu")):
        out[f"forward_{clock}_s"] = med(f[i] for f, _ in rounds)
        out[f"update_{clock}_s"] = med(u[i] for _, u in rounds)
        out[f"{clock}_ratio"] = med(u[i] / f[i] for f, u in rounds)
    return out


def measure_cost(rule: str, arch: str) -> dict[str, Any]:
    """Forward vs training direction of ``rule`` on ``arch``: XLA FLOPs, median wall
    seconds and their ratios; ``{"error": ...}`` where the rule refuses the model."""
    overrides, shape, batch_size = ARCHS[arch]
    row: dict[str, Any] = {"rule": rule, "arch": arch, "batch_size": batch_size}
    try:
        model, lr, params, state, batch, key = build(rule, overrides, shape, batch_size)
    except ValueError as e:  # UnsupportedModelError, a rule option the model refuses
        return {**row, "error": f"{type(e).__name__}: {e}"}
    fwd = jax.jit(lambda p, x: output(model, p, x)).lower(params, batch.x).compile()
    upd = jax.jit(lr.update).lower(params, state, batch, key).compile()
    row["forward_flops"] = xla_flops(fwd)
    row["update_flops"] = xla_flops(upd)
    row.update(paired_seconds(fwd, (params, batch.x), upd, (params, state, batch, key)))
    if row["forward_flops"] and row["update_flops"]:
        row["flops_ratio"] = row["update_flops"] / row["forward_flops"]
    return row


def memory_stats(compiled) -> dict[str, int]:
    """The ``CompiledMemoryStats`` fields XLA gives (bytes)."""
    stats = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
    fields += ("alias_size_in_bytes", "peak_memory_in_bytes")
    return {k: int(getattr(stats, k)) for k in fields if hasattr(stats, k)}


def segment_remat_update(model, loss, k: int):
    """bp's ``update`` with gradient checkpointing over segments of ``k`` stages
    (Chen et al. 2016, "Training deep nets with sublinear memory cost": segments of
    about sqrt(L) stages keep ~2 sqrt(L) stage activations instead of L): only each
    segment's input is stored, the inside recomputed in the backward pass.
    ``rule.remat`` checkpoints every stage (k = 1)."""
    pairs = list(zip(model.stages, range(len(model.stages))))
    segments = [pairs[i : i + k] for i in range(0, len(pairs), k)]

    def run(stages, ps, x):
        for stage, p in zip(stages, ps):
            x = apply_stage(stage, p, x).out
        return x

    def objective(params, batch):
        x = batch.x
        for seg in segments:
            stages = tuple(s for s, _ in seg)
            ps = tuple(params[i] for _, i in seg)
            x = jax.checkpoint(lambda ps, x, s=stages: run(s, ps, x))(ps, x)
        return loss.value(x, batch.y)

    def update(params, state, batch, key):
        del key
        value, direction = jax.value_and_grad(objective)(params, batch)
        return direction, state, {"loss": value}

    return update


def measure_memory(rule: str, depth: int) -> dict[str, Any]:
    """Compiled memory of one ``rule.update`` on a 784-[256 x depth]-10 tanh MLP,
    batch 1024 (at batch = width a stage's activations are the size of its ``dW``
    and XLA may keep them in the output's buffers, hiding them from ``temp``);
    ``activation_bytes``: one float32 per hidden unit per example
    (``B sum_l n_l``: what bp keeps of a tanh MLP, each stage's output, from which
    the next stage's ``dW`` and ``tanh'`` are computed)."""
    hidden = [MEMORY_WIDTH] * depth
    overrides = ["model=mlp", f"model.hidden=[{','.join(map(str, hidden))}]"]
    row: dict[str, Any] = {"rule": rule, "depth": depth, "width": MEMORY_WIDTH}
    row["batch_size"] = MEMORY_BATCH
    try:
        model, lr, params, state, batch, key = build(
            rule, overrides, (784,), MEMORY_BATCH
        )
    except ValueError as e:
        return {**row, "error": f"{type(e).__name__}: {e}"}
    update = lr.update
    if rule == SEGMENT_REMAT:
        k = max(1, round(math.sqrt(depth + 1)))  # depth + 1 stages with the read-out
        update = segment_remat_update(model, get_loss("cross_entropy"), k)
        row["segment_stages"] = k
    upd = jax.jit(update).lower(params, state, batch, key).compile()
    row.update(memory_stats(upd))
    row["activation_bytes"] = MEMORY_BATCH * sum(hidden) * 4
    return row


def write_json(path: str, rows: list[dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {"jax": jax.__version__, "backend": jax.default_backend()}
    meta["device"] = str(jax.devices()[0].device_kind)
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost", help="FLOPs and time: forward vs training direction")
    c.add_argument("--out", default="outputs/claims/cost.json")
    c.add_argument("--rules", default=",".join(RULES))
    m = sub.add_parser("memory", help="compiled memory vs depth, remat")
    m.add_argument("--out", default="outputs/claims/memory.json")
    m.add_argument("--rules", default=",".join(MEMORY_RULES))
    m.add_argument("--depths", default=",".join(map(str, MEMORY_DEPTHS)))
    g = sub.add_parser("plot", help="docs/figures/claims_*.png")
    for name in ("cost", "vanishing", "depth", "width"):
        g.add_argument(f"--{name}")
    g.add_argument("--memory", nargs="+", help="memory JSON file(s)")
    g.add_argument("--figures", default="docs/figures")
    a = p.parse_args(argv)
    if a.cmd == "cost":
        rows = []
        for arch in ARCHS:
            for rule in a.rules.split(","):
                rows.append(measure_cost(rule, arch))
                print(json.dumps(rows[-1]))
        write_json(a.out, rows)
    elif a.cmd == "memory":
        depths = [int(d) for d in a.depths.split(",")]
        rows = []
        for rule in a.rules.split(","):
            for depth in depths:
                rows.append(measure_memory(rule, depth))
                print(json.dumps(rows[-1]))
        write_json(a.out, rows)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from claims_figures import plot_all

        for path in plot_all(a):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
