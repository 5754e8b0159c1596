"""Packaging: every third-party module the library and ``tools/`` import is installed by
``pip install -e .``.

The development environment has the dev extras too, so a module that only an extra provides
works in the tests and fails for a user who ran the README's first command (the export once
needed ``tensorflow_serving`` from an extra). This test reads the imports instead.
"""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "keras_pose"
# Only the benchmarks import torch, and only when it is installed (the ``bench`` extra).
OPTIONAL = {PACKAGE / "benchmarks"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_distributions(root: str) -> set[str]:
    """``root`` and everything its requirements pull in without extras, transitively."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = _normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if re.search(r"\bextra\s*==", requirement):
                continue
            todo.append(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
    return seen


def _imported_modules() -> dict[str, str]:
    """Top-level third-party modules imported by the library and the tools: {module: file}."""
    modules: dict[str, str] = {}
    for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "tools").glob("*.py")]):
        if any(folder in path.parents for folder in OPTIONAL):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "keras_pose" and top not in sys.stdlib_module_names:
                    modules.setdefault(top, str(path.relative_to(REPO)))
    return modules


def test_every_library_import_comes_with_the_core_install():
    try:
        importlib.metadata.distribution("keras-pose")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("keras-pose is not installed (pip install -e .)")
    core = _core_distributions("keras-pose")
    providers = importlib.metadata.packages_distributions()
    modules = _imported_modules()
    assert {"tensorflow", "keras", "numpy", "cv2", "tensorflow_serving"} <= set(modules)
    missing = {}
    for module, where in modules.items():
        distributions = {_normalize(d) for d in providers.get(module, [])}
        if not distributions & core:
            missing[module] = (where, sorted(distributions) or "not installed")
    assert not missing, f"imported but not in install_requires (module: file, providers): {missing}"
