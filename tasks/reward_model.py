"""Stage `reward_model`: a reward model (a scalar head on the SFT model) trained on the labelers' comparisons with the
pairwise (Bradley-Terry) loss; `pref_accuracy` on held-out pairs. Registered in MLflow, a version per build."""

from __future__ import annotations

from model.preference_config import RewardConfig
from tasks.core.posttrain import comparisons, eval_rows, loop_reporter
from tasks.core.stage import StageRun, stage


@stage("reward_model", cycle="weekly", inputs=("finetune", "ingest_labels"), config={"reward_model": RewardConfig},
       main_metric="pref_accuracy", resumable=True)
def reward_model(s: StageRun) -> dict:
    cfg = s.cfg.reward_model
    if not cfg.enabled:
        s.log.info("reward_model: disabled (reward_model.enabled false); no reward model this week")
        return {"metrics": {}, "info": {"skipped": True}}
    # torch- and mlflow-using imports inside: declaring the stage stays fast
    from model.preference import train_reward_model
    from tasks.core import model_registry
    from tasks.core.plots import metric_curves
    from tasks.core.tracking import client

    train, val = comparisons(s.inputs["ingest_labels"].path)
    if not train:
        s.log.warning("reward_model: the labels hold no comparisons this week: no reward model")
        return {"metrics": {}, "info": {"skipped": True, "why": "no comparisons"}}
    s.log.info(f"reward_model: {len(train)} train and {len(val)} held-out comparisons, {cfg.steps} steps")
    rm, result = train_reward_model(s.inputs["finetune"].path / "model", train, val, cfg, s.out / "checkpoints",
                                    on_log=loop_reporter(s, cfg.steps))
    rm.save(s.out / "reward")

    evals = result["evals"]
    s.table("evaluations", eval_rows(evals), "reward model on the held-out comparisons, per evaluation")
    if result["history"]:
        curve = metric_curves(result["history"], ["loss", "val_loss", "pref_accuracy"], s.out / "curves.png",
                              "reward_model: pairwise loss (train, held-out), held-out preference accuracy")
        s.image("curves", curve, "reward model training curves")
    metrics = {"seconds": result["seconds"]}
    if evals:
        (_, first), (_, last) = evals[0], evals[-1]
        metrics.update(pref_accuracy=last["pref_accuracy"], pref_accuracy_before=first["pref_accuracy"],
                       val_loss=last["val_loss"])
    version = model_registry.register(client(s.workdir), cfg.model_name, s.out / "reward", s.mlflow.run_id,
                                      {"artifact_key": s.key, "prefect_flow_run_id": s.flow_run_id,
                                       **{f"metric.{k}": v for k, v in metrics.items()}})
    s.log.info(f"reward_model: held-out preference accuracy {metrics.get('pref_accuracy_before', float('nan')):.3f}"
               f" -> {metrics.get('pref_accuracy', float('nan')):.3f}; {cfg.model_name} version {version}")
    return {
        "counts": {"pairs": result["pairs"], "val_pairs": result["val_pairs"], "dropped_too_long": result["dropped"],
                   "steps": result["steps"], "resumed_from_step": result["resumed_from_step"]},
        "metrics": metrics,
        "info": {"model_name": cfg.model_name, "model_version": version},
    }
