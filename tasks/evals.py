"""Stage `evals`: the assistant on held-out generated tasks (checkable answers) plus val loss; a score per task."""

from __future__ import annotations

from data.labels import read_jsonl, write_jsonl
from data.synthetic import make_eval_items, score
from model.checkpoint import load_model
from model.engine import Engine
from model.evaluate import mean_loss
from model.sft import ConversationBatches
from model.tokenizer import Tokenizer
from tasks.stage import StageRun, stage


def _prompt_text(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), "")


@stage("evals", inputs=("finetune", "ingest_labels"), main_metric="score_mean")
def evals(s: StageRun) -> dict:
    cfg = s.cfg.evals
    model_dir = s.inputs["finetune"].path / "model"
    model, tok = load_model(model_dir), Tokenizer.from_file(model_dir / "tokenizer.json")
    model.eval()
    engine = Engine(model, tok)
    labels = s.inputs["ingest_labels"].path
    train = read_jsonl(labels / "conversations_train.jsonl")
    seen = {_prompt_text(r["messages"]) for r in train}  # held out: no eval prompt was trained on

    results, rows = [], []
    for task in cfg.tasks:
        items = make_eval_items(task, cfg.items_per_task, cfg.seed, exclude_prompts=seen)
        correct = 0
        for item in items:
            response = engine.chat(item["messages"], max_new_tokens=cfg.max_new_tokens)
            ok = score(item, response)
            correct += ok
            results.append({**item, "response": response, "correct": ok})
        rows.append(
            {"task": task, "items": len(items), "correct": correct, "score": round(correct / max(1, len(items)), 3)}
        )
        s.log.info(f"evals: {task} {correct}/{len(items)}")
    write_jsonl(s.out / "results.jsonl", results)

    val = [r["messages"] for r in read_jsonl(labels / "conversations_val.jsonl")]
    val_loss = (
        mean_loss(
            model, ((x, y, m) for x, y, m in ConversationBatches(val, tok, 16, model.config.seq_len).sequential(16))
        )
        if val
        else float("nan")
    )
    metrics = {f"score.{r['task']}": r["score"] for r in rows}
    metrics["score_mean"] = sum(r["score"] for r in rows) / max(1, len(rows))
    metrics["val_loss"] = val_loss
    s.table(
        "scores",
        rows + [{"task": "val_loss", "items": len(val), "correct": "", "score": round(val_loss, 4)}],
        "assistant evaluation: score per task",
    )
    return {"counts": {"items": len(results), "failures": sum(not r["correct"] for r in results)}, "metrics": metrics}
