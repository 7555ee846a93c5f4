"""Stage `evals`: the assistant on held-out examples of each chat skill (checkable answers) plus val loss; a score
per skill (`score.<skill>`)."""

from __future__ import annotations

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import held_out_items, items_hash
from model.evaluate import load_assistant, mean_loss, run_items
from model.sft import ConversationBatches
from tasks.core.plots import score_bars
from tasks.core.stage import StageRun, stage


@stage("evals", inputs=("finetune", "ingest_labels"), main_metric="score_mean")
def evals(s: StageRun) -> dict:
    cfg = s.cfg.evals
    model, tok = load_assistant(s.inputs["finetune"].path / "model")
    labels = s.inputs["ingest_labels"].path
    # held out: no eval prompt is any user turn of what the model is trained on (the preference stages train on the
    # comparisons' prompts)
    training = [*read_jsonl(labels / "conversations_train.jsonl"), *read_jsonl(labels / "comparisons_train.jsonl")]
    items = held_out_items(cfg.skills, cfg.items_per_task, cfg.seed, training)
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
        skill = name.removeprefix("score.")
        done = [r for r in results if r["skill"] == skill]
        rows.append({"skill": skill, "items": len(done), "correct": sum(r["correct"] for r in done), "score": value})
        s.log.info(f"evals: {skill} {rows[-1]['correct']}/{len(done)}")
    if "val_loss" in metrics:
        rows.append({"skill": "val_loss", "items": len(val), "correct": "", "score": round(metrics["val_loss"], 4)})
    s.table("scores", rows, "assistant evaluation: score per skill")
    bars = score_bars({k.removeprefix("score."): v for k, v in scores.items()}, s.out / "scores.png", "eval scores")
    s.image("score-chart", bars, "eval scores per skill")
    return {
        "counts": {"items": len(results), "failures": sum(not r["correct"] for r in results)},
        "metrics": metrics,
        "info": {"items_hash": items_hash(items)},
    }
