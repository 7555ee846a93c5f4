"""Stage `evals`: the assistant (the weekly cycle's last trained model: `rl`'s, which is `preference`'s or the SFT
model when those stages are off) on held-out examples of each chat skill (checkable answers) plus val loss; a score
per skill (`score.<skill>`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import SKILL_NAMES, held_out_items, items_hash
from model.tools import ToolsConfig
from tasks.core.stage import StageRun, stage


class EvalsConfig(BaseModel):
    """Which skills the assistant is scored on, on how many held-out items each, and how it answers."""

    model_config = ConfigDict(extra="forbid")
    skills: list[str] = Field(["arithmetic", "letter_count", "spelling", "identity", "refusal"],
                              description="Chat skills (data/chat/skills) to score, one `score.<skill>` each.")
    items_per_task: int = Field(20, ge=1, description="Held-out items per skill.")
    max_new_tokens: int = Field(48, ge=1, description="Longest answer generated per item (greedy).")
    seed: int = Field(12345, description="Draws the items: the same seed gives the same items.")

    @field_validator("skills")
    @classmethod
    def _known(cls, skills: list[str]) -> list[str]:
        unknown = [s for s in skills if s not in SKILL_NAMES]
        if unknown:
            raise ValueError(f"unknown skill(s) {unknown}; known: {sorted(SKILL_NAMES)}")
        return skills


@stage("evals", cycle="weekly", inputs=("rl", "ingest_labels"), config={"evals": EvalsConfig, "tools": ToolsConfig},
       main_metric="score_mean")
def evals(s: StageRun) -> dict:
    # torch- and matplotlib-using imports inside: declaring the stage stays fast (`factory` checks input first)
    from model.evaluate import load_assistant, mean_loss, run_items
    from model.sft import ConversationBatches
    from tasks.core.plots import score_bars

    cfg = s.cfg.evals
    model, tok = load_assistant(s.inputs["rl"].path / "model")
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
