"""MLflow tracking through an explicit client: one parent run per cycle run, one nested run per stage.

Explicit run ids (not mlflow's thread-local active run) keep this correct when Prefect runs tasks in worker threads.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

# mlflow is imported where used: `factory` reads configs and stage declarations without loading it

for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def tracking_uri(workdir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(workdir).resolve()}/mlflow.db"


def registry_identity(cfg, workdir: Path, inputs: dict | None = None) -> dict:
    """Part of the key of stages that write to the model registry: another store means registering again there.
    (The default store lives in the workdir, so it adds nothing; a moved workdir keeps its keys.)"""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return {"registry": uri} if uri else {}


def mlflow_ui_url(workdir: Path) -> str:
    """Where people browse MLflow: FACTORY_MLFLOW_URL, else what `factory up` started, else MLflow's default port."""
    if os.environ.get("FACTORY_MLFLOW_URL"):
        return os.environ["FACTORY_MLFLOW_URL"].rstrip("/")
    urls = Path(workdir) / "run" / "urls.json"
    if urls.exists():
        return json.loads(urls.read_text()).get("mlflow", "http://127.0.0.1:5000").rstrip("/")
    return "http://127.0.0.1:5000"


def client(workdir: Path) -> MlflowClient:
    from mlflow import MlflowClient

    uri = tracking_uri(workdir)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(c: MlflowClient, name: str, workdir: Path) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # Artifacts of runs (reports, plots) go beside the store, not into the caller's current directory.
    location = (Path(workdir).resolve() / "mlartifacts" / name).as_uri()
    return c.create_experiment(name, artifact_location=location)


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return flat


class Run:
    """One MLflow run, used by a stage (or a cycle) to log params, per-step metrics, tags and small files."""

    def __init__(self, c: MlflowClient, run_id: str):
        self.client, self.run_id = c, run_id

    @classmethod
    def start(
        cls, workdir: Path, experiment: str, name: str, parent: str | None = None, tags: dict[str, str] | None = None
    ) -> Run:
        c = client(workdir)
        all_tags = dict(tags or {})
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = c.create_run(experiment_id(c, experiment, workdir), run_name=name, tags=all_tags)
        return cls(c, run.info.run_id)

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        ts = int(time.time() * 1000)
        from mlflow.entities import Metric

        # MLflow refuses '@' in a name: pass@1 is logged as pass_at_1
        items = [Metric(k.replace("@", "_at_"), float(v), ts, step) for k, v in metrics.items()
                 if isinstance(v, (int, float))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_file(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
