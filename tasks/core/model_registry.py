"""The MLflow model registry as the record of which model is what: `base` and `assistant`, aliases `candidate` and
`production`. Deploy moves an alias and remembers where it was, so rollback can move it back."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

HISTORY_TAG = "alias_history.{alias}"


def register(c: MlflowClient, name: str, model_dir: Path, run_id: str, tags: dict) -> str:
    """A new version of `name`: the model directory is copied into the run's artifacts first, so the version stays
    what it was even when its stage artifact is later rebuilt (`--force`) or deleted. Returns the version number."""
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"LLM Factory {name} models")
    c.log_artifacts(run_id, str(model_dir), "model")
    source = f"{c.get_run(run_id).info.artifact_uri}/model"
    version = c.create_model_version(name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    return str(version.version)


def model_dir(version) -> Path:
    """A local directory holding the files of a model version (the path itself for a local store)."""
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(artifact_uri=version.source))


def alias_version(c: MlflowClient, name: str, alias: str):
    """The model version behind `name@alias`, or None."""
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _history(c: MlflowClient, name: str, alias: str) -> list[str]:
    tags = c.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG.format(alias=alias), "[]"))


def move_alias(c: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point `name@alias` at `version`, appending to the alias's history."""
    history = _history(c, name, alias) + [str(version)]
    c.set_registered_model_alias(name, alias, str(version))
    c.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history))


def rollback(c: MlflowClient, name: str, alias: str) -> tuple[str, str]:
    """Move `name@alias` back to the version it had before; returns (from, to)."""
    try:
        history = _history(c, name, alias)
    except MlflowException:
        raise RuntimeError(f"no registered model {name!r}: nothing to roll back") from None
    if len(history) < 2:
        raise RuntimeError(f"{name}@{alias} has no earlier version to roll back to (history: {history or 'empty'})")
    current, previous = history[-1], history[-2]
    c.set_registered_model_alias(name, alias, previous)
    c.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history[:-1]))
    return current, previous
