"""The stage decorator: turns a build function into a cached, tracked Prefect task.

A build function gets a `StageRun` (its config, its input artifacts, an empty output directory, logging helpers) and
returns {"counts": ..., "metrics": ...}; everything else here is shared: the content key, reuse of a complete
artifact (the task ends in a `Cached` state), the MLflow nested run, the Prefect report, the manifest written last.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from tasks.core.artifacts import Artifact, ArtifactStore, stage_key
from tasks.core.config import FactoryConfig
from tasks.core.tracking import Run, mlflow_ui_url


@dataclass
class Context:
    """What every stage task gets from the flow: where to work, the config, what to rebuild, the parent MLflow run."""

    workdir: str
    config: FactoryConfig
    force: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    experiment: str = "stage"

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(Path(self.workdir) / "artifacts")


@dataclass
class StageSpec:
    name: str
    inputs: tuple[str, ...]
    sections: tuple[str, ...]
    version: str
    main_metric: str | None
    resumable: bool
    build: Callable[[StageRun], dict]
    external: Callable[[FactoryConfig, Path], dict] | None = None
    task: Any = None

    def config(self, cfg: FactoryConfig) -> dict:
        return {s: getattr(cfg, s).model_dump(mode="json") for s in self.sections}

    def key(self, cfg: FactoryConfig, inputs: dict[str, Artifact], workdir: Path) -> str:
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ValueError(f"stage {self.name}: missing inputs {sorted(missing)}")
        # How a stage runs (processes, cluster) never changes what it makes: not part of the key.
        config = {s: {k: v for k, v in c.items() if k not in RUNTIME_FIELDS} for s, c in self.config(cfg).items()}
        if self.external:  # files outside the artifact store (crawl sources, the labeling inbox) are inputs too
            config = {**config, "external": self.external(cfg, Path(workdir))}
        return stage_key(self.name, self.version, config, {n: inputs[n].build_id for n in self.inputs})


STAGES: dict[str, StageSpec] = {}
RUNTIME_FIELDS = {"workers", "dask_address"}


def logger() -> logging.Logger:
    try:
        return get_run_logger()  # type: ignore[return-value]
    except MissingContextError:
        return logging.getLogger("factory")


@dataclass
class StageRun:
    """Handed to a build function: inputs, config, the output directory, and ways to report."""

    name: str
    key: str
    out: Path
    cfg: FactoryConfig
    inputs: dict[str, Artifact]
    workdir: Path
    mlflow: Run
    flow_run_id: str = ""
    _progress_id: Any = None

    @property
    def log(self) -> logging.Logger:
        return logger()

    def metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.mlflow.metrics(metrics, step)

    def table(self, name: str, rows: list[dict], description: str = "") -> None:
        """A table in the Prefect UI and as JSON in the MLflow run."""
        import json

        create_table_artifact(rows, key=_artifact_key(self.name, name), description=description or name)
        self.mlflow.log_text(json.dumps(rows, indent=2), f"{name}.json")

    def markdown(self, name: str, text: str) -> None:
        create_markdown_artifact(text, key=_artifact_key(self.name, name), description=name)
        self.mlflow.log_text(text, f"{name}.md")

    def image(self, name: str, path: Path, description: str = "") -> None:
        """A PNG into the MLflow run (folder `plots/`), shown in the Prefect UI through MLflow's artifact endpoint."""
        self.mlflow.log_file(path, "plots")
        base = mlflow_ui_url(self.workdir)
        run = self.mlflow.client.get_run(self.mlflow.run_id)
        src = f"{base}/get-artifact?path=plots/{path.name}&run_uuid={run.info.run_id}"
        page = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts"
        text = f"![{name}]({src})\n\n[{description or name} in MLflow]({page}) (file: `{path}`)"
        create_markdown_artifact(text, key=_artifact_key(self.name, name), description=description or name)

    def progress(self, fraction: float) -> None:
        percent = max(0.0, min(100.0, 100.0 * fraction))
        if self._progress_id is None:
            self._progress_id = create_progress_artifact(
                percent, key=_artifact_key(self.name, "progress"), description=f"{self.name} progress"
            )
        else:
            update_progress_artifact(self._progress_id, percent)


def _artifact_key(stage: str, name: str) -> str:
    return f"{stage}-{name}".replace("_", "-").lower()


def _flow_run_id() -> str:
    try:
        ctx = get_run_context()
        flow_run = getattr(ctx, "flow_run", None) or getattr(getattr(ctx, "task_run", None), "flow_run_id", None)
        return str(getattr(flow_run, "id", flow_run) or "")
    except Exception:
        return ""


def stage(
    name: str,
    *,
    inputs: tuple[str, ...] = (),
    sections: tuple[str, ...] = (),
    version: str = "1",
    main_metric: str | None = None,
    resumable: bool = False,
    external: Callable[[FactoryConfig, Path], dict] | None = None,
    retries: int = 0,
) -> Callable:
    """Register `build` as the stage `name` and wrap it in a Prefect task.

    `retries`: for stages that read remote data, transient errors (network, I/O) are retried with exponential
    backoff; a bug or bad input fails at once."""

    def register(build: Callable[[StageRun], dict]) -> StageSpec:
        spec = StageSpec(name, inputs, sections or (name,), version, main_metric, resumable, build, external)

        @task(
            name=name,
            cache_policy=NO_CACHE,
            persist_result=False,
            task_run_name=name,
            retries=retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=10) if retries else 0,
            retry_jitter_factor=0.5 if retries else None,
            retry_condition_fn=_transient if retries else None,
        )
        def run_stage(ctx: Context, upstream: dict[str, Artifact]) -> Artifact:
            return execute(spec, ctx, upstream)

        spec.task = run_stage
        STAGES[name] = spec
        return spec

    return register


def _transient(task, task_run, state) -> bool:
    """Retry only what a second try can fix: connection, timeout and other OS-level I/O errors."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, (OSError, TimeoutError)) and not isinstance(error, (FileNotFoundError, PermissionError))


def execute(spec: StageSpec, ctx: Context, upstream: dict[str, Artifact]):
    """Reuse the artifact if complete (and not forced); otherwise build it, track it, and commit its manifest."""
    store, cfg = ctx.store, ctx.config
    inputs = {n: upstream[n] for n in spec.inputs}
    key = spec.key(cfg, inputs, Path(ctx.workdir))
    tags = {"stage": spec.name, "artifact_key": key, "prefect_flow_run_id": _flow_run_id()}
    forced = spec.name in ctx.force
    found = None if forced else store.load(spec.name, key)
    if found is not None:
        run = Run.start(Path(ctx.workdir), ctx.experiment, spec.name, ctx.parent_run_id, {**tags, "cached": "true"})
        run.metrics({k: v for k, v in found.metrics.items() if isinstance(v, (int, float))})
        run.end()
        logger().info(f"{spec.name}: reusing {found.path}")
        return Completed(name="Cached", message=f"reused {spec.name}/{key}", data=found)

    out = store.prepare(spec.name, key, keep_partial=spec.resumable and not forced)
    run = Run.start(Path(ctx.workdir), ctx.experiment, spec.name, ctx.parent_run_id, {**tags, "cached": "false"})
    run.params(spec.config(cfg))
    started = time.time()
    srun = StageRun(spec.name, key, out, cfg, inputs, Path(ctx.workdir), run, tags["prefect_flow_run_id"])
    logger().info(f"{spec.name}: building {out}")
    try:
        result = spec.build(srun) or {}
    except BaseException:
        run.log_text(traceback.format_exc(), "error.txt")
        run.end("FAILED")
        raise
    seconds = round(time.time() - started, 2)
    artifact = store.commit(
        spec.name,
        key,
        {
            "config": spec.config(cfg),
            "inputs": {n: {"key": a.key, "build_id": a.build_id} for n, a in inputs.items()},
            "counts": result.get("counts", {}),
            "metrics": result.get("metrics", {}),
            "info": result.get("info", {}),
            "timings": {"seconds": seconds, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))},
            "mlflow_run_id": run.run_id,
            "prefect_flow_run_id": tags["prefect_flow_run_id"],
            **({"main_metric": spec.main_metric} if spec.main_metric else {}),
        },
    )
    run.metrics(
        {**{k: v for k, v in artifact.metrics.items() if isinstance(v, (int, float))}, "stage_seconds": seconds}
    )
    run.log_file(artifact.file("manifest.json"))
    run.end()
    summary = ", ".join(
        f"{k}={_fmt(v)}" for k, v in {**artifact.counts, **artifact.metrics}.items() if isinstance(v, (int, float))
    )
    logger().info(f"{spec.name}: done in {seconds:.1f}s -> {out} ({summary})")
    return artifact


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def resolve(name: str, ctx: Context, memo: dict[str, Artifact | None] | None = None) -> Artifact | None:
    """The complete artifact the current config would reuse for `name`, or None if it (or an input) is not built."""
    memo = {} if memo is None else memo
    if name not in memo:
        spec = STAGES[name]
        ups = {n: resolve(n, ctx, memo) for n in spec.inputs}
        memo[name] = (
            None
            if any(a is None for a in ups.values())
            else ctx.store.load(name, spec.key(ctx.config, ups, Path(ctx.workdir)))
        )  # type: ignore[arg-type]
    return memo[name]
