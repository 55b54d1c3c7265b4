"""Metric writers: one small interface, several back-ends (none, CSV, W&B).

Scalars are named as in ``results.json``'s history (README "Metric names"):
``<split>_<metric>`` (``train_loss``, ``val_accuracy``, ``test_accuracy``), a
prediction mode after a ``/`` (``test_accuracy/readout``), a rule's own metrics as
``rule/<name>``, per-stage lists as ``<name>/stage<l>`` (``alignment_deg/stage0``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol

from bp_alternatives.atomic import atomic_path


class MetricWriter(Protocol):
    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record scalars for one step (here: one epoch)."""

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Record the run's final numbers."""

    def close(self) -> None:
        """Flush and release resources."""


class NullWriter:
    """Writes nothing (``logger=none``)."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        del step, scalars

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        del summary

    def close(self) -> None:
        pass


class CSVWriter:
    """Appends one row per ``write_scalars`` call to ``metrics.csv`` (``logger=csv``).

    The header is the union of the keys seen so far; the file is rewritten when new keys
    appear, so it always parses with ``csv.DictReader``.
    """

    def __init__(self, directory: str, filename: str = "metrics.csv"):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, filename)
        self._rows: list[dict[str, Any]] = []
        self._fields: list[str] = ["step"]

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        row = {"step": step, **scalars}
        new = [k for k in row if k not in self._fields]
        self._fields.extend(new)
        self._rows.append(row)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields)
            w.writeheader()
            w.writerows(self._rows)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        del summary  # results.json holds the summary

    def close(self) -> None:
        pass


class WandbWriter:
    """Logs to Weights & Biases (``logger=wandb``).

    ``wandb.init`` gets project, entity, group (the sweep), job_type (the rule), tags,
    the run name (the overrides) and the resolved config; ``write_scalars`` logs one
    history row per epoch and ``write_summary`` the run summary. See ``init_wandb`` for
    the modes and the offline fallback; offline runs are uploaded later with
    ``wandb sync <dir>/wandb/offline-run-*``. ``run_id`` (train.py: a hash of the run
    directory and config) makes a resumed run -- re-run, or requeued after
    pre-emption -- continue the same W&B run (``resume="allow"``) instead of adding a
    second one to the group; steps the run already holds are not logged again.
    """

    def __init__(
        self,
        project: str = "bp-alternatives",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        mode: str = "offline",
        directory: str = ".",
        config: Mapping[str, Any] | None = None,
        init_timeout: float = 30.0,
        notes: str | None = None,
        run_id: str | None = None,
    ):
        resume = {"id": run_id, "resume": "allow"} if run_id else {}
        self.run = init_wandb(
            mode=mode,
            init_timeout=init_timeout,
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            name=name,
            tags=list(tags or []),
            notes=notes,
            dir=directory,
            config=dict(config or {}),
            **resume,
        )
        # a resumed online run already holds steps < starting_step (offline: 0)
        self._first_new_step = int(getattr(self.run, "starting_step", 0) or 0)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if step >= self._first_new_step:
            self.run.log(dict(scalars), step=step)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        for k, v in summary.items():
            self.run.summary[k] = v

    def close(self) -> None:
        self.run.finish()


WANDB_MODES = ("online", "offline", "disabled")


def init_wandb(*, mode: str = "offline", init_timeout: float = 30.0, **kwargs: Any):
    """``wandb.init(mode=mode, **kwargs)`` that never prompts and never hangs.

    ``mode`` is ``online``, ``offline`` (files under ``<dir>/wandb/``, no network) or
    ``disabled`` (nothing written). ``online`` falls back to ``offline`` with a one-line
    notice on stderr when no API key is configured (``WANDB_API_KEY``, or ``~/.netrc``
    for the W&B host) -- instead of an interactive login prompt -- and when the server
    cannot be reached within ``init_timeout`` seconds: the run keeps its id
    (``kwargs['id']``, a resume continues it; a new id if wandb refuses it), and later
    runs of the same process go offline without waiting.
    """
    import wandb

    if mode not in WANDB_MODES:
        raise ValueError(
            f"unknown wandb mode {mode!r}; valid modes: {list(WANDB_MODES)}"
        )
    if mode == "online" and not _has_api_key():
        _notice("no W&B API key (WANDB_API_KEY or ~/.netrc); logging offline")
        mode = "offline"
    if mode == "online" and _unreachable:  # this process already waited once
        _notice(f"W&B was unreachable earlier ({_unreachable[0]}); logging offline")
        mode = "offline"
    if mode == "online" and (reason := _unreachable_reason(init_timeout)):
        _notice(f"cannot reach W&B ({reason}); logging offline")
        _unreachable.append(reason)
        mode = "offline"
    settings = wandb.Settings(init_timeout=float(init_timeout), silent=True)
    try:
        return wandb.init(mode=mode, settings=settings, **kwargs)
    except Exception as e:  # CommError (network), AuthenticationError (bad key), ...
        if mode != "online":
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = f"{type(e).__name__}: {reason[:100]}"
        _notice(f"cannot reach W&B ({reason}); logging offline")
        _unreachable.append(reason)
    # The failed online run keeps its id registered in wandb's service process
    # ("run ID ... is in use"): stop the service, then the same id resumes offline.
    with contextlib.suppress(Exception, SystemExit):  # its exit code is not ours
        wandb.teardown()
    # a teardown that failed half-way leaves the old service's address in the
    # environment: without it the next init starts a new service
    os.environ.pop(wandb.env.SERVICE, None)
    try:
        return wandb.init(mode="offline", settings=settings, **kwargs)
    except Exception as e:
        if "id" not in kwargs:
            raise
        _notice(f"offline run {kwargs['id']} refused ({type(e).__name__}); a new id")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("id", "resume")}
        return wandb.init(mode="offline", settings=settings, **kwargs)


# Why online W&B failed in this process: later runs (the jobs of a sweep) go offline
# at once instead of waiting init_timeout each.
_unreachable: list[str] = []


def _unreachable_reason(timeout: float) -> str | None:
    """Why W&B's server (``base_url`` of wandb's settings: ``WANDB_BASE_URL`` or
    ``wandb login --host``) cannot be reached within ``timeout`` seconds, or None when
    it answers (any HTTP status). Asked before ``wandb.init``: an online init that
    fails leaves its run id held by wandb's service process."""
    from wandb.sdk import wandb_setup

    url = wandb_setup.singleton().settings.base_url
    try:
        urllib.request.urlopen(url, timeout=float(timeout)).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as e:  # URLError, timeouts, a malformed URL
        return f"{url}: {type(e).__name__}: {str(e)[:100]}"
    return None


def _notice(message: str) -> None:
    print(f"wandb: {message} (upload later: wandb sync)", file=sys.stderr, flush=True)


def _has_api_key() -> bool:
    """Whether W&B can authenticate without prompting, asked of ``wandb`` itself:
    ``WANDB_API_KEY``, an identity token file, a settings file's key, or a netrc entry
    for the configured host (``WANDB_BASE_URL`` or ``wandb login --host``).

    Reads credentials only: ``wandb.login`` would also ask the server who is logged in
    (a process with no network then hangs at exit) and rewrite the user's settings file.
    """
    import wandb

    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:  # a wandb before the wbauth module (< 0.22): its older lookup
        return bool(wandb.api.api_key)
    settings = wandb_setup.singleton().settings
    host = wbauth.HostUrl(settings.base_url, app_url=settings.app_url)
    auth = wbauth.authenticate_session(
        host=host,
        source="bp-alternatives",
        prompt=False,
        verify=False,
        update_session=False,
    )
    return auth is not None
