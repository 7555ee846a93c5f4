"""Stage `register_base`: the pretrained model into the MLflow registry as a new `base` version, alias `candidate`."""

from __future__ import annotations

from pydantic import Field

from tasks.core.config import Section
from tasks.core.stage import StageRun, stage
from tasks.core.tracking import registry_identity


class RegisterConfig(Section):
    """Where the base model goes in the MLflow registry."""

    model_name: str = Field("base", description="Registered model name.")
    alias: str = Field("candidate", description="Alias moved to the new version.")


@stage("register_base", cycle="yearly", inputs=("pretrain", "eval_base"), config={"register_base": RegisterConfig},
       main_metric="version", external=registry_identity)
def register_base(s: StageRun) -> dict:
    from tasks.core import model_registry
    from tasks.core.tracking import client

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
