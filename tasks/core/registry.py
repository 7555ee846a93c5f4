"""The stage registry: every stage module found, and what follows from their declarations alone.

A stage is one module in `tasks/` (plus any module named in FACTORY_STAGE_MODULES, comma-separated, for stages kept
outside this repository). From the declarations come the run order (a topological sort of the inputs), the cycles,
the upstream/downstream closures, and the sections of `FactoryConfig`; flows/stages.py and `factory deployments`
derive the per-stage flows and prefect.yaml's deployments from the same place.
"""

from __future__ import annotations

import heapq
import importlib
import os
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.core.stage import StageSpec

CYCLES = ("yearly", "weekly")
EXTRA_MODULES_ENV = "FACTORY_STAGE_MODULES"


def stage_modules() -> list[str]:
    """`tasks.<name>` for each module of the tasks package (not tasks.core), then the FACTORY_STAGE_MODULES ones."""
    import tasks

    found = [f"tasks.{m.name}" for m in pkgutil.iter_modules(tasks.__path__) if m.name != "core" and not m.ispkg]
    extra = [m.strip() for m in os.environ.get(EXTRA_MODULES_ENV, "").split(",") if m.strip()]
    return sorted(found) + extra


_loading: list[tuple[str, ...]] = []


@cache
def _load(modules: tuple[str, ...]) -> dict[str, StageSpec]:
    from tasks.core.stage import DECLARED

    if modules in _loading:  # a stage module asked for the registry (e.g. FactoryConfig) while being imported
        raise RuntimeError(f"a stage module uses the stage registry at import time ({_loading[-1]}); "
                           "import FactoryConfig only under TYPE_CHECKING or inside functions")
    _loading.append(modules)
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        _loading.remove(modules)
    specs = {spec.name: spec for spec in DECLARED.values() if spec.module in modules}
    return {name: specs[name] for name in _topological(specs)}


def stages() -> dict[str, StageSpec]:
    """Every declared stage by name, in run order."""
    return _load(tuple(stage_modules()))


def _topological(specs: dict[str, StageSpec]) -> list[str]:
    """Inputs before the stages that read them; among stages ready together, yearly before weekly, then by name."""
    for spec in specs.values():
        missing = [n for n in spec.inputs if n not in specs]
        if missing:
            raise ValueError(f"stage {spec.name} ({spec.module}): unknown input(s) {missing}; stages: {sorted(specs)}")
        if spec.cycle not in CYCLES:
            raise ValueError(f"stage {spec.name} ({spec.module}): cycle {spec.cycle!r} is not one of {CYCLES}")
    waiting = {name: set(spec.inputs) for name, spec in specs.items()}
    ready = [(CYCLES.index(specs[n].cycle), n) for n, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, (CYCLES.index(specs[other].cycle), other))
    if len(order) < len(specs):
        raise ValueError(f"stages form a cycle: {sorted(set(specs) - set(order))}")
    return order


def order() -> list[str]:
    return list(stages())


def cycle(name: str) -> list[str]:
    """The stages declared in cycle `name`, in run order."""
    return [n for n, spec in stages().items() if spec.cycle == name]


def spec(name: str) -> StageSpec:
    found = stages()
    if name not in found:
        raise KeyError(f"unknown stage {name!r} (stages: {', '.join(found)})")
    return found[name]


def upstream(names: list[str]) -> list[str]:
    """`names` and everything they need, in run order."""
    needed: set[str] = set()

    def visit(name: str) -> None:
        if name not in needed:
            needed.add(name)
            for dep in spec(name).inputs:
                visit(dep)

    for name in names:
        visit(name)
    return [n for n in order() if n in needed]


def downstream(name: str) -> list[str]:
    """Stages that (transitively) consume `name`, in run order."""
    spec(name)
    found = {name}
    for n, s in stages().items():
        if any(dep in found for dep in s.inputs):
            found.add(n)
    return [n for n in order() if n in found and n != name]


def sections() -> dict[str, type]:
    """Every config section the stages declare, by name, in run order. Two stages may share a section only when they
    declare the same class: a section is defined once."""
    found: dict[str, type] = {}
    owner: dict[str, str] = {}
    for name, s in stages().items():
        for section, model in s.config.items():
            if section in found and found[section] is not model:
                raise ValueError(f"config section {section!r}: stage {name} declares {model.__qualname__}, "
                                 f"stage {owner[section]} {found[section].__qualname__}")
            found.setdefault(section, model)
            owner.setdefault(section, name)
    return found
