"""Prefect flows: the yearly (pretraining) and weekly (assistant) cycles, both together, and one stage on its own.

Flows are wiring only: each runs its stages in order as Prefect tasks, under one MLflow parent run.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.states import State

from tasks.core import registry
from tasks.core.config import FactoryConfig, load_config, with_overrides
from tasks.core.stage import Context
from tasks.core.tracking import Run


def run_stages(
    flow_name: str,
    stages: list[str],
    preset: str,
    workdir: str,
    overrides: list[str],
    force: list[str],
    config: FactoryConfig | None = None,
) -> dict[str, str]:
    """Run `stages` (plus whatever they need) in order; returns {stage: artifact path}.

    The config is `configs/<preset>.yaml` with `overrides`, or, when a whole typed `config` is given (the Prefect UI
    renders it as a form), that config with the overrides applied on top."""
    workdir = str(Path(workdir).expanduser().resolve())
    os.makedirs(workdir, exist_ok=True)
    config = load_config(preset, overrides) if config is None else with_overrides(config, overrides)
    unknown = set(force) - set(registry.stages())
    if unknown:
        raise ValueError(f"--force names unknown stages {sorted(unknown)}")
    flow_run = get_run_context().flow_run
    parent = Run.start(
        Path(workdir),
        flow_name,
        f"{flow_name}-{flow_run.name}",
        tags={"prefect_flow_run_id": str(flow_run.id), "preset": config.preset},
    )
    parent.params({"preset": preset, "overrides": overrides, "force": force})
    ctx = Context(workdir, config, list(force), parent.run_id, flow_name)
    done = {}
    try:
        for name in registry.upstream(stages):
            done[name] = build(ctx, name, done)
    except BaseException:
        parent.end("FAILED")
        raise
    parent.end()
    get_run_logger().info(f"{flow_name}: {len(done)} stages done; artifacts under {ctx.store.root}")
    return {name: str(a.path) for name, a in done.items()}


def build(ctx: Context, name: str, done: dict, run_name: str | None = None):
    """Stage `name`'s artifact, built or reused by its Prefect task (named `run_name` in the UI, default the stage's)
    from the artifacts in `done`."""
    spec = registry.spec(name)
    task = spec.task.with_options(task_run_name=run_name) if run_name else spec.task
    result = task(ctx, {n: done[n] for n in spec.inputs})
    # a reused artifact comes back as the task's `Cached` state, which carries it
    return result.result() if isinstance(result, State) else result


@flow(name="yearly_cycle")
def yearly_cycle(
    preset: str = "tiny",
    workdir: str = "./work",
    overrides: list[str] = [],
    force: list[str] = [],
    config: FactoryConfig | None = None,
) -> dict[str, str]:
    """Crawl -> preprocess -> tokenizer -> token shards -> pretrain -> base evals -> register `base@candidate`."""
    return run_stages("yearly_cycle", registry.cycle("yearly"), preset, workdir, overrides, force, config)


@flow(name="weekly_cycle")
def weekly_cycle(
    preset: str = "tiny",
    workdir: str = "./work",
    overrides: list[str] = [],
    force: list[str] = [],
    config: FactoryConfig | None = None,
) -> dict[str, str]:
    """Ingest labels -> SFT -> evals -> deploy gate -> labeling queue (builds the base model first if missing)."""
    return run_stages("weekly_cycle", registry.cycle("weekly"), preset, workdir, overrides, force, config)


@flow(name="pipeline")
def pipeline(
    preset: str = "tiny",
    workdir: str = "./work",
    overrides: list[str] = [],
    force: list[str] = [],
    config: FactoryConfig | None = None,
) -> dict[str, str]:
    """Both cycles, yearly then weekly."""
    built = yearly_cycle(preset, workdir, overrides, force, config)
    return {**built, **weekly_cycle(preset, workdir, overrides, [f for f in force if f not in built], config)}


@flow(name="stage")
def stage(
    name: str,
    preset: str = "tiny",
    workdir: str = "./work",
    overrides: list[str] = [],
    force: bool = False,
    with_downstream: bool | None = None,
    config: FactoryConfig | None = None,
) -> dict[str, str]:
    """One stage by name, building any missing input first. `force` rebuilds it even if its artifact exists, and
    then (unless `with_downstream` is False) every stage after it, whose inputs it has just changed."""
    if with_downstream is None:
        with_downstream = force
    stages = [name] + (registry.downstream(name) if with_downstream else [])
    return run_stages("stage", stages, preset, workdir, overrides, [name] if force else [], config)
