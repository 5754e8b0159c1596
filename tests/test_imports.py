"""The package's import graph: no cycle among module-level imports, and every module imports
on its own (no module relies on another having been imported first)."""

from __future__ import annotations

import ast
import importlib
import multiprocessing
import pathlib
import sys
import traceback

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "keras_pose"


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def module_level_imports() -> dict[str, set[str]]:
    """``{module: keras_pose modules it imports when it is imported}`` (statements at module
    level, including those under a module-level ``if``/``try``)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        statements = list(tree.body)
        for node in tree.body:
            if isinstance(node, (ast.If, ast.Try)):
                statements += node.body + getattr(node, "orelse", [])
        targets = set()
        for node in statements:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            targets |= {_resolve(n) for n in names if n.startswith("keras_pose")}
        graph[module] = targets - {None, module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_module_level_imports_have_no_cycle():
    graph = module_level_imports()
    assert graph["keras_pose.training.run"] >= {"keras_pose.export", "keras_pose.evaluate"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _import_alone(module: str) -> tuple[str, int, str]:
    """Import ``module`` in a fresh child of the fork server (no keras_pose module loaded)."""
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "keras_pose")
    if loaded:
        return module, 1, f"keras_pose modules already loaded in the child: {loaded}"
    try:
        importlib.import_module(module)
    except Exception:  # any failure is the finding: report it with its traceback
        return module, 1, traceback.format_exc()[-1500:]
    return module, 0, ""


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    # Each module in its own process, forked from a server that has imported only TensorFlow,
    # Keras and NumPy: no keras_pose module is loaded before the one under test, and no child
    # pays TensorFlow's import again (a fresh interpreter per module took 128 s, this 6 s).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["numpy", "tensorflow", "keras"])
    with context.Pool(2, maxtasksperchild=1) as pool:
        results = pool.map_async(_import_alone, sorted(MODULES), chunksize=1).get(timeout=600)
    assert len(results) == len(MODULES)
    failed = [f"{module}:\n{stderr}" for module, code, stderr in results if code]
    assert not failed, "\n".join(failed)
