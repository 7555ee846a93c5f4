"""Stage `register_base`: the pretrained model into the MLflow registry as a new `base` version, alias `candidate`."""

from __future__ import annotations

from tasks.core import model_registry
from tasks.core.stage import StageRun, stage
from tasks.core.tracking import client, registry_identity


@stage(
    "register_base",
    inputs=("pretrain", "eval_base"),
    sections=("register_base",),
    main_metric="version",
    external=registry_identity,
)
def register_base(s: StageRun) -> dict:
    cfg = s.cfg.register_base
    pretrain, evals = s.inputs["pretrain"], s.inputs["eval_base"]
    c = client(s.workdir)
    tags = {
        "artifact_key": pretrain.key,
        "artifact_path": str(pretrain.path),
        **{f"metric.{k}": v for k, v in evals.metrics.items()},
    }
    tags["trained_in_run"] = pretrain.manifest.get("mlflow_run_id", "")
    tags["prefect_flow_run_id"] = s.flow_run_id
    version = model_registry.register(c, cfg.model_name, pretrain.path / "model", s.mlflow.run_id, tags)
    model_registry.move_alias(c, cfg.model_name, cfg.alias, version)
    s.log.info(f"register_base: {cfg.model_name} version {version} is now @{cfg.alias}")
    return {"metrics": {"version": int(version)}, "counts": {}}
