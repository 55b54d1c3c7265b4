"""Where a result came from: code version, libraries, machine, start time.

``provenance(start)`` is what every ``results.json`` carries under ``provenance``
(and the W&B run's summary): the package version, the git commit of the checkout
the package was imported from and whether its tree had uncommitted changes, the
versions of JAX, jaxlib, flax, optax and numpy, the device kind, the hostname and
the run's start time (UTC, ISO 8601).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata as md
import os
import socket
import subprocess
from typing import Any

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy")
PACKAGE = "bp-alternatives"


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@functools.cache
def git_state(directory: str | None = None) -> tuple[str | None, bool | None]:
    """(commit hash, dirty) of the git checkout holding ``directory`` (default: this
    package's source); ``(None, None)`` outside a checkout or without git."""
    here = directory or os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", here, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))  # untracked sources count
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def provenance(start: dt.datetime | None = None) -> dict[str, Any]:
    """The provenance record (see the module docstring); ``start`` defaults to now."""
    import jax

    start = start or dt.datetime.now(dt.timezone.utc)
    commit, dirty = git_state()
    devices = jax.devices()
    versions = {"bp_alternatives": _version(PACKAGE)}
    versions |= {lib: _version(lib) for lib in LIBRARIES}
    return {
        "versions": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "hostname": socket.gethostname(),
        "start_time": start.isoformat(timespec="seconds"),
    }
