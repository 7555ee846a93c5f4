"""Labeled data: the `labels` settings, schemas and validation for what labelers deliver (conversations,
comparisons), the labeling queue of model misbehaviours we send back to them, and their answers to it."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from data.samples import BUILTIN_SAMPLE
from model.chat import conversation_problem
from model.files import atomic_file

if TYPE_CHECKING:  # only for type hints: the quarantine object is passed in by the caller
    from data.sources.quarantine import Quarantine


class LabelsConfig(BaseModel):
    """Where the labels come from, how they are split, and the sizes a record may have (the `labels` section)."""

    model_config = ConfigDict(extra="forbid")

    inbox: str = Field(BUILTIN_SAMPLE, description="A folder of JSONL files from the labelers, or 'builtin:sample'.")
    sample_conversations: int = Field(2000, ge=0, description="Conversations in the built-in sample inbox.")
    sample_comparisons: int = Field(400, ge=0, description="Comparisons in the built-in sample inbox.")
    val_fraction: float = Field(
        0.05, ge=0, le=1, description="Share of records held out for validation, chosen by content hash."
    )
    max_messages: int = Field(64, ge=1, description="Longest conversation accepted, in messages.")
    max_chars_per_message: int = Field(8000, ge=1, description="Longest message (or comparison field) accepted.")
    max_total_chars: int = Field(32000, ge=1, description="Longest record accepted, all its text together.")
    seed: int = Field(0, description="Seed of the train/val split and of the sample inbox.")
    answers: str = Field("", description="A folder of the labelers' answers to labeling-queue items (JSONL of "
                         "{queue_id, messages|answer}, Label Studio JSON exports); '' = <workdir>/labeling/answers/.")
    answer_repeats: int = Field(
        5, ge=1, description="Copies of each corrected answer in the train split: a week's few dozen corrections "
        "then weigh against thousands of sample conversations. One simulated round on the tiny preset left 69% of "
        "the flagged prompts failing with 3 copies, 36% with 5, 3% with 10, while held-out failures rose 0, 2 and 5 "
        "points. An answer is in train or val, never both.")


# ---------------------------------------------------------------------------------------------------------------
# validation: each function returns None for a valid record, else one human-readable reason


def _check_messages(messages: Any, cfg: LabelsConfig, field: str, must_end_with: str) -> str | None:
    """The chat format's conversation rules (model.chat), then the size limits."""
    if (problem := conversation_problem(messages, field, ends_with=must_end_with)) is not None:
        return problem
    if len(messages) > cfg.max_messages:
        return f"{len(messages)} messages > max_messages {cfg.max_messages}"
    total = 0
    for i, msg in enumerate(messages):
        size = len(msg.get("content") or "")
        if size > cfg.max_chars_per_message:
            return f"{field}[{i}]: {size} characters > max_chars_per_message {cfg.max_chars_per_message}"
        total += size
    if total > cfg.max_total_chars:
        return f"{total} characters in total > max_total_chars {cfg.max_total_chars}"
    return None


def _check_common(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"record must be a JSON object, got {type(rec).__name__}"
    if "id" in rec and not isinstance(rec["id"], (str, int)):
        return f"'id' must be a string, got {type(rec['id']).__name__}"
    if "meta" in rec and rec["meta"] is not None and not isinstance(rec["meta"], dict):
        return f"'meta' must be an object, got {type(rec['meta']).__name__}"
    return None


def validate_conversation(rec: Any, cfg: LabelsConfig) -> str | None:
    """None if `rec` is a valid OpenAI-style {"messages": [...]} record ending with an assistant turn."""
    if (reason := _check_common(rec)) is not None:
        return reason
    if "messages" not in rec:
        return "missing 'messages'"
    return _check_messages(rec["messages"], cfg, "messages", must_end_with="assistant")


def validate_comparison(rec: Any, cfg: LabelsConfig) -> str | None:
    """None if `rec` has a prompt (string, or messages ending with a user turn) and distinct chosen/rejected."""
    if (reason := _check_common(rec)) is not None:
        return reason
    for field in ("prompt", "chosen", "rejected"):
        if field not in rec:
            return f"missing '{field}'"
    prompt = rec["prompt"]
    if isinstance(prompt, list):
        if (reason := _check_messages(prompt, cfg, "prompt", must_end_with="user")) is not None:
            return reason
    elif not isinstance(prompt, str):
        return f"'prompt' must be a string or a messages list, got {type(prompt).__name__}"
    elif not prompt.strip():
        return "'prompt' is empty"
    elif len(prompt) > cfg.max_chars_per_message:
        return f"'prompt': {len(prompt)} characters > max_chars_per_message {cfg.max_chars_per_message}"
    for field in ("chosen", "rejected"):
        value = rec[field]
        if not isinstance(value, str):
            return f"'{field}' must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"'{field}' is empty"
        if len(value) > cfg.max_chars_per_message:
            return f"'{field}': {len(value)} characters > max_chars_per_message {cfg.max_chars_per_message}"
    if rec["chosen"].strip() == rec["rejected"].strip():
        return "'chosen' and 'rejected' are identical"
    prompt_chars = len(prompt) if isinstance(prompt, str) else sum(len(m.get("content") or "") for m in prompt)
    total = prompt_chars + len(rec["chosen"]) + len(rec["rejected"])
    if total > cfg.max_total_chars:
        return f"{total} characters in total > max_total_chars {cfg.max_total_chars}"
    return None


def record_kind(rec: dict) -> str | None:
    """'conversation', 'comparison', or None when the record looks like neither."""
    if not isinstance(rec, dict):
        return None
    if "messages" in rec:
        return "conversation"
    if "chosen" in rec and "rejected" in rec:
        return "comparison"
    return None


_VALIDATORS = {"conversation": validate_conversation, "comparison": validate_comparison}


# ---------------------------------------------------------------------------------------------------------------
# reading the inbox


def read_inbox(
    inbox_dir: Path, quarantine: Quarantine, stats: Counter, cfg: LabelsConfig
) -> Iterator[tuple[str, dict]]:
    """Yield (kind, record) for every valid line of every *.jsonl under `inbox_dir`; quarantine the rest.

    Lines are read as bytes so that one badly encoded line costs one record, not the whole file.
    Label Studio JSON exports (*.json, a list of tasks) and Label Studio / Argilla records inside JSONL are
    converted to comparisons first; each task or record counts as one "line".
    stats: "read" per non-blank line, "quarantined", "conversation"/"comparison" per yielded record, and
    "quarantined:<problem>" (invalid_utf8, bad_json, not_object, unknown_kind, invalid_conversation, ...).
    """
    inbox_dir = Path(inbox_dir)
    if not inbox_dir.is_dir():
        raise FileNotFoundError(f"label inbox {inbox_dir} is not a directory")

    def reject(record: Any, where: tuple[str, str, int], problem: str, reason: str) -> None:
        name, unit, number = where
        quarantine.add(record, source=f"{name}:{number}", reason=f"{name} {unit} {number}: {reason}")
        stats["quarantined"] += 1
        stats[f"quarantined:{problem}"] += 1

    def check(rec: Any, where: tuple[str, str, int]) -> tuple[str, dict] | None:
        if not isinstance(rec, dict):
            reject(rec, where, "not_object", f"record must be a JSON object, got {type(rec).__name__}")
            return None
        converter = _export_converter(rec)
        if converter is not None:
            converted = converter(rec)
            if isinstance(converted, str):
                reject(rec, where, "bad_export", converted)
                return None
            rec = converted
        kind = record_kind(rec)
        if kind is None:
            reject(rec, where, "unknown_kind",
                   "neither a conversation ('messages') nor a comparison ('prompt'/'chosen'/'rejected')")
            return None
        if (reason := _VALIDATORS[kind](rec, cfg)) is not None:
            reject(rec, where, f"invalid_{kind}", reason)
            return None
        stats[kind] += 1
        return kind, rec

    for path in sorted([*inbox_dir.rglob("*.jsonl"), *inbox_dir.rglob("*.json")]):
        name = path.relative_to(inbox_dir).as_posix()
        if path.suffix == ".json":
            yield from _read_json_export(path, name, check, reject, stats)
            continue
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                stats["read"] += 1
                where = (name, "line", lineno)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    reject(raw.rstrip(b"\r\n"), where, "invalid_utf8", f"invalid UTF-8 at byte {e.start}")
                    continue
                try:
                    # strip the newline first: in a truncated line it would sit inside an unterminated string
                    rec = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as e:
                    reject(text.rstrip("\r\n"), where, "bad_json", f"invalid JSON at column {e.colno}: {e.msg}")
                    continue
                if (ok := check(rec, where)) is not None:
                    yield ok


def _read_json_export(path: Path, name: str, check: Any, reject: Any, stats: Counter) -> Iterator[tuple[str, dict]]:
    """A whole-file JSON export (Label Studio): a list of tasks, each counted and checked on its own."""
    raw = path.read_bytes()
    try:
        tasks = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        stats["read"] += 1
        reject(raw[:2000], (name, "item", 1), "bad_json", f"unreadable JSON export ({e})")
        return
    for i, task in enumerate(tasks if isinstance(tasks, list) else [tasks], start=1):
        stats["read"] += 1
        if (ok := check(task, (name, "item", i))) is not None:
            yield ok


# ---------------------------------------------------------------------------------------------------------------
# labeling-tool exports, converted to {"prompt", "chosen", "rejected", "meta"}; a str return is the reason it failed

_PROMPT_KEYS = ("prompt", "instruction", "request", "question", "input", "text")


def from_label_studio(task: dict) -> dict | str:
    """A Label Studio task annotated with the Pairwise tag (the RLHF preference template): the first
    submitted annotation picks left or right among the two compared data fields."""
    data = task.get("data") or {}
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            if result.get("type") != "pairwise":
                continue
            names = result.get("to_name") or ["answer1", "answer2"]
            names = names.split(",") if isinstance(names, str) else list(names)
            selected = (result.get("value") or {}).get("selected")
            if len(names) != 2 or selected not in ("left", "right") or not all(n in data for n in names):
                return f"Label Studio task {task.get('id')}: pairwise result needs two data fields and left/right"
            left, right = data[names[0]], data[names[1]]
            prompt = next((data[k] for k in _PROMPT_KEYS if k in data and k not in names), None)
            if prompt is None:
                return f"Label Studio task {task.get('id')}: no prompt field (one of {'/'.join(_PROMPT_KEYS)})"
            chosen, rejected = (left, right) if selected == "left" else (right, left)
            return {"id": f"ls-{task.get('id')}", "prompt": prompt, "chosen": chosen, "rejected": rejected,
                    "meta": {"source_format": "label_studio", "annotator": annotation.get("completed_by")}}
    return f"Label Studio task {task.get('id')}: no submitted pairwise annotation"


def from_argilla(record: dict) -> dict | str:
    """An Argilla preference record: fields with a prompt and two responses, and a ranking question answered
    either as v1 [{"values": {q: {"value": [{"value": field, "rank": n}]}}, "status"}] or as v2
    {q: [{"value": [field, ...] or [{"value", "rank"}], "status"}]}. The first submitted ranking wins."""
    fields = record.get("fields") or {}
    responses = record.get("responses") or []
    values: list[Any] = []
    if isinstance(responses, dict):  # v2: question -> list of user answers
        values = [a.get("value") for answers in responses.values() for a in answers or []
                  if isinstance(a, dict) and a.get("status", "submitted") == "submitted"]
    else:  # v1: list of user responses, each with values per question
        for r in responses:
            if isinstance(r, dict) and r.get("status", "submitted") == "submitted":
                values += [v.get("value") for v in (r.get("values") or {}).values() if isinstance(v, dict)]
    for value in values:
        if not isinstance(value, list) or len(value) < 2:
            continue
        if all(isinstance(v, dict) for v in value):
            value = [v.get("value") for v in sorted(value, key=lambda v: v.get("rank", 0))]
        best, worst = value[0], value[-1]
        if best in fields and worst in fields and best != worst:
            prompt = next((fields[k] for k in _PROMPT_KEYS if k in fields), None)
            if prompt is None:
                return f"Argilla record {record.get('id')}: no prompt field (one of {'/'.join(_PROMPT_KEYS)})"
            return {"id": f"argilla-{record.get('id')}", "prompt": prompt, "chosen": fields[best],
                    "rejected": fields[worst], "meta": {"source_format": "argilla"}}
    return f"Argilla record {record.get('id')}: no submitted ranking of two response fields"


def _export_converter(rec: dict) -> Any:
    if "data" in rec and "annotations" in rec:
        return from_label_studio
    if "fields" in rec and "responses" in rec:
        return from_argilla
    return None


# ---------------------------------------------------------------------------------------------------------------
# answers to labeling-queue items: {"queue_id", "messages"} or {"queue_id", "answer"} in JSONL, or a Label Studio
# export of the queue's import file (data.chat.misbehavior.label_studio_tasks) with a TextArea answer


def load_queue(queue_dir: Path) -> dict[str, dict]:
    """Every labeling-queue item in `queue_dir`/*.jsonl (one file per collection), by id."""
    items: dict[str, dict] = {}
    for path in sorted(Path(queue_dir).glob("*.jsonl")) if Path(queue_dir).is_dir() else []:
        for item in read_jsonl(path):
            items.setdefault(str(item["id"]), item)
    return items


def answer_from_label_studio(task: dict) -> dict | str:
    """A Label Studio task of the queue's import file, answered in a TextArea: {"queue_id", "answer", "meta"} from its
    first submitted annotation with a "textarea" result (several lines of it are joined by newlines)."""
    queue_id = (task.get("data") or {}).get("queue_id")
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            if result.get("type") != "textarea":
                continue
            text = (result.get("value") or {}).get("text")
            lines = [text] if isinstance(text, str) else [t for t in text or [] if isinstance(t, str)]
            return {"queue_id": queue_id, "answer": "\n".join(lines),
                    "meta": {"source_format": "label_studio", "task_id": task.get("id"),
                             "annotator": annotation.get("completed_by")}}
    return f"Label Studio task {task.get('id')}: no submitted annotation with a textarea answer"


def answer_conversation(rec: dict, queue: dict[str, dict], cfg: LabelsConfig) -> dict | str:
    """The training conversation an answer makes, or why it cannot be used: it must name a queue item, and either
    give the whole conversation (ending with the assistant's turn) or the answer to the item's prompt."""
    if "queue_id" not in rec or rec["queue_id"] in (None, ""):
        return "missing 'queue_id'"
    item = queue.get(str(rec["queue_id"]))
    if item is None:
        return f"queue_id {rec['queue_id']!r} names no item of the labeling queue"
    if "messages" in rec:
        messages = rec["messages"]
    elif "answer" in rec:
        if not isinstance(rec["answer"], str):
            return f"'answer' must be a string, got {type(rec['answer']).__name__}"
        if not rec["answer"].strip():
            return "empty answer"
        messages = [*item["messages"], {"role": "assistant", "content": rec["answer"]}]
    else:
        return "needs 'messages' (the whole conversation) or 'answer' (the reply to the item's prompt)"
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict) and \
            messages[-1].get("role") == "assistant" and not str(messages[-1].get("content") or "").strip():
        return "empty answer"
    meta = {**(rec["meta"] if isinstance(rec.get("meta"), dict) else {}), "queue_id": item["id"],
            "source": "labeling_queue", "queue_source": item.get("source"),
            "instructions_version": item.get("instructions_version")}
    conversation = {"messages": messages, "meta": meta}
    reason = validate_conversation(conversation, cfg)
    return conversation if reason is None else reason


def read_answers(folder: Path, queue: dict[str, dict], quarantine: Quarantine, stats: Counter,
                 cfg: LabelsConfig) -> Iterator[dict]:
    """Yield a training conversation for every usable answer under `folder` (*.jsonl lines; *.json: a Label Studio
    export or a list of our records), each linked to the queue item it answers; quarantine the rest with file, line
    (or item) and reason. stats: "read" per answer, "quarantined", "conversation" per yielded one."""
    folder = Path(folder)
    for path in sorted([*folder.rglob("*.jsonl"), *folder.rglob("*.json")]):
        name = f"answers/{path.relative_to(folder).as_posix()}"
        unit = "item" if path.suffix == ".json" else "line"
        for number, rec, problem in _answer_records(path, name, stats):
            made = _answer_to_conversation(rec, queue, cfg) if problem is None else problem
            if isinstance(made, str):
                quarantine.add(rec, source=f"{name}:{number}", reason=f"{name} {unit} {number}: {made}")
                stats["quarantined"] += 1
                continue
            stats["conversation"] += 1
            yield made


def _answer_to_conversation(rec: Any, queue: dict[str, dict], cfg: LabelsConfig) -> dict | str:
    if not isinstance(rec, dict):
        return f"record must be a JSON object, got {type(rec).__name__}"
    if "data" in rec and "annotations" in rec:
        rec = answer_from_label_studio(rec)
        if isinstance(rec, str):
            return rec
    return answer_conversation(rec, queue, cfg)


def _answer_records(path: Path, name: str, stats: Counter) -> Iterator[tuple[int, Any, str | None]]:
    """(number, record, None) for each record of an answers file, or (number, raw, problem) when it is unreadable."""
    if path.suffix == ".json":
        try:
            records = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            stats["read"] += 1
            yield 1, path.read_bytes()[:2000], f"unreadable JSON ({e})"
            return
        for i, rec in enumerate(records if isinstance(records, list) else [records], start=1):
            stats["read"] += 1
            yield i, rec, None
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            stats["read"] += 1
            try:
                yield lineno, json.loads(raw.decode("utf-8").rstrip("\r\n")), None
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                yield lineno, raw.rstrip(b"\r\n"), f"unreadable line ({e})"


# ---------------------------------------------------------------------------------------------------------------
# dedup and splits


def _normalized_messages(messages: list[dict]) -> list[dict]:
    keep = ("role", "content", "name", "tool_calls", "tool_call_id")
    return [{k: m[k] for k in keep if k in m} for m in messages]


def content_hash(kind: str, rec: dict) -> str:
    """Hash of what a record says (not its id or meta), for exact dedup and stable splits."""
    if kind == "conversation":
        payload: Any = _normalized_messages(rec["messages"])
    elif kind == "comparison":
        prompt = rec["prompt"]
        payload = {
            "prompt": _normalized_messages(prompt) if isinstance(prompt, list) else prompt,
            "chosen": rec["chosen"],
            "rejected": rec["rejected"],
        }
    else:
        raise ValueError(f"content_hash: unknown kind {kind!r} (expected 'conversation' or 'comparison')")
    blob = json.dumps([kind, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _unpack(item: Any) -> tuple[str, dict]:
    """Accept plain records or the (kind, record) pairs that read_inbox yields."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    kind = record_kind(item)
    if kind is None:
        raise ValueError(f"record {str(item)[:80]!r} is neither a conversation nor a comparison")
    return kind, item


def dedup_records(records: Iterable[Any]) -> tuple[list[Any], int]:
    """Drop exact duplicates by content hash, keeping first occurrences in order; returns (unique, n_dropped)."""
    seen: set[str] = set()
    unique: list[Any] = []
    dropped = 0
    for item in records:
        h = content_hash(*_unpack(item))
        if h in seen:
            dropped += 1
            continue
        seen.add(h)
        unique.append(item)
    return unique, dropped


def split_records(
    records: Iterable[Any], val_fraction: float, seed: int, key: Callable[[Any], str] | None = None
) -> tuple[list[Any], list[Any]]:
    """Deterministic train/val split: a record goes to val when the hash of (seed, content) falls below
    val_fraction, so a record keeps its split as the label set grows week to week. Order is preserved.
    key: what to hash instead of the content (answers to one queue item share its id, and so their side)."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    train: list[Any] = []
    val: list[Any] = []
    for item in records:
        what = key(item) if key is not None else content_hash(*_unpack(item))
        h = hashlib.sha256(f"{seed}:{what}".encode()).digest()
        (val if int.from_bytes(h[:8], "big") / 2**64 < val_fraction else train).append(item)
    return train, val


# ---------------------------------------------------------------------------------------------------------------
# labeling queue: misbehaviours found by evals or users, for labelers to fix


def queue_item(
    prompt_messages: list[dict] | str,
    model_answer: str,
    reason: str,
    source: str,
    expected: str | None = None,
    meta: dict | None = None,
) -> dict:
    """One labeling-queue entry; the id hashes the prompt, answer and source so repeats collapse."""
    if isinstance(prompt_messages, str):
        messages = [{"role": "user", "content": prompt_messages}]
    else:
        messages = [dict(m) for m in prompt_messages]
    blob = json.dumps([source, _normalized_messages(messages), model_answer], sort_keys=True, ensure_ascii=False)
    return {
        "id": hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "messages": messages,
        "model_answer": model_answer,
        "reason": reason,
        "expected": expected,
        "status": "todo",
        "meta": dict(meta or {}),
    }


# ---------------------------------------------------------------------------------------------------------------
# JSONL files


def write_jsonl(path: Path | str, records: Iterable[dict]) -> int:
    """Write records as JSONL atomically (temp file in the same directory, then rename); returns the count."""
    n = 0
    with atomic_file(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path | str) -> list[dict]:
    """Read a JSONL file strictly (blank lines skipped); errors name the file and line."""
    path = Path(path)
    out: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.name} line {lineno}: invalid JSON at column {e.colno}: {e.msg}") from e
    return out
