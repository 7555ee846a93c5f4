"""Lineage of a registered model: the version, the run that registered it, and the chain of stage artifacts
(with their MLflow runs and Prefect flow runs) back to the crawl it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core import model_registry
from tasks.core.tracking import client


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """'assistant@production' -> (name, alias, None); 'assistant/3' -> (name, None, '3')."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.split("/", 1)
        return name, None, version
    raise ValueError(f"model reference {ref!r}: expected NAME@ALIAS (assistant@production) or NAME/VERSION")


def artifact_chain(path: Path, seen: set[str] | None = None) -> dict:
    """The manifest at `path` and, recursively, those of its inputs (a tree of dicts)."""
    seen = set() if seen is None else seen
    manifest = json.loads((path / "manifest.json").read_text())
    node = {
        "stage": manifest["stage"],
        "key": manifest["key"],
        "path": str(path),
        "created": manifest.get("created"),
        "mlflow_run_id": manifest.get("mlflow_run_id"),
        "prefect_flow_run_id": manifest.get("prefect_flow_run_id"),
        "main_metric": {m: manifest.get("metrics", {}).get(m) for m in [manifest.get("main_metric")] if m},
        "inputs": [],
    }
    root = path.parent.parent
    for stage, ref in manifest.get("inputs", {}).items():
        child = root / stage / ref["key"]
        if f"{stage}/{ref['key']}" in seen:
            continue
        seen.add(f"{stage}/{ref['key']}")
        if (child / "manifest.json").exists():
            node["inputs"].append(artifact_chain(child, seen))
        else:
            node["inputs"].append({"stage": stage, "key": ref["key"], "missing": True, "inputs": []})
    return node


def lineage(workdir: Path, ref: str) -> dict:
    c = client(workdir)
    name, alias, number = parse_ref(ref)
    version = model_registry.alias_version(c, name, alias) if alias else c.get_model_version(name, number)
    if version is None:
        raise LookupError(f"no model version {ref} in {workdir}")
    run = c.get_run(version.run_id) if version.run_id else None
    tags = version.tags
    out = {
        "model": f"{name}/{version.version}",
        "aliases": list(version.aliases),
        "source": version.source,
        "registered_by_run": version.run_id,
        "registered_in_experiment": run.info.experiment_id if run else None,
        "trained_in_run": tags.get("trained_in_run"),
        "prefect_flow_run_id": tags.get("prefect_flow_run_id"),
        "metrics": {k.removeprefix("metric."): v for k, v in tags.items() if k.startswith("metric.")},
        "artifacts": None,
    }
    path = Path(tags.get("artifact_path", ""))
    if path and (path / "manifest.json").exists():
        out["artifacts"] = artifact_chain(path)
    return out
