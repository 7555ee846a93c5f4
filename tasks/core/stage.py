"""The stage declaration (`@stage`) and how a declared stage runs as a cached, tracked Prefect task.

A build function gets a `StageRun` (its config, its input artifacts, an empty output directory, logging helpers) and
returns {"counts": ..., "metrics": ...}; everything else here is shared: the content key, reuse of a complete
artifact (the task ends in a `Cached` state), the MLflow nested run, the Prefect report, the manifest written last.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from tasks.core.artifacts import Artifact, ArtifactStore, stage_key
from tasks.core.code import code_hash
from tasks.core.locks import artifact_lock

if TYPE_CHECKING:
    from tasks.core.tracking import Run


@dataclass
class Context:
    """What every stage task gets from the flow: where to work, the config, what to rebuild, the parent MLflow run."""

    workdir: str
    config: Any  # tasks.core.config.FactoryConfig
    force: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    experiment: str = "stage"

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(Path(self.workdir) / "artifacts")


@dataclass
class StageSpec:
    """Everything about a stage, as its module declares it (see `stage`)."""

    name: str
    cycle: str
    inputs: tuple[str, ...]
    config: dict[str, type[BaseModel]]
    build: Callable[[StageRun], dict]
    module: str
    description: str = ""
    main_metric: str | None = None
    resumable: bool = False
    external: Callable[[Any, Path, dict[str, Artifact]], dict] | None = None
    check: Callable[[Any, Path], None] | None = None
    follower: Callable[[Any], bool] | None = None
    retries: int = 0
    _task: Any = None

    def settings(self, cfg) -> dict:
        """The stage's config sections as plain data (MLflow params, the manifest)."""
        return {s: getattr(cfg, s).model_dump(mode="json") for s in self.config}

    def key(self, cfg, inputs: dict[str, Artifact], workdir: Path) -> str:
        """A hash of the stage's name, code, config (less how it runs), external inputs and the inputs' build ids."""
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ValueError(f"stage {self.name}: missing inputs {sorted(missing)}")
        config = {s: key_fields(getattr(cfg, s)) for s in self.config}
        if self.external:  # files outside the artifact store (crawl sources, the labeling inbox) are inputs too
            config = {**config, "external": self.external(cfg, Path(workdir), inputs)}
        return stage_key(self.name, code_hash(self.module), config, {n: inputs[n].build_id for n in self.inputs})

    @property
    def task(self):
        """The Prefect task running this stage (made on first use: declaring stages imports no Prefect)."""
        if self._task is None:
            self._task = _prefect_task(self)
        return self._task


def key_fields(section: BaseModel) -> Any:
    """A section as data, less the fields marked `json_schema_extra={"runtime": True}`: how a stage runs (processes,
    cluster address) never changes what it makes, so it is not part of the key."""
    out = {}
    for name, info in type(section).model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("runtime"):
            continue
        out[name] = _plain(getattr(section, name))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return key_fields(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


DECLARED: dict[str, StageSpec] = {}  # by module-qualified name; tasks.core.registry picks the ones it loads


def logger() -> logging.Logger:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

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
    cfg: Any  # tasks.core.config.FactoryConfig
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

        from prefect.artifacts import create_table_artifact

        create_table_artifact(rows, key=_artifact_key(self.name, name), description=description or name)
        self.mlflow.log_text(json.dumps(rows, indent=2), f"{name}.json")

    def markdown(self, name: str, text: str) -> None:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(text, key=_artifact_key(self.name, name), description=name)
        self.mlflow.log_text(text, f"{name}.md")

    def image(self, name: str, path: Path, description: str = "") -> None:
        image_artifact(self.mlflow, self.workdir, _artifact_key(self.name, name), path, name, description or name)

    def progress(self, fraction: float) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = max(0.0, min(100.0, 100.0 * fraction))
        if self._progress_id is None:
            self._progress_id = create_progress_artifact(
                percent, key=_artifact_key(self.name, "progress"), description=f"{self.name} progress"
            )
        else:
            update_progress_artifact(self._progress_id, percent)


def image_artifact(run: Run, workdir: Path, key: str, path: Path, name: str, description: str) -> None:
    """A PNG into the MLflow `run` (folder `plots/`), shown in the Prefect UI (a markdown artifact `key`, the image's
    alt text `name`) through MLflow's artifact endpoint."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.core.tracking import mlflow_ui_url

    run.log_file(path, "plots")
    base = mlflow_ui_url(workdir)
    info = run.client.get_run(run.run_id).info
    src = f"{base}/get-artifact?path=plots/{path.name}&run_uuid={info.run_id}"
    page = f"{base}/#/experiments/{info.experiment_id}/runs/{info.run_id}/artifacts"
    text = f"![{name}]({src})\n\n[{description} in MLflow]({page}) (file: `{path}`)"
    create_markdown_artifact(text, key=key, description=description)


def _artifact_key(stage: str, name: str) -> str:
    return f"{stage}-{name}".replace("_", "-").lower()


def _flow_run_id() -> str:
    from prefect.context import get_run_context

    try:
        ctx = get_run_context()
        flow_run = getattr(ctx, "flow_run", None) or getattr(getattr(ctx, "task_run", None), "flow_run_id", None)
        return str(getattr(flow_run, "id", flow_run) or "")
    except Exception:
        return ""


def stage(
    name: str,
    *,
    cycle: str,
    config: dict[str, type[BaseModel]] | None = None,
    inputs: tuple[str, ...] = (),
    main_metric: str | None = None,
    resumable: bool = False,
    external: Callable[[Any, Path, dict[str, Artifact]], dict] | None = None,
    check: Callable[[Any, Path], None] | None = None,
    follower: Callable[[Any], bool] | None = None,
    retries: int = 0,
) -> Callable[[Callable[[StageRun], dict]], StageSpec]:
    """Declare the stage `name`, built by the decorated function: the whole declaration of a stage.

    cycle: "yearly" or "weekly". config: the sections it reads and is keyed on, {name: pydantic model} (the model
    defined once, in the stage module or the data/model code it drives); they become fields of FactoryConfig.
    inputs: the stages whose artifacts it reads. main_metric: shown by `factory status`. resumable: a rebuild keeps
    the partial artifact (checkpoints). external: (config, workdir, inputs) -> what outside the artifact store the
    output depends on (source files, the registry state it acts on), hashed into the key. check: (config, workdir)
    -> None, raises ValueError naming a bad input before anything runs. retries: transient errors (network, I/O)
    are retried with exponential backoff; a bug or a bad input fails at once. follower: (config) -> True when this
    process only takes part in a build that another one commits (the nodes other than 0 of a multi-node training
    run): it builds without the lock or a manifest, then waits for the committed artifact."""

    def declare(build: Callable[[StageRun], dict]) -> StageSpec:
        doc = (sys.modules[build.__module__].__doc__ or build.__doc__ or "").strip()
        description = " ".join(doc.split("\n\n")[0].split()).removeprefix(f"Stage `{name}`: ")
        spec = StageSpec(name, cycle, tuple(inputs), dict(config or {}), build, build.__module__, description,
                         main_metric, resumable, external, check, follower, retries)
        DECLARED[f"{spec.module}:{name}"] = spec
        return spec

    return declare


RETRY_BACKOFF_S = float(os.environ.get("FACTORY_RETRY_BACKOFF_S", "10"))


def _prefect_task(spec: StageSpec):
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.tasks import exponential_backoff

    retries = spec.retries

    @task(
        name=spec.name,
        cache_policy=NO_CACHE,
        persist_result=False,
        task_run_name=spec.name,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF_S) if retries else 0,
        retry_jitter_factor=0.5 if retries else None,
        retry_condition_fn=_transient if retries else None,
    )
    def run_stage(ctx: Context, upstream: dict[str, Artifact]) -> Artifact:
        return execute(spec, ctx, upstream)

    return run_stage


def _transient(task, task_run, state) -> bool:
    """Retry only what a second try can fix: a network or I/O error (the readers raise them as TransientReadError),
    also when it comes as the cause of another error (map_shards wraps a worker's error in a RuntimeError). A bug or
    a bad input (a missing file, a corrupt gzip: any other OSError) fails at once."""
    from data.sources.errors import is_transient

    return is_transient(state.result(raise_on_failure=False))


def execute(spec: StageSpec, ctx: Context, upstream: dict[str, Artifact]):
    """Reuse the artifact if complete (and not forced); otherwise build it, track it, and commit its manifest.

    The key's directory is locked while this runs: a second run of the same key (a scheduled and a manual one) waits,
    then reuses what the first built, and neither deletes the other's work."""
    store, cfg = ctx.store, ctx.config
    inputs = {n: upstream[n] for n in spec.inputs}
    key = spec.key(cfg, inputs, Path(ctx.workdir))
    if spec.follower and spec.follower(cfg):
        return _follow(spec, ctx, inputs, key)
    with artifact_lock(store.path(spec.name, key), on_wait=logger().info):
        return _execute_locked(spec, ctx, inputs, key)


FOLLOW_WAIT_S = 3600.0


def _follow(spec: StageSpec, ctx: Context, inputs: dict[str, Artifact], key: str, wait_s: float = FOLLOW_WAIT_S):
    """Take part in a build another process commits (node 0 of a multi-node run holds the lock and writes the
    manifest): run the build into the same folder, then wait for that process's manifest and return its artifact."""
    from tasks.core.tracking import Run

    store = ctx.store
    found = None if spec.name in ctx.force else store.load(spec.name, key)
    if found is not None:
        return found
    out = store.path(spec.name, key)
    out.mkdir(parents=True, exist_ok=True)
    tags = {"stage": spec.name, "artifact_key": key, "prefect_flow_run_id": _flow_run_id(), "follower": "true"}
    run = Run.start(Path(ctx.workdir), ctx.experiment, spec.name, ctx.parent_run_id, tags)
    logger().info(f"{spec.name}: taking part in the build of {out}; its lead process writes the manifest")
    try:
        spec.build(StageRun(spec.name, key, out, ctx.config, inputs, Path(ctx.workdir), run,
                            tags["prefect_flow_run_id"]))
    except BaseException:
        run.end("FAILED")
        raise
    run.end()
    deadline = time.monotonic() + wait_s
    while (found := store.load(spec.name, key)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{spec.name}: no manifest in {out} {wait_s:.0f}s after this part finished")
        time.sleep(1.0)
    return found


def _execute_locked(spec: StageSpec, ctx: Context, inputs: dict[str, Artifact], key: str):
    from prefect.states import Completed

    from tasks.core.tracking import Run

    store, cfg = ctx.store, ctx.config
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
    run.params(spec.settings(cfg))
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
            "config": spec.settings(cfg),
            "code": code_hash(spec.module),
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
    from tasks.core.registry import spec as stage_spec

    if name not in memo:
        spec = stage_spec(name)
        ups = {n: resolve(n, ctx, memo) for n in spec.inputs}
        memo[name] = (
            None
            if any(a is None for a in ups.values())
            else ctx.store.load(name, spec.key(ctx.config, ups, Path(ctx.workdir)))
        )  # type: ignore[arg-type]
    return memo[name]
