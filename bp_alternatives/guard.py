"""Guards of a run directory: checks before anything is written, a lock, and the
clean-up of temporary files a killed run left.

- :func:`check_run_dir` refuses (:class:`~bp_alternatives.rundir.RunDirError`) a
  directory holding a finished run of another configuration, one locked by a
  running process, or one that cannot be written (a read-only file system). The
  Hydra callback (:class:`bp_alternatives.sweep.SweepSummary`) calls it through
  :func:`before_run` / :func:`before_sweep` before Hydra writes the job's
  ``.hydra/`` files or log, so a refusal leaves every existing file as it was.
- :func:`run_dir_lock` holds ``<dir>/.lock`` (``fcntl.flock``) while a job runs; a
  second process in the same directory is refused with the holder's pid, host and
  start time.
- :func:`clean_stale_temps` removes ``.<name>.tmp.<pid>.<thread><suffix>`` files
  (:mod:`bp_alternatives.atomic`) whose writer process no longer runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import re
import socket
import sys
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf, open_dict

from bp_alternatives import results as results_io
from bp_alternatives.rundir import RunDirError, finished

LOCK = ".lock"
_TEMP = re.compile(r"^\..+\.tmp\.(\d+)\.\d+")  # atomic._temp_name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(directory: str) -> list[str]:
    """Remove the temporary files of writers that no longer run (a run killed
    mid-write) in ``directory`` and its subdirectories; return their paths."""
    removed = []
    for root, _, files in os.walk(directory):
        for name in files:
            m = _TEMP.match(name)
            if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    os.remove(path)
                    removed.append(path)
    if removed:
        print(f"removed {len(removed)} stale temporary file(s) in {directory}")
    return removed


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or "an unknown process"
    except OSError:
        return "an unknown process"


def _in_use(out_dir: str, holder: str) -> RunDirError:
    return RunDirError(
        f"{out_dir} is in use by {holder} (lock file {os.path.join(out_dir, LOCK)}); "
        "nothing was written",
        fix="wait for that run to end, or use another output directory "
        "(hydra.run.dir=... or hydra.sweep.dir=...)",
    )


@contextlib.contextmanager
def run_dir_lock(out_dir: str) -> Iterator[None]:
    """Hold ``<out_dir>/.lock`` (it names this process) while the body runs;
    :class:`RunDirError` naming the holder if another process holds it. The lock
    ends with the process, so a killed run leaves no stale lock."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(out_dir, _holder(path)) from None
        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(
            fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode()
        )
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_lock(out_dir: str) -> None:
    """Refuse a directory locked by a process of this host. (One on another host
    may be this run's own first process, on several hosts; :func:`own_run_dir`
    of a first process refuses a second one wherever it runs.)"""
    path = os.path.join(out_dir, LOCK)
    if not os.path.exists(path):
        return
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if f" on {socket.gethostname()} " in f"{holder} ":
                raise _in_use(out_dir, holder) from None


@contextlib.contextmanager
def own_run_dir(out_dir: str, cfg: DictConfig, lead: bool = True) -> Iterator[None]:
    """While a job runs in ``out_dir``: :func:`check_run_dir`, the lock
    (:func:`run_dir_lock`), and stale temporary files removed first. ``lead``:
    whether this process writes the directory (several hosts: only the first)."""
    if not lead:
        yield
        return
    check_run_dir(out_dir, cfg)
    with run_dir_lock(out_dir):
        clean_stale_temps(out_dir)
        yield


def _read_only(out_dir: str) -> RunDirError:
    return RunDirError(
        f"{out_dir} is read-only (a read-only file system, or no write permission): "
        "a run writes its logs, checkpoints and results there; nothing was written",
        fix="an output directory you can write: hydra.run.dir=... (a sweep: "
        "hydra.sweep.dir=...)",
    )


def check_run_dir(out_dir: str, cfg: DictConfig) -> None:
    """Refuse ``out_dir`` before anything is written there: :class:`RunDirError`
    if it holds a finished run (any seed of ``trainer.seeds``) of a configuration
    other than ``cfg``, if another process holds its lock, or if it exists but
    cannot be written. A missing directory passes."""
    if not os.path.isdir(out_dir):
        return
    _check_lock(out_dir)
    seeds = cfg.trainer.get("seeds")
    for seed in seeds if seeds else [None]:
        d = out_dir if seed is None else os.path.join(out_dir, f"seed={seed}")
        c = cfg
        if seed is not None:
            c = cfg.copy()
            with open_dict(c):
                c.seed, c.trainer.seeds = int(seed), None
        finished(os.path.join(d, results_io.FILENAME), c)
    if not os.access(out_dir, os.W_OK):
        raise _read_only(out_dir)


def writable_error(e: OSError, path: str | None = None) -> RunDirError | None:
    """A read-only file system or a full disk, as a :class:`RunDirError` naming the
    file (``None`` for any other ``OSError``)."""
    where = e.filename or path or "?"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return _read_only(os.path.dirname(str(where)) or str(where))
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunDirError(
            f"no space left on the device writing {where}: {e.strerror}",
            fix="free some space (or point hydra.run.dir / hydra.sweep.dir at "
            "another disk), then run the same command again: finished runs are "
            "kept, interrupted ones resume",
        )
    return None


def _task_config(config: DictConfig) -> DictConfig:
    task = config.copy()
    with open_dict(task):
        del task["hydra"]
    return task


def _refuse(e: RunDirError) -> None:
    """Print ``e``'s block and exit 2 (an exception raised in a Hydra callback would
    only become a warning)."""
    from bp_alternatives.cli import EXIT_USER_ERROR, error_block

    print(error_block(e), file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def before_run(config: DictConfig) -> None:
    """Hydra's ``on_run_start``: :func:`check_run_dir` of ``hydra.run.dir``."""
    try:
        check_run_dir(os.path.abspath(str(config.hydra.run.dir)), _task_config(config))
    except RunDirError as e:
        _refuse(e)


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The overrides of each job of a basic sweep, as Hydra's ``BasicSweeper`` will
    launch them (``hydra.sweeper.params`` and the command line); ``[]`` for any
    other sweeper (whose jobs are chosen while it runs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = str((config.hydra.get("sweeper") or {}).get("_target_", ""))
    if not sweeper.endswith(".BasicSweeper"):
        return []
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    lines += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(lines)
    return [
        job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch
    ]


def before_sweep(config: DictConfig, config_name: str | None) -> None:
    """Hydra's ``on_multirun_start``: :func:`check_run_dir` of each job directory
    of a basic sweep whose directory exists (a re-run), before any job starts."""
    from hydra import compose

    sweep_dir = os.path.abspath(str(config.hydra.sweep.dir))
    if not os.path.isdir(sweep_dir):
        return
    hydra_overrides = list(config.hydra.overrides.hydra)
    try:
        for job in sweep_jobs(config):
            job_cfg = compose(
                config_name=config_name,
                overrides=job + hydra_overrides,
                return_hydra_config=True,
            )
            subdir = str(OmegaConf.select(job_cfg, "hydra.sweep.subdir") or "")
            check_run_dir(os.path.join(sweep_dir, subdir), _task_config(job_cfg))
    except RunDirError as e:
        _refuse(e)
