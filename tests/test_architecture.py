"""The house rules README's "Architecture" section states, checked on the import graph.

Read from the source (``ast``), not by importing: an import under ``TYPE_CHECKING`` or inside
a function counts as a dependency too, except where a rule says "at run time".
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import PLUGIN_PACKAGE

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"locrob": ROOT / "plugin", "locrob.adapters": ROOT / "adapters"}
RUNNERS = {"locrob.evaluation", "locrob.training", "locrob.cli", "locrob.demo"}
FRAMEWORKS = ("robustbench", "torchattacks", "art")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(module: str, *, run_time: bool = False, top_level: bool = False) -> set[str]:
    """Every module ``module`` imports (ours by their full name, others by their top name).

    ``run_time`` leaves out ``TYPE_CHECKING`` blocks; ``top_level`` leaves out imports inside
    functions and classes (what runs when the module is imported)."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if run_time and _is_type_checking(node):
            return
        if top_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    ours = {name for name in found if name in MODULES and name not in ("locrob", module)}
    return ours | {name.split(".")[0] for name in found if not name.startswith("locrob")}


def test_the_hook_specs_import_no_runner_even_for_type_checkers():
    assert imports("locrob.hookspecs") & RUNNERS == set()
    # the contract, and the base classes a plugin subclasses
    assert {m for m in imports("locrob.hookspecs") if m.startswith("locrob")} <= {
        "locrob.contract",
        "locrob.data.images",
        "locrob.metrics.base",
        "locrob.defenses.base",
        "locrob.corruptions.base",
    }


def test_the_contract_depends_only_on_the_leaf_modules():
    ours = {m for m in imports("locrob.contract", run_time=True) if m.startswith("locrob")}
    assert ours <= {"locrob.errors", "locrob.jsonable"}
    for leaf in ("locrob.errors", "locrob.jsonable", "locrob.data.images"):
        assert {m for m in imports(leaf) if m.startswith("locrob")} <= {"locrob.errors"}, leaf
    typed = {m for m in imports("locrob.contract") if m.startswith("locrob")}
    assert typed <= {"locrob.errors", "locrob.jsonable", "locrob.data.images"}


_LOADED_RUNNERS = """
import sys
def runners():
    return sorted(m for m in ("locrob.evaluation", "locrob.training") if m in sys.modules)
{imports}
print(runners())
import locrob
locrob.evaluate, locrob.train
print(runners())
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import locrob_example",
        "import locrob.contract, locrob.hookspecs, locrob.metrics.base, locrob.defenses.base",
    ],
)
def test_a_plugin_importing_the_contract_loads_no_runner(imports):
    # a fresh interpreter: this one has loaded the runners long ago
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_PACKAGE)}
    code = _LOADED_RUNNERS.format(imports=imports)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # none until a runner's name is asked for, then both
    assert out == ["[]", "['locrob.evaluation', 'locrob.training']"]


def _builtin_plugins() -> list[str]:
    entry_points = metadata.entry_points(group="locrob")
    return sorted({ep.value for ep in entry_points if ep.dist and ep.dist.name == "locrob"})


@pytest.mark.parametrize("plugin", _builtin_plugins())
def test_plugins_import_the_contract_never_a_runner(plugin):
    assert imports(plugin) & RUNNERS == set()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return components


def test_no_import_cycles():
    graph = {m: {d for d in imports(m, top_level=True) if d in MODULES} for m in MODULES}
    assert _cycles(graph) == []
    # nor, counting every import, through the runners or the checkpoint format
    everything = {m: {d for d in imports(m) if d in MODULES} for m in MODULES}
    for component in _cycles(everything):
        assert not set(component) & (RUNNERS | {"locrob.contract", "locrob.hookspecs"})
    assert "locrob.training" not in imports("locrob.models.checkpoint")


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if not m.startswith("locrob.adapters"))
)
def test_only_the_adapters_import_the_frameworks(module):
    assert imports(module) & set(FRAMEWORKS) == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_figures_are_drawn_only_in_the_presentation_layer(module):
    if module.startswith("locrob.presentation"):
        return
    assert "matplotlib" not in imports(module, run_time=True)
