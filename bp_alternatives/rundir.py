"""A run directory: ``results.json`` written atomically, a finished run recognised by
its config's fingerprint (another configuration's is refused with
:class:`RunDirError`), the tag its checkpoints carry, and the one-line summary of a
finished run. Its lock and stale temporary files: :mod:`bp_alternatives.guard`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
from omegaconf import DictConfig, OmegaConf

from bp_alternatives import results as results_io
from bp_alternatives.atomic import atomic_path
from bp_alternatives.config import ConfigError, with_run


class RunDirError(ConfigError):
    """A run directory that this run must not write into (a finished run of another
    configuration, one in use by another process, a read-only one); raised before
    anything in it is written."""


def _derived(cfg: DictConfig) -> list[str]:
    r"""Dotted keys computed from the data: ``run`` and every key whose resolved value
    follows it (found by resolving with two different ``run``\ s). They are a
    function of the rest of the config, not part of a run's identity."""
    a = OmegaConf.to_container(with_run(cfg, 1, 1), resolve=True)
    b = OmegaConf.to_container(with_run(cfg, 2, 2), resolve=True)
    found = []

    def diff(x, y, prefix):
        for k in x:
            if isinstance(x[k], dict) and isinstance(y.get(k), dict):
                diff(x[k], y[k], f"{prefix}{k}.")
            elif x[k] != y.get(k):
                found.append(f"{prefix}{k}")

    diff(a, b, "")
    return found


def _fingerprint(cfg: DictConfig, derived: list[str]) -> dict[str, Any]:
    c = results_io.strip_not_identifying(OmegaConf.to_container(cfg, resolve=True))
    for dotted in derived:
        *parents, leaf = dotted.split(".")
        node = c
        for p in parents:
            node = node.get(p) or {}
        node.pop(leaf, None)
    return c


def config_tag(cfg: DictConfig) -> str:
    """A short hash of the config's fingerprint: what a checkpoint is tagged with."""
    blob = json.dumps(_fingerprint(cfg, _derived(cfg)), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished(path: str, cfg: DictConfig) -> dict[str, Any] | None:
    """The results in ``path`` if they are a finished run of the same config."""
    record = results_io.read_finished(path)
    if record is None:
        return None
    res = record.to_dict()
    derived = _derived(cfg)
    theirs = _fingerprint(OmegaConf.create(res.get("config", {})), derived)
    mine = _fingerprint(cfg, derived)
    if theirs != mine:
        diff = ", ".join(_differences(theirs, mine)[:4])
        raise RunDirError(
            f"{path} holds a finished run of a different configuration ({diff}); "
            "nothing was written",
            fix="another output directory: hydra.run.dir=... (a sweep: "
            "hydra.sweep.dir=...), or the finished run's own values",
        )
    return res


def _differences(theirs: Any, mine: Any, prefix: str = "") -> list[str]:
    """``key: theirs -> mine`` for each leaf where two nested configs differ."""
    if isinstance(theirs, dict) and isinstance(mine, dict):
        out = []
        for k in sorted(set(theirs) | set(mine), key=str):
            out += _differences(theirs.get(k), mine.get(k), f"{prefix}{k}.")
        return out
    return [] if theirs == mine else [f"{prefix[:-1]}: {theirs!r} -> {mine!r}"]


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)


def device_info() -> dict[str, Any]:
    devs = jax.devices()
    return {
        "platform": devs[0].platform,
        "count": len(devs),
        "kind": devs[0].device_kind,
    }


# Besides final/<metric>, what a writer's summary gets (W&B's run summary).
_SUMMARY_KEYS = ("status", "diverged_epoch", "examples_per_second", "wall_seconds")


def writer_summary(results: dict[str, Any]) -> dict[str, Any]:
    return (
        {f"final/{k}": v for k, v in results["final"].items()}
        | {k: results[k] for k in _SUMMARY_KEYS}
        | {f"provenance/{k}": v for k, v in results["provenance"].items()}
    )


def summary_line(results: dict[str, Any], path: str) -> str:
    """The one-line summary of a finished run; it says which prediction mode a rule
    chose for its headline, and warns when the headline is below chance (1/C)."""
    f, pred = results["final"], results.get("prediction")
    acc = f.get("test_accuracy")
    mode = f" ({pred['mode']}, chosen on {pred['chosen_on']})" if pred else ""
    line = (
        f"[{results['rule']} on {results['dataset']}, seed {results['seed']}] "
        f"status={results['status']} test_accuracy={_round(acc, 4)}{mode} "
        f"test_loss={_round(f.get('test_loss'), 4)} "
        f"examples/s={_round(results['examples_per_second'])} -> {path}"
    )
    chance = 1.0 / results["num_classes"]
    if acc is not None and acc < chance:
        others = ", ".join(
            f"{k.split('/', 1)[1]} {v:.3f}"
            for k, v in f.items()
            if k.startswith("test_accuracy/") and v is not None
        )
        line += (
            f" WARNING: test_accuracy {acc:.3f} is below chance (1/"
            f"{results['num_classes']} = {chance:.3f}), worse than guessing: a bug, "
            "or a rule that fails on this model"
            + (f"; the rule's other predictions: {others}" if others else "")
        )
    return line


def _round(v, digits=None):
    return None if v is None else round(v, digits)
