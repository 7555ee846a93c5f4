"""Stage `evals`: the assistant (the weekly cycle's last trained model: `rl`'s, which is `preference`'s or the SFT
model when those stages are off) on held-out examples of each chat skill, answered as it is served: with its tools
(the calculator, and search over the yearly cycle's `index`) and its own system message. A score per skill
(`score.<skill>`), plus val loss.

Beside the scores as served, the ablations the tools and the sense of self are judged by, on the same items:
- `score.<skill>_no_tools` for each skill whose answers call tools (calculator_large: arithmetic with numbers larger
  than any in training; crawl_qa: questions about crawled pages no training question named), the model offered no
  tool (a call gets an error result and it answers on its own);
- `score.identity_system` and `score.identity_no_system`: who it says it is with its system message and without;
- `hallucination_rate` and `over_refusal_rate` from `interrogate` (its held-out questions).
Only the as-served results (`results.jsonl`) go to the deploy gate."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import SKILL_NAMES, SKILLS, held_out_items, items_hash, user_turns
from model.tools import ToolsConfig
from tasks.core.stage import StageRun, stage

INTERROGATE_METRICS = ("hallucination_rate", "over_refusal_rate", "known_accuracy", "known_refusal_rate")


class EvalsConfig(BaseModel):
    """Which skills the assistant is scored on, on how many held-out items each, and how it answers."""

    model_config = ConfigDict(extra="forbid")
    skills: list[str] = Field(["arithmetic", "letter_count", "spelling", "identity", "refusal", "calculator_large",
                               "crawl_qa"],
                              description="Chat skills (data/chat/skills) to score, one `score.<skill>` each.")
    items_per_task: int = Field(20, ge=1, description="Held-out items per skill.")
    max_new_tokens: int = Field(96, ge=1, description="Longest answer generated per item (greedy), tool calls "
                                "included.")
    seed: int = Field(12345, description="Draws the items: the same seed gives the same items.")
    ablations: bool = Field(True, description="Also score tool-using skills without tools, and identity with and "
                            "without the system message.")

    @field_validator("skills")
    @classmethod
    def _known(cls, skills: list[str]) -> list[str]:
        unknown = [s for s in skills if s not in SKILL_NAMES]
        if unknown:
            raise ValueError(f"unknown skill(s) {unknown}; known: {sorted(SKILL_NAMES)}")
        return skills


def eval_items(cfg: EvalsConfig, labels: Path, index_dir: Path | None, identity=None) -> list[dict]:
    """The held-out items: no prompt a user turn of what the model trained on (the preference stages train on the
    comparisons' prompts too); crawl_qa asks about pages of the index whose topic no training question names."""
    from data.chat.skills import CrawlQA

    training = [*read_jsonl(labels / "conversations_train.jsonl"), *read_jsonl(labels / "comparisons_train.jsonl")]
    plain = [s for s in cfg.skills if s != "crawl_qa"]
    items = held_out_items(plain, cfg.items_per_task, cfg.seed, training, identity=identity)
    if "crawl_qa" in cfg.skills and index_dir is not None:
        from data.search import SearchIndex

        index = SearchIndex.load(index_dir)
        skill = CrawlQA([{"title": t, "url": u} for t, u in zip(index.titles, index.urls, strict=True)], index=index)
        asked = " \n ".join(user_turns(training)).lower()
        skill.usable = [u for u in skill.usable if u[1].lower() not in asked]
        if skill.available:
            items += [ex.as_item() for ex in skill.examples(cfg.items_per_task, cfg.seed)]
    return items


def answer_items(model_dir: Path, items: list[dict], cfg, index_dir: Path | None, tools: bool = True,
                 system: bool | None = None, max_new_tokens: int | None = None) -> tuple[list[dict], dict[str, float]]:
    """The model in `model_dir` answers `items` as it is served: with the configured tools (search over `index_dir`)
    and its own system message when its identity says so. `tools=False` offers no tool; `system` forces the system
    message on (True) or off (False); `max_new_tokens` defaults to evals'."""
    from model.evaluate import load_assistant, run_items
    from model.identity import load_identity
    from model.tools import Toolbox

    model, tok = load_assistant(model_dir)
    identity = load_identity(model_dir)
    use_system = identity is not None and (identity.at_inference if system is None else system)
    box = cfg.tools.toolbox(index_dir) if tools else Toolbox()
    return run_items(model, tok, items, max_new_tokens or cfg.evals.max_new_tokens,
                     system=identity if use_system else None, tools=box)


def answer_setup(s: StageRun) -> str:
    """What the answers depend on besides the model and the items: the tools, the index they search, the token budget.
    Production's stored results pair with the candidate's only when it is the same."""
    import hashlib
    import json

    setup = {"tools": s.cfg.tools.model_dump(mode="json"), "index": s.inputs["index"].build_id,
             "max_new_tokens": s.cfg.evals.max_new_tokens}
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]


def _index_dir(s: StageRun) -> Path:
    return s.inputs["index"].path / "index"


@stage("evals", cycle="weekly", inputs=("rl", "ingest_labels", "index", "interrogate"),
       config={"evals": EvalsConfig, "tools": ToolsConfig}, main_metric="score_mean")
def evals(s: StageRun) -> dict:
    # torch- and matplotlib-using imports inside: declaring the stage stays fast (`factory` checks input first)
    from model.evaluate import load_assistant, mean_loss
    from model.identity import load_identity
    from model.sft import ConversationBatches
    from tasks.core.plots import score_bars

    cfg = s.cfg.evals
    model_dir = s.inputs["rl"].path / "model"
    labels = s.inputs["ingest_labels"].path
    identity = load_identity(model_dir)
    items = eval_items(cfg, labels, _index_dir(s), identity)
    write_jsonl(s.out / "items.jsonl", items)
    results, scores = answer_items(model_dir, items, s.cfg, _index_dir(s))
    write_jsonl(s.out / "results.jsonl", results)
    metrics: dict[str, float] = {**scores, "score_mean": sum(scores.values()) / max(1, len(scores))}

    ablations: dict[str, float] = {}
    if cfg.ablations:
        tool_items = [i for i in items if SKILLS[i["skill"]].uses_tools]
        if tool_items:
            bare, bare_scores = answer_items(model_dir, tool_items, s.cfg, _index_dir(s), tools=False)
            write_jsonl(s.out / "results_no_tools.jsonl", bare)
            ablations |= {f"{k}_no_tools": v for k, v in bare_scores.items()}
        who = [i for i in items if i["skill"] == "identity"]
        if who and identity is not None:
            for on in (True, False):
                _, told = answer_items(model_dir, who, s.cfg, _index_dir(s), system=on)
                ablations[f"score.identity_{'system' if on else 'no_system'}"] = told["score.identity"]
    metrics |= ablations
    asked = s.inputs["interrogate"].metrics
    metrics |= {k: asked[k] for k in INTERROGATE_METRICS if k in asked}

    model, tok = load_assistant(model_dir)
    val = [r["messages"] for r in read_jsonl(labels / "conversations_val.jsonl")]
    if val:
        batches = ConversationBatches(val, tok, 16, model.config.seq_len).sequential(16)
        metrics["val_loss"] = mean_loss(model, batches)
    rows = []
    for name, value in scores.items():
        skill = name.removeprefix("score.")
        done = [r for r in results if r["skill"] == skill]
        row = {"skill": skill, "items": len(done), "correct": sum(r["correct"] for r in done), "score": value,
               "tool_calls": sum(len(r.get("calls", [])) for r in done)}
        for variant in ("no_tools", "system", "no_system"):
            if f"{name}_{variant}" in ablations:
                row[variant] = ablations[f"{name}_{variant}"]
        rows.append(row)
        s.log.info(f"evals: {skill} {row['correct']}/{len(done)}"
                   + "".join(f", {v} {row[v]}" for v in ("no_tools", "system", "no_system") if v in row))
    for k in INTERROGATE_METRICS:
        if k in metrics:
            rows.append({"skill": k, "items": "", "correct": "", "score": round(metrics[k], 3)})
    if "val_loss" in metrics:
        rows.append({"skill": "val_loss", "items": len(val), "correct": "", "score": round(metrics["val_loss"], 4)})
    s.table("scores", rows, "assistant evaluation: score per skill as served (tools, system message), and ablations")
    bars = score_bars({k.removeprefix("score."): v for k, v in scores.items()}, s.out / "scores.png", "eval scores",
                      baseline={k.removeprefix("score.").removesuffix("_no_tools"): v for k, v in ablations.items()
                                if k.endswith("_no_tools")} or None, labels=("as served", "without tools"))
    s.image("score-chart", bars, "eval scores per skill (beside: without tools)")
    return {
        "counts": {"items": len(results), "failures": sum(not r["correct"] for r in results),
                   "tool_calls": sum(len(r.get("calls", [])) for r in results)},
        "metrics": metrics,
        "info": {"items_hash": items_hash(items), "index_path": str(_index_dir(s)), "answer_setup": answer_setup(s)},
    }
