"""Valid ranges of the optimizer, trainer-seed and data values, checked before any
data loads (:func:`bp_alternatives.config.validate_config`): a value outside its
range is a :class:`~bp_alternatives.config.ConfigError` naming the field, the value,
the range and the fix."""

from __future__ import annotations

import math
import os
from typing import Any

from omegaconf import DictConfig

from bp_alternatives.config import ConfigError, OptimConfig

# (low, high, high included) of each optimizer value: a number in [low, high) or
# [low, high]; low is excluded where it is 0.0 and included where it is 0
OPTIM_RANGES = {
    "lr": (0.0, math.inf, False),
    "momentum": (0, 1.0, False),
    "b1": (0, 1.0, False),
    "b2": (0, 1.0, False),
    "eps": (0.0, math.inf, False),
    "weight_decay": (0, math.inf, False),
    "clip_norm": (0.0, math.inf, False),
    "warmup_steps": (0, math.inf, False),
    "decay_factor": (0.0, math.inf, False),
}
# the same for the data options the shipped loaders take (a loader without the
# option has no key for it); integers where ``int`` is given
DATA_RANGES = {
    "test_size": (1, math.inf, False, int),
    "val_fraction": (0, 1.0, False, float),
    "train_subset": (1, math.inf, False, int),
    "test_subset": (1, math.inf, False, int),
    "num_samples": (2, math.inf, False, int),
    "resize": (1, math.inf, False, int),
    "timeout": (0.0, math.inf, False, float),
    "deadline": (0.0, math.inf, False, float),
}


def _out_of_range(value: Any, low: float, high: float, closed: bool) -> bool:
    """Whether ``value`` is not a finite number in the range (see OPTIM_RANGES)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    if not math.isfinite(value) and not (value == high == math.inf and closed):
        return True
    above = value > high if closed else value >= high
    below = value <= low if isinstance(low, float) else value < low
    return above or below


def _range_text(low: float, high: float, closed: bool) -> str:
    left = "(" if isinstance(low, float) else "["
    right = "]" if closed else ")"
    return f"{left}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{right}"


def check_optim_values(o: DictConfig) -> None:
    """Every optimizer value in its valid range (:data:`OPTIM_RANGES`): b1=1.5,
    eps=-1, momentum=1 or a NaN learning rate is a :class:`ConfigError` naming the
    field, the value and the range (``clip_norm`` may also be null)."""
    for field, (low, high, closed) in OPTIM_RANGES.items():
        value = o.get(field)
        if value is None and field == "clip_norm":
            continue
        if _out_of_range(value, low, high, closed):
            valid = _range_text(low, high, closed)
            default = getattr(OptimConfig, field, None)
            example = f", e.g. its default optim.{field}={default}"
            raise ConfigError(
                f"optim.{field}={value!r} is outside its valid range {valid}",
                fix=f"optim.{field}=<a number in {valid}>"
                + (example if isinstance(default, float) and default > 0 else ""),
            )


def check_seeds(seeds: Any) -> None:
    """``trainer.seeds``: null, or a non-empty list of distinct integers."""
    if seeds is None:
        return
    seeds = list(seeds)
    if not seeds:
        raise ConfigError(
            "trainer.seeds=[] trains no seed",
            fix="trainer.seeds=[0,1,2], or trainer.seeds=null for the one seed `seed`",
        )
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        distinct = list(dict.fromkeys(seeds))
        raise ConfigError(
            f"trainer.seeds={seeds} repeats seed(s) {repeated}: the copies would "
            "train the same numbers and count as independent seeds",
            fix=f"trainer.seeds=[{','.join(map(str, distinct))}]",
        )


def check_data_values(d: DictConfig) -> None:
    """The data options the shipped loaders take, before any data loads: each in
    its range (:data:`DATA_RANGES`; subsets may be null), and ``data.root`` not a
    file. A :class:`ConfigError` names the field, the value and the fix."""
    for field, (low, high, closed, kind) in DATA_RANGES.items():
        if d.get(field) is None:
            continue
        value = d[field]
        wrong_kind = kind is int and isinstance(value, float)
        if wrong_kind or _out_of_range(value, low, high, closed):
            what = "an integer" if kind is int else "a number"
            raise ConfigError(
                f"data.{field}={value!r}: must be {what} in "
                f"{_range_text(low, high, closed)}",
                fix=f"data.{field}=<{what} in {_range_text(low, high, closed)}>",
            )
    root = os.path.expanduser(str(d.get("root") or ""))
    if root and os.path.exists(root) and not os.path.isdir(root):
        raise ConfigError(
            f"data.root={d.root!r} is a file, not a directory",
            fix="data.root=<a directory> (or null: $BPA_DATA or ~/.cache)",
        )
