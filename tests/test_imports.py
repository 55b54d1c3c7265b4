"""Every module of the package imports on its own (no import cycles)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import bp_alternatives

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for k in [k for k in sys.modules if k.split(".")[0] == "bp_alternatives"]:
        del sys.modules[k]  # a fresh package: this module is the first one imported
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first():
    names = [
        m.name
        for m in pkgutil.walk_packages(bp_alternatives.__path__, "bp_alternatives.")
    ]
    assert "bp_alternatives.trainer" in names and "bp_alternatives.rules" in names
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *names],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
