"""Stage `deploy`: the gate. The finetuned model must not fall behind `assistant@production` on any task by more than
that task's tolerance; if it passes it becomes a new `assistant` version and the alias moves; otherwise production
stays as it is and the report says why."""

from __future__ import annotations

import json

from data.chat.labels import read_jsonl
from model.evaluate import load_assistant, run_items
from tasks.core import model_registry
from tasks.core.artifacts import atomic_write_json
from tasks.core.plots import score_bars
from tasks.core.stage import StageRun, stage
from tasks.core.tracking import client, registry_identity


def gate(
    candidate: dict[str, float],
    production: dict[str, float] | None,
    tolerance: dict[str, float],
    min_score: dict[str, float],
) -> list[dict]:
    """One row per task: candidate vs production score, the allowed drop, and whether it passes."""
    rows = []
    for name, value in sorted(candidate.items()):
        task = name.removeprefix("score.")
        prod = production.get(name) if production else None
        allowed = tolerance.get(task, tolerance.get("default", 0.0))
        floor = min_score.get(task)
        reasons = []
        if prod is not None and value < prod - allowed:
            reasons.append(f"{value:.3f} < production {prod:.3f} - tolerance {allowed}")
        if floor is not None and value < floor:
            reasons.append(f"{value:.3f} < floor {floor}")
        rows.append(
            {
                "task": task,
                "candidate": value,
                "production": prod,
                "tolerance": allowed,
                "passed": not reasons,
                "why": "; ".join(reasons),
            }
        )
    return rows


def production_scores(s: StageRun, current, evals) -> tuple[dict[str, float], str]:
    """Production's scores on the candidate's eval items, and where they come from: its stored scores when they were
    measured on the same items, otherwise production is evaluated again here, so the gate compares like with like."""
    items_hash = evals.manifest.get("info", {}).get("items_hash")
    stored = {k.removeprefix("metric."): float(v) for k, v in current.tags.items() if k.startswith("metric.score.")}
    if items_hash and current.tags.get("items_hash") == items_hash:
        return stored, "stored"
    s.log.info(f"deploy: production v{current.version} was scored on other items; evaluating it on the candidate's")
    model, tok = load_assistant(model_registry.model_dir(current))
    items = read_jsonl(evals.path / "items.jsonl")
    _, scores = run_items(model, tok, items, s.cfg.evals.max_new_tokens)
    return scores, "re-evaluated"


@stage("deploy", inputs=("evals", "finetune"), main_metric="deployed", external=registry_identity)
def deploy(s: StageRun) -> dict:
    cfg = s.cfg.deploy
    evals, finetune = s.inputs["evals"], s.inputs["finetune"]
    candidate = {k: v for k, v in evals.metrics.items() if k.startswith("score.")}
    c = client(s.workdir)
    current = model_registry.alias_version(c, cfg.model_name, cfg.alias)
    production, scored = (None, "none") if current is None else production_scores(s, current, evals)
    rows = gate(candidate, production, cfg.tolerance, cfg.min_score)
    passed = all(r["passed"] for r in rows)
    before = str(current.version) if current else None
    decision = {"passed": passed, "production_before": before, "production_scores": scored, "rows": rows}
    if passed:
        tags = {
            "artifact_key": finetune.key,
            "artifact_path": str(finetune.path),
            "items_hash": evals.manifest.get("info", {}).get("items_hash", ""),
            **{f"metric.{k}": v for k, v in evals.metrics.items()},
        }
        tags["trained_in_run"] = finetune.manifest.get("mlflow_run_id", "")
        tags["prefect_flow_run_id"] = s.flow_run_id
        version = model_registry.register(c, cfg.model_name, finetune.path / "model", s.mlflow.run_id, tags)
        model_registry.move_alias(c, cfg.model_name, cfg.alias, version)
        decision["production_after"] = version
        verdict = f"deployed {cfg.model_name} v{version} to @{cfg.alias}" + (
            "" if current else " (first production model)"
        )
    else:
        decision["production_after"] = decision["production_before"]
        failing = "; ".join(f"{r['task']}: {r['why']}" for r in rows if not r["passed"])
        where = f"stays at v{before}" if before else "stays empty"
        verdict = f"gate failed, {cfg.model_name}@{cfg.alias} {where}: {failing}"
    decision["verdict"] = verdict
    atomic_write_json(s.out / "decision.json", decision)
    chart = score_bars(
        {r["task"]: r["candidate"] for r in rows},
        s.out / "gate.png",
        "deploy gate: candidate vs production",
        baseline={r["task"]: r["production"] for r in rows if r["production"] is not None} or None,
    )
    s.image("gate-chart", chart, verdict)
    s.table("gate", [{**r, "production": "" if r["production"] is None else r["production"]} for r in rows], verdict)
    s.log.info(f"deploy: {verdict}")
    s.mlflow.tags({"verdict": verdict, "decision": json.dumps(decision)[:4000]})
    return {
        "counts": {},
        "metrics": {"deployed": int(passed), "production_version": int(decision["production_after"] or 0)},
    }
