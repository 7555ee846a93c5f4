"""Stage `evals`: the assistant on held-out generated tasks (checkable answers) plus val loss; a score per task."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.synthetic import make_eval_items, score
from model.checkpoint import load_model
from model.engine import Engine
from model.evaluate import mean_loss
from model.sft import ConversationBatches
from model.tokenizer import Tokenizer
from tasks.core.plots import score_bars
from tasks.core.stage import StageRun, stage
from tasks.core.training import inference_device


def _prompt_text(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), "")


def load_assistant(model_dir: Path):
    device = inference_device()
    model = load_model(model_dir, device=device).eval()
    return model, Tokenizer.from_file(Path(model_dir) / "tokenizer.json")


def items_hash(items: list[dict]) -> str:
    """Identifies an eval set, so the deploy gate knows when stored scores are comparable."""
    blob = json.dumps([(i["task"], i["messages"], i["reference"]) for i in items], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_items(model, tok, items: list[dict], max_new_tokens: int) -> tuple[list[dict], dict[str, float]]:
    """Answer every item greedily and score it; returns (results, {"score.<task>": accuracy})."""
    engine = Engine(model, tok)
    results = []
    for item in items:
        response = engine.chat(item["messages"], max_new_tokens=max_new_tokens)
        results.append({**item, "response": response, "correct": score(item, response)})
    scores = {}
    for task in dict.fromkeys(r["task"] for r in results):
        done = [r for r in results if r["task"] == task]
        scores[f"score.{task}"] = round(sum(r["correct"] for r in done) / len(done), 3)
    return results, scores


@stage("evals", inputs=("finetune", "ingest_labels"), main_metric="score_mean")
def evals(s: StageRun) -> dict:
    cfg = s.cfg.evals
    model, tok = load_assistant(s.inputs["finetune"].path / "model")
    labels = s.inputs["ingest_labels"].path
    seen = {_prompt_text(r["messages"]) for r in read_jsonl(labels / "conversations_train.jsonl")}
    # held out: no eval prompt is one the model was trained on
    items = [i for t in cfg.tasks for i in make_eval_items(t, cfg.items_per_task, cfg.seed, exclude_prompts=seen)]
    write_jsonl(s.out / "items.jsonl", items)
    results, scores = run_items(model, tok, items, cfg.max_new_tokens)
    write_jsonl(s.out / "results.jsonl", results)

    metrics: dict[str, float] = {**scores, "score_mean": sum(scores.values()) / max(1, len(scores))}
    val = [r["messages"] for r in read_jsonl(labels / "conversations_val.jsonl")]
    if val:
        batches = ConversationBatches(val, tok, 16, model.config.seq_len).sequential(16)
        metrics["val_loss"] = mean_loss(model, batches)
    rows = []
    for name, value in scores.items():
        task = name.removeprefix("score.")
        done = [r for r in results if r["task"] == task]
        rows.append({"task": task, "items": len(done), "correct": sum(r["correct"] for r in done), "score": value})
        s.log.info(f"evals: {task} {rows[-1]['correct']}/{len(done)}")
    if "val_loss" in metrics:
        rows.append({"task": "val_loss", "items": len(val), "correct": "", "score": round(metrics["val_loss"], 4)})
    s.table("scores", rows, "assistant evaluation: score per task")
    bars = score_bars({k.removeprefix("score."): v for k, v in scores.items()}, s.out / "scores.png", "eval scores")
    s.image("score-chart", bars, "eval scores per task")
    return {
        "counts": {"items": len(results), "failures": sum(not r["correct"] for r in results)},
        "metrics": metrics,
        "info": {"items_hash": items_hash(items)},
    }
