"""Stage `interrogate`: find what the assistant does not know, and write refusals to teach where it answers anyway.

It is asked, as it is served (its tools, search over the crawl among them, and its system message), about facts of
its pretraining crawl ("What is <page topic>?", the page's first prose sentence the reference) and about invented
people, countries and gadgets; each answer is right, refused, or wrong (confident, about an invented subject).

Questions are split by a hash of each one into a teach part and a held-out part. For the teach questions it got wrong
or invented an answer to, refusal conversations go as one batch into `<workdir>/labeling/generated/`, which next
week's `ingest_labels` reads like a labelers' batch. The rates are measured on the held-out part only:
hallucination_rate (confident answers / invented questions), known_accuracy, known_refusal_rate, and
over_refusal_rate (of the held-out known questions the previous round's model answered right, the share this one
refuses), where the previous round is the latest complete interrogate artifact of another model with the same
question set (same config and crawl); without one it is not measured, and the rates table says so.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from pydantic import Field

from data.chat.interrogate import (
    CONFIDENT,
    HELD_OUT,
    INSTRUCTIONS_VERSION,
    INVENTED,
    KNOWN,
    REFUSED,
    RIGHT,
    SOURCE,
    TEACH,
    WRONG,
    classify,
    invented_questions,
    known_questions,
    needs_teaching,
    over_refusal,
    part_of,
    rates,
    refusal_conversation,
)
from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import user_turns
from model.files import atomic_write_json
from model.tools import ToolsConfig
from tasks.core.artifacts import ArtifactStore, now_iso
from tasks.core.config import Section
from tasks.core.stage import StageRun, key_fields, stage
from tasks.ingest_labels import generated_dir

CLASSES = [(KNOWN, RIGHT), (KNOWN, REFUSED), (KNOWN, WRONG), (INVENTED, REFUSED), (INVENTED, CONFIDENT)]


class InterrogateConfig(Section):
    """How many questions of each kind the assistant is asked, how they are split, and how it answers."""

    known_questions: int = Field(200, ge=0, description="Most questions about crawled pages ('What is <topic>?'), "
                                 "one per train document with a topic (its URL's last segment) and a prose sentence.")
    invented_questions: int = Field(200, ge=1, description="Questions about invented people, countries and gadgets "
                                    "(the refusal skill's).")
    held_out_fraction: float = Field(0.5, gt=0, lt=1, description="Share of the questions held out (measured, never "
                                     "taught), chosen by a hash of each question, so it keeps its part every round.")
    max_new_tokens: int = Field(96, ge=1, description="Longest answer generated per question (greedy), tool calls "
                                "included.")
    samples_per_class: int = Field(3, ge=0, description="Sample answers shown per kind and class in the report.")
    seed: int = Field(0, description="Draws the invented questions, the crawl pages asked about and the split.")


def question_set(cfg: InterrogateConfig, crawl_key: str) -> str:
    """Which questions a round asks, before what the week's training data rules out: its config and its crawl."""
    blob = json.dumps({"config": key_fields(cfg), "crawl": crawl_key}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def previous_round(workdir: Path, questions: str, model_build_id: str) -> tuple[Path, dict] | None:
    """(folder, manifest) of the latest complete interrogate artifact that asked the same question set of another
    model, or None."""
    store = ArtifactStore(Path(workdir) / "artifacts")
    found = [a for a in (store.load("interrogate", k) for k in store.list_keys("interrogate")) if a is not None]
    earlier = [a for a in found if a.manifest.get("info", {}).get("question_set") == questions
               and a.manifest["inputs"]["rl"]["build_id"] != model_build_id and a.file("answers.jsonl").is_file()]
    if not earlier:
        return None
    latest = max(earlier, key=lambda a: (a.manifest["created"], a.key))
    return latest.path, latest.manifest


@stage("interrogate", cycle="weekly", inputs=("rl", "preprocess", "ingest_labels", "index"),
       config={"interrogate": InterrogateConfig, "tools": ToolsConfig}, main_metric="hallucination_rate")
def interrogate(s: StageRun) -> dict:
    # torch-using imports inside: declaring the stage stays fast (`factory` checks its input first)
    from data.tokens.documents import read_documents
    from tasks.evals import answer_items

    cfg: InterrogateConfig = s.cfg.interrogate
    labels = s.inputs["ingest_labels"].path
    trained_on = user_turns([*read_jsonl(labels / "conversations_train.jsonl"),
                             *read_jsonl(labels / "comparisons_train.jsonl")])
    train_docs = sorted((s.inputs["preprocess"].path / "documents").glob("train-*.parquet"))
    from data.search import SearchIndex

    index_dir = s.inputs["index"].path / "index"
    known, known_stats = known_questions(read_documents(train_docs, ["id", "url", "text"]), cfg.known_questions,
                                         cfg.seed, trained_on, SearchIndex.load(index_dir))
    invented, invented_stats = invented_questions(cfg.invented_questions, cfg.seed, trained_on)
    questions = [{**q, "part": part_of(q, cfg.held_out_fraction, cfg.seed)} for q in [*known, *invented]]
    if not any(q["part"] == HELD_OUT and q["kind"] == INVENTED for q in questions):
        raise ValueError(f"interrogate: none of the {len(invented)} invented questions is held out; raise "
                         f"interrogate.invented_questions or interrogate.held_out_fraction")
    if len(known) < cfg.known_questions:
        s.log.warning(f"interrogate: {len(known)} of {cfg.known_questions} known questions from {len(train_docs)} "
                      f"train shards ({dict(known_stats)})")

    # asked as it is served: its tools (search over the crawl), its system message if it is given one; what it
    # cannot find out either is what it should say it does not know
    answered, _ = answer_items(s.inputs["rl"].path / "model", questions, s.cfg, index_dir,
                               max_new_tokens=cfg.max_new_tokens)
    results = [{**{k: v for k, v in r.items() if k != "correct"}, "class": classify(r, r["response"])}
               for r in answered]
    write_jsonl(s.out / "answers.jsonl", results)
    refusals = [refusal_conversation(r, s.key) for r in results if needs_teaching(r)]
    write_jsonl(s.out / "refusals.jsonl", refusals)

    metrics: dict[str, float] = rates(results)
    asked = question_set(cfg, s.inputs["preprocess"].key)
    previous = previous_round(s.workdir, asked, s.inputs["rl"].build_id)
    over = over_refusal(read_jsonl(previous[0] / "answers.jsonl"), results) if previous else None
    if over and over["over_refusal_rate"] is not None:
        metrics["over_refusal_rate"] = over["over_refusal_rate"]
    s.table("rates", _rate_rows(results, metrics, over, previous),
            "interrogate: rates on the held-out questions (never taught)")
    s.table("samples", _samples(results, cfg.samples_per_class), "interrogate: sample answers per kind and class")

    classes = Counter((r["kind"], r["class"]) for r in results)
    counts = {
        "known_asked": len(known), "invented_asked": len(invented),
        "known_held_out": sum(q["part"] == HELD_OUT and q["kind"] == KNOWN for q in questions),
        "invented_held_out": sum(q["part"] == HELD_OUT and q["kind"] == INVENTED for q in questions),
        "teach": sum(q["part"] == TEACH for q in questions), "refusals_written": len(refusals),
        "documents_read": known_stats["documents"],
        "pages_ambiguous_topic": known_stats["ambiguous_topic"],
        "pages_no_topic_or_sentence": known_stats["no_topic_or_sentence"],
        "trained_on_skipped": known_stats["trained_on"] + invented_stats["trained_on"],
        **{f"{kind}_{cls}": classes[(kind, cls)] for kind, cls in CLASSES},
    }
    batch = _write_batch(s.workdir, s.key, refusals)
    s.log.info(f"interrogate: {len(results)} questions ({len(known)} known, {len(invented)} invented), "
               f"{metrics}; {len(refusals)} refusals to teach" + (f" -> {batch}" if batch else ""))
    return {
        "counts": counts,
        "metrics": metrics,
        "info": {"question_set": asked, "batch": str(batch) if batch else None,
                 "previous_round": previous[1]["key"] if previous else None,
                 "over_refusal": over or {"not_measured": "no earlier round with the same question set"}},
    }


def _write_batch(workdir: Path, key: str, refusals: list[dict]) -> Path | None:
    """The refusals as one labels batch, `<workdir>/labeling/generated/interrogate-<key>.jsonl`, with a sidecar that
    says when it was made (ingest_labels reads a batch once it is old enough) and which instructions it follows."""
    if not refusals:
        return None
    path = generated_dir(workdir) / f"interrogate-{key}.jsonl"
    write_jsonl(path, refusals)
    atomic_write_json(path.with_name(path.name + ".meta.json"),
                      {"instructions_version": INSTRUCTIONS_VERSION, "labeler": SOURCE, "created": now_iso(),
                       "round": key})
    return path


def _rate_rows(results: list[dict], metrics: dict, over: dict | None, previous: tuple[Path, dict] | None) -> list:
    held = [r for r in results if r["part"] == HELD_OUT]
    n = {kind: sum(r["kind"] == kind for r in held) for kind in (KNOWN, INVENTED)}
    rows = [{"metric": name, "value": metrics.get(name, "not measured"), "held_out_questions": n[kind],
             "note": "" if name in metrics else f"no held-out {kind} questions"}
            for name, kind in (("hallucination_rate", INVENTED), ("known_accuracy", KNOWN),
                               ("known_refusal_rate", KNOWN))]
    if over is None:
        note = "not measured: no earlier round of another model with the same question set"
    elif over["over_refusal_rate"] is None:
        note = f"not measured: round {previous[1]['key']} answered none of these held-out questions right"
    else:
        note = f"{over['now_refused']} of {over['previously_right']} answered right by round {previous[1]['key']}"
    rows.append({"metric": "over_refusal_rate", "value": metrics.get("over_refusal_rate", "not measured"),
                 "held_out_questions": over["previously_right"] if over else 0, "note": note})
    return rows


def _samples(results: list[dict], per_class: int) -> list[dict]:
    seen: Counter = Counter()
    rows = []
    for r in results:
        if seen[(r["kind"], r["class"])] >= per_class:
            continue
        seen[(r["kind"], r["class"])] += 1
        rows.append({"kind": r["kind"], "class": r["class"], "part": r["part"],
                     "question": r["messages"][-1]["content"], "answer": r["response"][:200],
                     "reference": str(r["reference"])[:200]})
    return sorted(rows, key=lambda row: (row["kind"], row["class"]))
