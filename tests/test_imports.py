"""The package's import graph: no cycle among module-level imports, and every module imports
on its own (no module relies on another having been imported first)."""

from __future__ import annotations

import ast
import concurrent.futures
import os
import pathlib
import subprocess
import sys

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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    completed = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                               text=True, timeout=300, env=env, cwd=REPO)
    return module, completed.returncode, completed.stderr[-1500:]


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_alone, sorted(MODULES)))
    failed = [f"{module}:\n{stderr}" for module, code, stderr in results if code]
    assert not failed, "\n".join(failed)
