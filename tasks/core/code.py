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
from pathlib import Path

PROJECT_PACKAGES = ("data", "model", "tasks")
# tasks/core modules that store, track, schedule or report a stage, but do not change what it builds
MACHINERY = {
    "tasks", "tasks.core", "tasks.core.artifacts", "tasks.core.code", "tasks.core.config", "tasks.core.lineage",
    "tasks.core.locks", "tasks.core.model_registry", "tasks.core.plots", "tasks.core.registry", "tasks.core.stage",
    "tasks.core.tracking",
}


def _source(module: str) -> str | None:
    """The source file of `module`, found without running it: the top-level package is located by the import system
    (finding a top-level name executes nothing), the rest by file name inside it (`name.py` or `name/__init__.py`).
    None for what is not a plain source module (a class, a C extension...)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    if not rest:
        return spec.origin if spec.origin.endswith(".py") else None
    for root in spec.submodule_search_locations or []:
        base = Path(root).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return str(candidate)
    return None


def _followed(module: str, top: str) -> bool:
    """Project code a stage's output depends on: data/, model/, tasks/ (less the machinery) and the stage's own
    top-level package (a stage kept outside this repository, FACTORY_STAGE_MODULES)."""
    return module.split(".")[0] in (*PROJECT_PACKAGES, top) and module not in MACHINERY


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
    todo, top = [module], module.split(".")[0]
    while todo:
        name = todo.pop()
        if name in files or not _followed(name, top):
            continue
        origin = _source(name)
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
