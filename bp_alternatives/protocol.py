"""The fair-comparison protocol: each rule at its own best hyperparameters, chosen on
validation, then several seeds on test.

``run_protocol(cfg, out_dir, compose)`` runs, for every rule of ``cfg.protocol.rules``:

1. **search**: an Optuna study (TPE sampler, seeded) over the declared space
   (``protocol.space`` plus the rule's own ``protocol.per_rule.<rule>.space``), each
   trial one training run of ``protocol.budget.epochs`` epochs on the training split
   minus a validation split (``data.val_fraction``), scored by ``protocol.metric``
   (a validation metric, maximised) of its best-validation epoch. The study lives in
   ``<out_dir>/search/study.db`` (SQLite), so a killed search resumes: trials that
   finished are kept, a trial cut short is re-queued with the same point and its run
   resumes from its checkpoint (its directory is named after the point);
2. **select**: the trial with the best validation value (:func:`select_best`; the
   test split is never read); the search is recorded in
   ``<out_dir>/search/<rule>/search.json`` (every trial, its value, the chosen point);
3. **evaluate**: the chosen configuration over ``protocol.seeds`` on test, the seeds
   trained together under ``vmap`` (``trainer.seeds``), in ``<out_dir>/eval/<rule>``.
   A re-run retrains nothing that finished (``experiment.run`` skips finished runs).

Then the table with statistics (``report.stats``) and the figures
(``report.figures``) go to ``<out_dir>/report/``.

Optuna's own API is used rather than Hydra's Optuna sweeper plugin:
hydra-optuna-sweeper 1.3.0 pins ``optuna<3`` (2.10.1, whose SQLite storage predates
SQLAlchemy 2), and one Hydra sweep cannot run a search and then a seed evaluation.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from bp_alternatives.config import ConfigError
from bp_alternatives.experiment import run
from bp_alternatives.report.search import write_report
from bp_alternatives.rundir import write_json
from bp_alternatives.trials import lr_only, run_members

STUDY_DB = "study.db"


class ProtocolError(ConfigError):
    """A malformed ``protocol`` config (the message names the field); the command
    line prints it as a user error (exit status 2)."""


def rule_plan(cfg: DictConfig, rule: str) -> dict[str, Any]:
    """The search of ``rule``: ``space`` (dotted key -> distribution spec), ``trials``
    and ``epochs`` -- ``protocol.space`` / ``protocol.budget`` updated by
    ``protocol.per_rule.<rule>`` -- and ``fixed`` (``per_rule.<rule>.set``: dotted
    key -> value held for the rule's search and evaluation, e.g. a bounded
    ``model.activation`` for ep)."""
    p = OmegaConf.to_container(cfg.protocol, resolve=True)
    own = (p.get("per_rule") or {}).get(rule) or {}
    space = dict(p.get("space") or {}) | dict(own.get("space") or {})
    budget = dict(p.get("budget") or {}) | dict(own.get("budget") or {})
    for k in ("trials", "epochs"):
        if not isinstance(budget.get(k), int) or budget[k] < 1:
            raise ProtocolError(
                f"protocol.budget.{k} (rule {rule}) must be a positive integer, "
                f"got {budget.get(k)!r}"
            )
    if not space:
        raise ProtocolError(
            "protocol.space is empty: declare at least the learning rate, e.g. "
            "protocol.space={optim.lr:{low:1e-4,high:1e-1,log:true}}"
        )
    fixed = dict(own.get("set") or {})
    if clash := sorted(set(fixed) & set(space)):
        raise ProtocolError(
            f"protocol.per_rule.{rule}.set fixes {clash}, which the space also "
            "searches; fix a key or search it, not both"
        )
    return {
        "space": space,
        "trials": budget["trials"],
        "epochs": budget["epochs"],
        "fixed": fixed,
    }


def suggest(trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One point of ``space``: ``{low, high, log}`` -> float, ``{low, high, int: true}``
    -> int, ``{choices: [...]}`` -> categorical."""
    point = {}
    for key, spec in space.items():
        if "choices" in spec:
            point[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif {"low", "high"} <= set(spec):
            kind = trial.suggest_int if spec.get("int") else trial.suggest_float
            point[key] = kind(
                key, spec["low"], spec["high"], log=bool(spec.get("log", False))
            )
        else:
            raise ProtocolError(
                f"protocol.space.{key}={dict(spec)}: give {{low, high[, log, int]}} "
                "or {choices: [...]}"
            )
    return point


def objective_value(results: Mapping[str, Any], metric: str) -> float | None:
    """The validation ``metric`` of a finished search run: at its best-validation
    epoch (results.json ``selected``), else at its last epoch; ``None`` if the run
    did not finish or has no such number. Only ``val_*`` metrics are accepted: the
    search never reads the test split."""
    if not metric.startswith("val_"):
        raise ProtocolError(
            f"protocol.metric={metric!r}: the search selects on the validation split "
            "only; use val_accuracy (or another val_* metric)"
        )
    if results.get("status") not in ("ok", "diverged"):
        return None
    for part in ("selected", "final"):
        v = (results.get(part) or {}).get(metric)
        if isinstance(v, int | float) and math.isfinite(v):
            return float(v)
    return None


def select_best(trials: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The trial with the highest ``value`` (the validation metric; the first of
    equals); trials without a value are skipped. ``trials``: ``{"value", "params",
    ...}`` records as in ``search.json``."""
    scored = [t for t in trials if t.get("value") is not None]
    if not scored:
        raise ProtocolError("no search trial finished with a validation value")
    return max(scored, key=lambda t: t["value"])


def point_dirname(point: Mapping[str, Any]) -> str:
    """A run directory named after the searched point (``optim.lr=0.00123``)."""
    parts = [
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
    ]
    return ",".join(parts).replace("/", "_") or "default"


def configure(
    base: DictConfig, point: Mapping[str, Any], protocol: Mapping[str, Any]
) -> DictConfig:
    """``base`` with the searched ``point`` applied and ``protocol`` recorded (the
    ``protocol`` node every run of the protocol carries; the table reads it)."""
    cfg = base.copy()
    with open_dict(cfg):
        _update(cfg, point, "protocol.space")
        cfg.protocol = dict(protocol)
    return cfg


def fix(base: DictConfig, fixed: Mapping[str, Any], rule: str) -> DictConfig:
    """``base`` with ``rule``'s fixed settings (``plan["fixed"]``) applied."""
    cfg = base.copy()
    with open_dict(cfg):
        _update(cfg, fixed, f"protocol.per_rule.{rule}.set")
    return cfg


def _update(cfg: DictConfig, values: Mapping[str, Any], field: str) -> None:
    for key, value in values.items():
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ProtocolError(
                f"{field}.{key}: no such config key for rule {cfg.rule.name}; use a "
                "key of the composed config (optim.lr, rule.scale, model.activation, "
                "...) or declare it under protocol.per_rule"
            )
        OmegaConf.update(cfg, key, value, merge=False)


def _run_trial(cfg: DictConfig, run_dir: str, metric: str) -> float | None:
    try:
        results = run(cfg, out_dir=run_dir)
    except Exception as e:  # a trial that raises is a failed trial, not a failed search
        print(f"[protocol] trial in {run_dir} failed: {type(e).__name__}: {e}")
        return None
    return objective_value(results, metric)


def rule_sampler_seed(sampler_seed: int, rule: str) -> int:
    """TPE's seed for ``rule``: ``sampler_seed`` plus a stable hash of the rule's name
    (CRC-32, below 2**16), so that rules searching the same space draw different
    startup points instead of one shared sequence."""
    return int(sampler_seed) + zlib.crc32(rule.encode()) % 2**16


def _told(trial, rule: str, point, metric: str, value: float | None) -> float:
    """Log a finished trial; its objective value (NaN: failed, marked so)."""
    print(f"[protocol] {rule} trial {trial.number}: {point} -> {metric}={value}")
    if value is None:
        trial.set_user_attr("run_failed", True)
        return math.nan  # Optuna marks the trial failed
    return value


def _state(value: float):
    from optuna.trial import TrialState

    return TrialState.FAIL if math.isnan(value) else TrialState.COMPLETE


def _run_members(cfgs, run_dirs, metric: str) -> list[float | None]:
    """Trials that differ in ``optim.lr`` only, as one vmapped program."""
    try:
        results = run_members(cfgs, run_dirs)
    except Exception as e:  # a batch that raises is failed trials, not a failed search
        print(f"[protocol] trials in {run_dirs} failed: {type(e).__name__}: {e}")
        return [None] * len(cfgs)
    return [objective_value(r, metric) for r in results]


def open_study(
    search_dir: str,
    rule: str,
    sampler_seed: int,
    startup: int,
    constant_liar: bool = False,
):
    """The rule's study in ``<search_dir>/study.db`` (created or resumed). Trials left
    ``RUNNING`` by a killed search are marked failed and their points re-queued, so
    the budget is spent on finished trials only (one protocol process per
    directory). ``constant_liar``: TPE's treatment of trials asked together (a batch
    of vmapped trials), so that one batch does not propose one point k times."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.makedirs(search_dir, exist_ok=True)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{os.path.abspath(os.path.join(search_dir, STUDY_DB))}"
    )
    study = optuna.create_study(
        storage=storage, study_name=rule, direction="maximize", load_if_exists=True
    )
    # a resumed study must not replay the sampler's random stream from its start
    # (it would propose the points it already tried): seed + trials so far
    seed = rule_sampler_seed(sampler_seed, rule) + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=startup, constant_liar=constant_liar
    )
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        print(f"[protocol] {rule}: trial {t.number} was cut short; re-queued")
    return study


def _spent(study) -> int:
    """Trials that count against the budget: finished, or failed by their run."""
    from optuna.trial import TrialState

    return sum(
        t.state == TrialState.COMPLETE
        or (t.state == TrialState.FAIL and bool(t.user_attrs.get("run_failed")))
        for t in study.get_trials(deepcopy=False)
    )


def search(
    base: DictConfig, rule: str, plan: Mapping[str, Any], out_dir: str
) -> dict[str, Any]:
    """Search ``rule``'s space (``plan`` from :func:`rule_plan`) on validation; write
    and return ``search.json``: the trials, their values and the chosen point."""
    p = base.protocol
    metric = str(p.metric)
    search_dir = os.path.join(out_dir, "search")
    rule_dir = os.path.join(search_dir, rule)
    base = fix(base, plan.get("fixed") or {}, rule)
    batch = int(p.get("vmap_trials") or 1)
    if batch > 1 and not lr_only(base, list(plan["space"])):
        print(
            f"[protocol] {rule}: one trial at a time (protocol.vmap_trials needs a "
            f"space of optim.lr only and a rule optimizer with its own lr)"
        )
        batch = 1
    study = open_study(
        search_dir,
        rule,
        int(p.sampler_seed),
        int(p.get("startup_trials") or 4),
        constant_liar=batch > 1,
    )
    record = {"stage": "search", "metric": metric, "epochs": plan["epochs"]}
    record |= {"fixed": plan["fixed"]} if plan.get("fixed") else {}

    def trial_run(trial) -> tuple[dict, DictConfig, str]:
        point = suggest(trial, plan["space"])
        cfg = configure(base, point, record)
        with open_dict(cfg):
            cfg.trainer.epochs = plan["epochs"]
            cfg.trainer.seeds = None
            cfg.seed = int(p.search_seed)
        run_dir = os.path.join(rule_dir, point_dirname(point))
        trial.set_user_attr("run_dir", os.path.relpath(run_dir, out_dir))
        return point, cfg, run_dir

    def objective(trial) -> float:
        point, cfg, run_dir = trial_run(trial)
        value = _run_trial(cfg, run_dir, metric)
        return _told(trial, rule, point, metric, value)

    while (remaining := plan["trials"] - _spent(study)) > 0:
        if batch == 1:
            study.optimize(objective, n_trials=remaining)
            continue
        asked = [study.ask() for _ in range(min(batch, remaining))]
        runs = [trial_run(t) for t in asked]
        values = _run_members([c for _, c, _ in runs], [d for *_, d in runs], metric)
        for t, (point, _, _), value in zip(asked, runs, values):
            value = _told(t, rule, point, metric, value)
            study.tell(t, None if math.isnan(value) else value, state=_state(value))
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "run_dir": t.user_attrs.get("run_dir"),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    best = select_best(trials)
    summary = {
        "rule": rule,
        "metric": metric,
        "direction": "maximize",
        "sampler": f"TPE (seed {rule_sampler_seed(int(p.sampler_seed), rule)})",
        "space": plan["space"],
        "budget": {"trials": plan["trials"], "epochs": plan["epochs"]},
        "fixed": plan.get("fixed") or {},
        "trials": trials,
        "chosen": {"number": best["number"], "params": best["params"]}
        | {"value": best["value"]},
    }
    os.makedirs(rule_dir, exist_ok=True)
    write_json(os.path.join(rule_dir, "search.json"), summary)
    return summary


def evaluate(base: DictConfig, found: Mapping[str, Any], out_dir: str) -> list:
    """The chosen point of ``found`` (a ``search.json``) over ``protocol.seeds`` on
    test, the seeds under ``vmap``; finished seeds are not retrained."""
    p = base.protocol
    record = {
        "stage": "eval",
        "chosen": found["chosen"]["params"],
        "trials": found["budget"]["trials"],
        "epochs": found["budget"]["epochs"],
        "metric": found["metric"],
    }
    fixed = found.get("fixed") or {}
    record |= {"fixed": fixed} if fixed else {}
    cfg = configure(fix(base, fixed, found["rule"]), found["chosen"]["params"], record)
    with open_dict(cfg):
        cfg.trainer.seeds = [int(s) for s in p.seeds]
        cfg.row = found["rule"]
        cfg.column = cfg.get("column") or cfg.data.name
    return run(cfg, out_dir=os.path.join(out_dir, "eval", found["rule"]))


def run_protocol(
    cfg: DictConfig, out_dir: str, compose: Callable[[str], DictConfig]
) -> dict[str, dict[str, Any]]:
    """Search, select and evaluate every rule of ``cfg.protocol.rules``
    (``compose(rule)``: the run config of that rule), then write the report. Return
    each rule's ``search.json``."""
    if "protocol" not in cfg:
        raise ProtocolError(
            "no protocol section in the config: run it with an experiment that "
            "declares one, e.g. experiment=protocol_digits"
        )
    val = OmegaConf.select(cfg, "data.val_fraction", default=None)
    if not val:
        raise ProtocolError(
            f"data.val_fraction={val}: the search needs a validation split carved "
            "from train; set e.g. data.val_fraction=0.2"
        )
    found = {}
    for rule in cfg.protocol.rules:
        base = compose(str(rule))
        found[rule] = search(base, str(rule), rule_plan(base, str(rule)), out_dir)
        chosen = found[rule]["chosen"]
        print(
            f"[protocol] {rule}: chose {chosen['params']} "
            f"({found[rule]['metric']}={chosen['value']:.4f}, trial {chosen['number']})"
        )
    for rule in cfg.protocol.rules:
        evaluate(compose(str(rule)), found[rule], out_dir)
    write_report(out_dir, found)
    return found
