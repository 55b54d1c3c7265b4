"""Every module of the package imports on its own (no import cycles)."""

from __future__ import annotations

import ast
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
    assert "bp_alternatives.train.fit" in names and "bp_alternatives.rules" in names
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *names],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


# --- the import graph, read from the source ------------------------------------------

PACKAGE_DIR = os.path.join(REPO, "bp_alternatives")


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _modules() -> dict[str, str]:
    """``{module name: path}`` of every module of the package."""
    found = {}
    for d, _, files in os.walk(PACKAGE_DIR):
        for f in files:
            if f.endswith(".py"):
                found[_module_name(os.path.join(d, f))] = os.path.join(d, f)
    return found


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _is_main_guard(node: ast.If) -> bool:
    """``if __name__ == "__main__":`` -- runs only when the file is the program, as
    module ``__main__``, never when the package imports it: not an edge."""
    t = node.test
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _imports(path: str, modules: dict[str, str]) -> list[tuple[str, bool]]:
    """``(imported package module, at module level?)`` for each import in ``path``;
    ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module.
    Imports under ``if TYPE_CHECKING:`` never run and are left out, as are those under
    ``if __name__ == "__main__":``."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and (
                _is_type_checking(child) or _is_main_guard(child)
            ):
                continue
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    out.append((sub if sub in modules else child.module, top))
            visit(child, top and not nested)

    visit(tree, True)
    return [(m, top) for m, top in out if m in modules]


# Function-local imports of package modules that remain, in the report, sweep and
# config modules; this set may only shrink.
LOCAL_IMPORTS_LEFT = {
    "bp_alternatives.compare -> bp_alternatives.writers",
    "bp_alternatives.sweep -> bp_alternatives.compare",
    # both would be cycles at module level: config_values raises config's
    # ConfigError; cli imports guard (its refusal prints cli's error block)
    "bp_alternatives.config -> bp_alternatives.config_values",
    "bp_alternatives.guard -> bp_alternatives.cli",
}


def test_no_import_cycles_and_no_new_function_local_imports_of_the_package():
    """The module-level import graph of the package has no cycle (a package's
    ``__init__`` importing its own modules is an edge like any other), and no
    function imports a package module beyond ``LOCAL_IMPORTS_LEFT``."""
    modules = _modules()
    graph = {m: set() for m in modules}
    local = []
    for m, path in modules.items():
        for dep, top in _imports(path, modules):
            if top:
                graph[m].add(dep)
            else:
                local.append(f"{m} -> {dep}")
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def dfs(m, path):
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                dfs(dep, [*path, dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert not cycles, cycles
    assert set(local) <= LOCAL_IMPORTS_LEFT, sorted(set(local) - LOCAL_IMPORTS_LEFT)
