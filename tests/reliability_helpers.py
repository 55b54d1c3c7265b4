"""A data factory for tests/test_reliability_cli.py that kills its own process, as
the OOM killer would a job (``data._target_=tests.reliability_helpers.killed``)."""

from __future__ import annotations

import os
import signal


def killed(name: str = "killed", **options) -> None:
    """Never returns: SIGKILL to this process (``name``, ``options``: unused)."""
    del name, options
    os.kill(os.getpid(), signal.SIGKILL)
