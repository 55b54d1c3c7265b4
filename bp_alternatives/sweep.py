"""Sweep bookkeeping: a failing job is recorded, never fatal to the other jobs.

``run_job(cfg, hydra_cfg)`` is what ``experiments/train.py``'s ``main`` calls for every
job, whatever the launcher (basic, joblib, submitit local or Slurm). It names the run
after its overrides (``rule=fa,seed=1``), groups W&B runs by sweep, and catches the
job's exception: the job's ``results.json`` then has ``status: failed`` with the error
and traceback, and the job returns normally so the launcher goes on with the others
(in a single run the exception is re-raised after being recorded).

Each job appends one JSON line to ``<sweep dir>/sweep_summary.jsonl``; the
``SweepSummary`` Hydra callback (``hydra.callbacks`` in ``configs/train.yaml``) turns
those lines into ``<sweep dir>/sweep_summary.md`` when the sweep ends, prints the
comparison table of the sweep (``bp_alternatives.compare``; tables and plots in
``<sweep dir>/compare/``), prints which jobs failed and why, and exits with status 1
if any did. With ``logger=wandb`` the table and plots also go to one aggregate W&B run
(``job_type=compare``) in the sweep's group (:func:`wandb_settings`).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, NamedTuple

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from bp_alternatives import guard
from bp_alternatives import results as results_io
from bp_alternatives.config import check_optimized_metric, drop_unshared_rule_options
from bp_alternatives.experiment import run
from bp_alternatives.rundir import RunDirError
from bp_alternatives.sweep_records import SUMMARY_MD, record, summarise


class JobContext(NamedTuple):
    """Where a job runs and what it is called, from Hydra's runtime config."""

    out_dir: str
    multirun: bool
    sweep_dir: str | None
    override_dirname: str
    overrides: list[str]
    num: int | None
    tuning: bool = False  # a sweeper that reads the returned metric (not basic)


def job_context(hydra_cfg: DictConfig) -> JobContext:
    """Read the job's context from ``HydraConfig.get()``."""
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = os.path.abspath(str(hydra_cfg.sweep.dir)) if multirun else None
    return JobContext(
        out_dir=str(hydra_cfg.runtime.output_dir),
        multirun=multirun,
        sweep_dir=sweep_dir,
        override_dirname=str(hydra_cfg.job.get("override_dirname") or ""),
        overrides=list(hydra_cfg.overrides.task),
        num=hydra_cfg.job.get("num") if multirun else None,
        tuning=multirun and tuning_sweeper(hydra_cfg),
    )


def tuning_sweeper(hydra_cfg: DictConfig) -> bool:
    """Whether the sweeper reads what the jobs return: any but Hydra's basic one."""
    sweeper = hydra_cfg.get("sweeper") or {}
    return not str(sweeper.get("_target_", "")).endswith(".BasicSweeper")


def run_job(cfg: DictConfig, hydra_cfg: DictConfig) -> float | None:
    """Run one job and record its outcome; return ``cfg.optimized_metric`` (of the
    last epoch, the mean over ``trainer.seeds``; ``None`` when no seed has it).

    A job that raises writes ``results.json`` with ``status: failed``; in a sweep the
    function then returns ``None`` so the launcher carries on, in a single run it
    re-raises.
    """
    ctx = job_context(hydra_cfg)
    with open_dict(cfg):
        if not cfg.get("run_name"):
            cfg.run_name = run_name(ctx, hydra_cfg) or None
        logger = cfg.get("logger")
        if logger is not None and logger.get("name") == "wandb":
            experiment = hydra_cfg.runtime.choices.get("experiment")
            logger.group = wandb_group(logger.get("group"), experiment, ctx.sweep_dir)
    start = time.perf_counter()
    try:
        swept = _sweep_overrides(ctx, hydra_cfg)
        rules = [
            v
            for o in swept
            if o.key_or_group == "rule"
            for v in o.sweep_string_iterator()
        ]
        for key in drop_unshared_rule_options(cfg, rules):  # -m rule=fa,bp rule.scale=2
            print(
                f"rule.{key} left out of rule={cfg.rule.name}: not one of its options",
                file=sys.stderr,
            )
        check_optimized_metric(cfg, tuning=ctx.tuning)
        with guard.own_run_dir(ctx.out_dir, cfg, lead=_lead()):
            results = run(cfg, out_dir=ctx.out_dir)
    except Exception as exc:
        # a full or read-only disk is the user's to fix: RunDirError, exit status 2
        e = (isinstance(exc, OSError) and guard.writable_error(exc)) or exc
        failed = failed_results(cfg, e)
        results = failed.to_dict()
        _record_failure(ctx.out_dir, e, failed)
        if not ctx.multirun:  # a single run fails loudly
            if e is exc:
                raise
            raise e from exc
        print(
            f"[job failed] {ctx.override_dirname or ctx.out_dir}: {results['error']}",
            file=sys.stderr,
        )
        record(ctx, results, time.perf_counter() - start)
        return None
    # trainer.seeds=[...] trains several seeds in one program: a list of results,
    # each in <job dir>/seed=<s>/
    runs = results if isinstance(results, list) else [results]
    seconds = time.perf_counter() - start
    if ctx.sweep_dir:
        for r in runs:
            record(ctx, r, seconds)
    metric = cfg.get("optimized_metric", "val_accuracy")
    values = [r["final"].get(metric) for r in runs]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _record_failure(out_dir: str, e: BaseException, failed: results_io.Results):
    """Write the failed job's ``results.json``, unless the job was refused
    (``RunDirError``: nothing may be written) or a finished run is there (its
    results are kept; the failure is in the sweep summary and the log)."""
    path = os.path.join(out_dir, results_io.FILENAME)
    if not _lead() or isinstance(e, RunDirError) or results_io.read_finished(path):
        return
    try:
        results_io.write(path, failed)
    except OSError as err:  # a full or read-only disk: the error above is the news
        print(f"[job failed] cannot write {path}: {err}", file=sys.stderr)


def run_name(ctx: JobContext, hydra_cfg: DictConfig) -> str:
    """A job's name: its overrides that vary across the sweep (``rule=fa,seed=1``);
    those that are the same for every job (``logger=wandb``, ``trainer.epochs=3``) are
    left out. A single run, or a sweep where nothing varies: its overrides except the
    logger's (they change no number)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parse = OverridesParser.create().parse_overrides
    own = [o for o in parse(ctx.overrides) if not o.key_or_group.startswith("hydra")]
    varying = {o.key_or_group for o in _sweep_overrides(ctx, hydra_cfg)}
    names = [o.input_line for o in own if o.key_or_group in varying]
    if not names:
        names = [o.input_line for o in own if not o.key_or_group.startswith("logger")]
    return ",".join(sorted(names))


def _sweep_overrides(ctx: JobContext, hydra_cfg: DictConfig) -> list:
    """The sweep overrides (``rule=fa,dfa``, a sweeper's ``params``) of the sweep's
    command line as Hydra saved it (``multirun.yaml``); none for a single run."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not ctx.sweep_dir:
        return []
    try:
        task = OmegaConf.load(os.path.join(ctx.sweep_dir, "multirun.yaml"))
        sweep = list(task.hydra.overrides.task)
    except (OSError, AttributeError):
        sweep = []
    params = hydra_cfg.get("sweeper", {}).get("params") or {}
    sweep += [f"{k}={v}" for k, v in params.items()]
    parsed = OverridesParser.create().parse_overrides(sweep)
    return [o for o in parsed if o.is_sweep_override()]


def wandb_group(group: str | None, experiment: str | None, sweep_dir: str | None):
    """A W&B run's group: ``logger.group``, else the experiment's name
    (``experiment=compare_digits``), else the sweep directory's name (``None`` for a
    single run without an experiment)."""
    if group:
        return group
    if experiment:
        return experiment
    return os.path.basename(sweep_dir) if sweep_dir else None


def failed_results(cfg: DictConfig, error: BaseException) -> results_io.Results:
    """The ``results.json`` of a job that raised: what it was, and the error."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an unresolvable interpolation may be the very error
        config = OmegaConf.to_container(cfg, resolve=False)

    def get(path: str) -> Any:
        try:
            return OmegaConf.select(cfg, path, throw_on_missing=False)
        except Exception:
            return None

    seed = get("seed")
    return results_io.Results(
        rule=get("rule.name"),
        dataset=get("data.name"),
        seed=int(seed) if isinstance(seed, int) else seed,
        status="failed",
        error=f"{type(error).__name__}: {error}",
        traceback="".join(traceback.format_exception(error)),
        config=config,
    )


def _lead() -> bool:
    """Whether this process writes shared files (several hosts: only the first)."""
    import jax

    return jax.process_index() == 0


COMPARE_DIR = "compare"
PLOT_KINDS = ("learning_curves", "alignment", "grad_norm", "decision_boundary")


def wandb_settings(config: DictConfig, sweep_dir: str) -> dict[str, Any] | None:
    """The W&B settings of a sweep whose config has ``logger=wandb`` (``None`` for any
    other logger, or ``logger.mode=disabled``): the logger's project, entity, mode and
    init_timeout, and its group (:func:`wandb_group`), as :func:`run_job` sets it
    for the sweep's per-run W&B runs."""
    logger = config.get("logger")
    if logger is None or logger.get("name") != "wandb":
        return None
    lg = OmegaConf.to_container(logger, resolve=True)
    if lg.get("mode", "offline") == "disabled":
        return None
    return {
        "mode": lg.get("mode") or "offline",
        "project": lg.get("project") or "bp-alternatives",
        "entity": lg.get("entity"),
        "group": wandb_group(
            lg.get("group"),
            OmegaConf.select(config, "hydra.runtime.choices.experiment"),
            sweep_dir,
        ),
        "init_timeout": float(lg.get("init_timeout") or 30),
    }


def compare_sweep(
    sweep_dir: str, plots: bool = True, wandb: Mapping[str, Any] | None = None
) -> str | None:
    """The comparison table of a sweep (``bp_alternatives.compare``): print it as
    Markdown, write ``table.{md,tex,csv}`` and the plots into ``<sweep dir>/compare/``
    and say where; with ``wandb`` (the settings of :func:`wandb_settings`) also log the
    table and plots to one W&B run (``compare.log_to_wandb``, ``job_type=compare``, its
    files under ``<sweep dir>/compare/wandb/``). Return the Markdown, or ``None`` when
    there is nothing to compare. Never raises: a sweep's results are not lost to a
    plotting or W&B error."""
    from bp_alternatives import compare

    try:
        runs = compare.load_runs([sweep_dir])
        table = compare.build_table(runs)
        text = compare.to_markdown(table)
        print(f"\n{text}")
        for message in compare.duplicate_seeds(table):
            print(f"compare: warning: {message}", file=sys.stderr)
        out_dir = os.path.join(sweep_dir, COMPARE_DIR)
        paths = compare.write_outputs(runs, table, out_dir, plots=plots)
    except Exception as e:  # CompareError (nothing to read), matplotlib, ...
        print(f"compare: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    names = [os.path.basename(p) for p in paths]
    kinds = [k for k in PLOT_KINDS if any(n.startswith(f"{k}_") for n in names)]
    what = (
        f"tables and {len(paths)} plot files ({', '.join(kinds)})"
        if paths
        else "tables"
    )
    print(
        f"compare: {what} in {out_dir}/ "
        f"(again, or with other sweeps: python -m experiments.compare {sweep_dir})"
    )
    if wandb:
        try:  # init_wandb: offline without an API key or a server, never hangs
            run_dir = compare.log_to_wandb(
                table,
                paths,
                directory=out_dir,
                config={"dirs": [sweep_dir]},
                **wandb,
            )
            print(
                f"compare: table{' and plots' if paths else ''} logged to W&B "
                f"(group {wandb.get('group')}, job_type compare) in {run_dir}"
            )
        except Exception as e:  # no wandb, a broken service, ...: the sweep goes on
            print(f"compare: W&B: {type(e).__name__}: {e}", file=sys.stderr)
    return text


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, write and print its summary and (unless
    ``compare=False``) its comparison table and plots (:func:`compare_sweep`); exit 1
    if a job failed (after every job has run).

    Options (``hydra.callbacks.sweep_summary.<option>=...``): ``compare`` (the table
    and plots; ``false``: the summary only), ``plots`` (``false``: tables only). With
    ``logger=wandb`` the table and plots also go to W&B (:func:`wandb_settings`).
    """

    def __init__(self, compare: bool = True, plots: bool = True) -> None:
        self.compare = compare
        self.plots = plots

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        guard.before_run(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        guard.before_sweep(config, kwargs.get("config_name"))
        _active = os.path.abspath(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        _active = None
        sweep_dir = os.path.abspath(str(config.hydra.sweep.dir))
        if not os.path.isdir(sweep_dir) or not _lead():
            return
        try:
            bad = _summary(sweep_dir)
            if self.compare:
                try:
                    wandb = wandb_settings(config, sweep_dir)
                except Exception as e:  # an unresolvable logger config
                    print(f"compare: W&B: {type(e).__name__}: {e}", file=sys.stderr)
                    wandb = None
                compare_sweep(sweep_dir, plots=self.plots, wandb=wandb)
        except Exception as e:  # Hydra would make it a warning, and exit 0
            print(f"sweep: {type(e).__name__}: {e}", file=sys.stderr)
            raise SystemExit(1) from e
        if bad:
            raise SystemExit(1)


_active: str | None = None  # the directory of the sweep under way (this process)


def _summary(sweep_dir: str) -> list[dict[str, Any]]:
    """Write ``sweep_summary.md``, print its head and the jobs that did not finish;
    return those."""
    head, bad = summarise(sweep_dir)
    print(f"sweep: {head} -> {os.path.join(sweep_dir, SUMMARY_MD)}")
    for r in bad:
        print(f"  {r['status'].upper()} {r['dir']}: {r.get('error')}")
    sys.stdout.flush()
    return bad


def abort_sweep(error: BaseException) -> bool:
    """After ``error`` aborted a sweep under way (a launcher's worker killed by the
    OOM killer: joblib's ``TerminatedWorkerError``; a full disk while Hydra saves a
    job's config; a job whose overrides do not compose): say so, write and print
    its summary (a job that was cut off shows as ``no record``). Whether there was a
    sweep under way (the caller then exits non-zero)."""
    global _active
    sweep_dir, _active = _active, None
    if sweep_dir is None or not os.path.isdir(sweep_dir) or not _lead():
        return False
    print(
        f"sweep: aborted by {type(error).__name__}: {error}".rstrip(),
        file=sys.stderr,
    )
    try:
        _summary(sweep_dir)
    except Exception as e:  # e.g. the same full disk
        print(f"sweep: no summary written: {type(e).__name__}: {e}", file=sys.stderr)
    return True
