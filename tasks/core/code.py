"""The code a stage runs, as a hash: its own module and every project module it imports, followed transitively.

Part of each stage's cache key, so editing a filter in data/cleaning rebuilds `preprocess` (and, through the input
keys, what follows) without anyone bumping a version. Imports are read from the source (module level and inside
functions alike), so nothing is executed. The machinery in tasks/core that only stores, tracks or schedules a stage
(artifacts, tracking, the registry...) is left out: changing how a manifest is written does not change what a stage
makes, and rebuilding everything for it would waste days of training.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache

PROJECT_PACKAGES = ("data", "model", "tasks")
# tasks/core modules that store, track, schedule or report a stage, but do not change what it builds
MACHINERY = {
    "tasks", "tasks.core", "tasks.core.artifacts", "tasks.core.code", "tasks.core.config", "tasks.core.lineage",
    "tasks.core.locks", "tasks.core.model_registry", "tasks.core.plots", "tasks.core.registry", "tasks.core.stage",
    "tasks.core.tracking",
}


def _origin(module: str) -> str | None:
    """The source file of a project module, or None for anything else (stdlib, third party, not a module)."""
    if module.split(".")[0] not in PROJECT_PACKAGES or module in MACHINERY:
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec else None
    return origin if origin and origin.endswith(".py") else None


def _imports(module: str, source: str) -> set[str]:
    """Modules named by the import statements of `module` (`from pkg import mod` names pkg.mod if that is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # the project imports absolutely; a relative import is not followed
                continue
            base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # importing pkg.sub.mod runs pkg/__init__ and pkg/sub/__init__ too
    parents = {".".join(name.split(".")[:i]) for name in found for i in range(1, name.count(".") + 1)}
    return found | parents


@cache
def module_files(module: str) -> dict[str, str]:
    """{module: source file} for `module` and the project modules it imports, transitively."""
    files: dict[str, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        origin = _origin(name)
        if origin is None:
            continue
        files[name] = origin
        with open(origin, encoding="utf-8") as f:
            todo.extend(_imports(name, f.read()) - files.keys())
    return files


@cache
def code_hash(module: str) -> str:
    """A short hash of the source of `module` and of every project module it uses."""
    digest = hashlib.sha256()
    for name, path in sorted(module_files(module).items()):
        with open(path, "rb") as f:
            digest.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:16]
