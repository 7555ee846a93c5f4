"""Labeled data: the `labels` settings, schemas and validation for what labelers deliver (conversations as OpenAI
messages, ShareGPT, Label Studio or Argilla exports; comparisons as prompt/chosen/rejected, pairwise choices or rankings
of k answers), the labeling queue of model misbehaviours we send back to them, and their answers to it."""

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
    generated_delay_hours: float = Field(
        24, ge=0, description="A generated batch (<workdir>/labeling/generated/*.jsonl: the refusals `interrogate` "
        "writes) joins the inbox once it is this old (by its sidecar's 'created', else its file time): the next "
        "week's run trains on it, while a rerun the same day, with nothing else changed, reuses this week's labels.")


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
# reading the inbox: one file is one batch from a labeling team


def inbox_files(inbox_dir: Path) -> list[Path]:
    """The batches under `inbox_dir`: every *.jsonl and *.json file but the batch sidecars (*.meta.json, batch.json)."""
    return sorted(p for p in [*Path(inbox_dir).rglob("*.jsonl"), *Path(inbox_dir).rglob("*.json")]
                  if not p.name.endswith(".meta.json") and p.name != "batch.json")


def batch_meta(path: Path) -> dict:
    """What a batch says of itself, {"instructions_version"?, "labeler"?}: from its sidecar `<file>.meta.json`, else
    from a `batch.json` in its folder, else nothing. A sidecar that is not a JSON object is an error: it is written
    by hand once per delivery, and guessing would file a whole batch under the wrong instructions."""
    for sidecar in (path.with_name(path.name + ".meta.json"), path.parent / "batch.json"):
        if not sidecar.is_file():
            continue
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"batch sidecar {sidecar}: unreadable JSON ({e})") from e
        if not isinstance(meta, dict):
            raise ValueError(f"batch sidecar {sidecar}: must be a JSON object, got {type(meta).__name__}")
        return {k: str(meta[k]) for k in ("instructions_version", "labeler") if meta.get(k) not in (None, "")}
    return {}


def batch_created(path: Path) -> datetime:
    """When a batch was made: its sidecar's "created" (ISO 8601; `<file>.meta.json`), else the file's modification
    time (a copy that keeps file times, as `cp -p` and shutil.copytree do, keeps it)."""
    sidecar = path.with_name(path.name + ".meta.json")
    if sidecar.is_file():
        try:
            created = json.loads(sidecar.read_text(encoding="utf-8")).get("created")
            if created:
                found = datetime.fromisoformat(str(created))
                return found if found.tzinfo else found.replace(tzinfo=UTC)
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, ValueError) as e:
            raise ValueError(f"batch sidecar {sidecar}: unreadable 'created' ({e})") from e
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def read_inbox(inbox_dir: Path, quarantine: Quarantine, stats: Counter, cfg: LabelsConfig,
               default_version: str | None = None, files: list[Path] | None = None,
               prefix: str = "") -> Iterator[tuple[str, dict]]:
    """Yield (kind, record) for every valid record of every batch under `inbox_dir` (see `inbox_files`; `files`: only
    these of its batches); quarantine the rest with file, line (or item of a whole-file JSON export) and reason. A
    batch is named by its path under `inbox_dir`, after `prefix` ("generated/": the batches a stage wrote).

    Lines are read as bytes so that one badly encoded line costs one record, not the whole file. Each line, or item
    of a *.json list, is one source record: an OpenAI conversation or a prompt/chosen/rejected comparison as is, or
    a ShareGPT conversation, Label Studio task or Argilla record converted first (`from_sharegpt`,
    `from_label_studio`, `from_argilla`); a ranking of k answers becomes its pairs (`ranking_pairs`), and if one
    of them is invalid the whole ranking is quarantined. Every record gets an "id" (its content hash when the
    delivery has none) and meta "batch" (the file), "instructions_version" (its own, else the batch's sidecar's,
    else `default_version`, else None) and "labeler" when known (its own meta or field, else the sidecar's).
    stats: "read" per source record, "quarantined" and "quarantined:<problem>" (invalid_utf8, bad_json,
    not_object, bad_export, unknown_kind, invalid_conversation, ...) per quarantined one, "conversation" /
    "comparison" per yielded record, "rankings" per source record turned into pairs and "pairs_from_rankings" for
    those pairs; so read = quarantined + yielded - pairs_from_rankings + rankings.
    """
    inbox_dir = Path(inbox_dir)
    if not inbox_dir.is_dir():
        raise FileNotFoundError(f"label inbox {inbox_dir} is not a directory")
    batches: dict[str, dict] = {}

    def reject(record: Any, where: tuple[str, str, int], problem: str, reason: str) -> None:
        name, unit, number = where
        quarantine.add(record, source=f"{name}:{number}", reason=f"{name} {unit} {number}: {reason}")
        stats["quarantined"] += 1
        stats[f"quarantined:{problem}"] += 1

    def check(rec: Any, where: tuple[str, str, int]) -> list[tuple[str, dict]]:
        if not isinstance(rec, dict):
            reject(rec, where, "not_object", f"record must be a JSON object, got {type(rec).__name__}")
            return []
        converter = _export_converter(rec)
        made = [rec] if converter is None else converter(rec)
        if isinstance(made, str):
            reject(rec, where, "bad_export", made)
            return []
        out = []
        for i, one in enumerate(made):
            kind = record_kind(one)
            if kind is None:
                reject(rec, where, "unknown_kind",
                       "neither a conversation ('messages') nor a comparison ('prompt'/'chosen'/'rejected')")
                return []
            if (reason := _VALIDATORS[kind](one, cfg)) is not None:
                reject(rec, where, f"invalid_{kind}", f"pair {i} of {len(made)}: {reason}" if len(made) > 1 else reason)
                return []
            out.append((kind, _with_meta(one, kind, rec, batches[where[0]], default_version)))
        if "ranking_id" in out[0][1]["meta"]:
            stats["rankings"] += 1
            stats["pairs_from_rankings"] += len(out)
        stats.update(kind for kind, _ in out)
        return out

    for path in inbox_files(inbox_dir) if files is None else files:
        name = prefix + path.relative_to(inbox_dir).as_posix()
        batches[name] = {**batch_meta(path), "batch": name}
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
                yield from check(rec, where)


def _read_json_export(path: Path, name: str, check: Any, reject: Any, stats: Counter) -> Iterator[tuple[str, dict]]:
    """A whole-file JSON export (Label Studio, ShareGPT): a list of items, each counted and checked on its own."""
    raw = path.read_bytes()
    try:
        tasks = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        stats["read"] += 1
        reject(raw[:2000], (name, "item", 1), "bad_json", f"unreadable JSON export ({e})")
        return
    for i, task in enumerate(tasks if isinstance(tasks, list) else [tasks], start=1):
        stats["read"] += 1
        yield from check(task, (name, "item", i))


def _with_meta(rec: dict, kind: str, source: dict, batch: dict, default_version: str | None) -> dict:
    """`rec` (valid) with its id and provenance: see `read_inbox`."""
    meta = {**_dict(rec.get("meta")), "batch": batch["batch"]}
    version = meta.get("instructions_version") or batch.get("instructions_version") or default_version
    meta["instructions_version"] = None if version in (None, "") else str(version)
    if (labeler := meta.pop("labeler", None) or source.get("labeler") or batch.get("labeler")) not in (None, ""):
        meta["labeler"] = labeler
    return {**rec, "id": rec["id"] if rec.get("id") is not None else content_hash(kind, rec), "meta": meta}


def instructions_versions(records: Iterable[tuple[str, dict]]) -> dict[str, dict]:
    """The labeling-instructions versions that (kind, record) pairs from `read_inbox` followed, "unspecified" for
    batches that name none: {version: {"files": [...], "conversations": n, "comparisons": m}}."""
    seen: dict[str, dict] = {}
    for kind, rec in records:
        row = seen.setdefault(rec["meta"].get("instructions_version") or "unspecified",
                              {"files": set(), "conversations": 0, "comparisons": 0})
        row["files"].add(rec["meta"]["batch"])
        row[f"{kind}s"] += 1
    return {version: {**row, "files": sorted(row["files"])} for version, row in sorted(seen.items())}


# ---------------------------------------------------------------------------------------------------------------
# delivery formats, converted to a list of our records; a str return is the reason the record cannot be used

_PROMPT_KEYS = ("prompt", "instruction", "request", "question", "input", "text")
_ITEM_TEXT_KEYS = ("text", "body", "answer", "response", "content", "title")
_ANSWER_QUESTIONS = ("response", "answer", "ideal_response", "completion", "output")
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user",
                   "gpt": "assistant", "chatgpt": "assistant", "assistant": "assistant", "model": "assistant"}


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _prompt(values: dict, skip: Iterable[str] = ()) -> Any:
    """The first prompt-like field of a task's data or a record's fields, None when there is none."""
    return next((values[k] for k in _PROMPT_KEYS if k in values and k not in set(skip)), None)


def _no_prompt(what: str) -> str:
    return f"{what}: no prompt field (one of {'/'.join(_PROMPT_KEYS)})"


def _conversation(what: str, rec_id: str, prompt: Any, answer: Any, meta: dict) -> list[dict] | str:
    """A prompt (text, or messages ending with the user's turn) answered by the labeler."""
    if prompt is None:
        return _no_prompt(what)
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return [{"id": rec_id, "messages": [*messages, {"role": "assistant", "content": answer}], "meta": meta}]


def ranking_pairs(tiers: list[list[str]]) -> list[tuple[str, str]]:
    """Every (better, worse) pair of a ranking given as tiers, best first, each tier the answers of one rank: an
    answer beats every answer of every later tier. Tied answers (one tier) make no pair with each other, and a
    ranking of fewer than two tiers makes none; k answers in k tiers make k(k-1)/2 pairs, best ones first."""
    return [(a, b) for i, tier in enumerate(tiers) for later in tiers[i + 1:] for a in tier for b in later]


def _ranked(what: str, ranking_id: str, prompt: Any, texts: dict[str, Any], tiers: list[list[str]],
            meta: dict) -> list[dict] | str:
    """The comparisons a ranking of `texts` (answer id -> text) makes, ids `<ranking_id>-<pair index>`; meta
    "ranking_id" keeps them together on one side of the train/val split."""
    if prompt is None:
        return _no_prompt(what)
    if missing := [a for tier in tiers for a in tier if a not in texts]:
        return f"{what}: ranked answer {missing[0]!r} is not one of its answers ({'/'.join(texts)})"
    if not (pairs := ranking_pairs(tiers)):
        return f"{what}: the ranking makes no pair (fewer than two ranks)"
    return [{"id": f"{ranking_id}-{i}", "prompt": prompt, "chosen": texts[a], "rejected": texts[b],
             "meta": {**meta, "ranking_id": ranking_id, "pair": i, "compared": [a, b]}}
            for i, (a, b) in enumerate(pairs)]


def from_sharegpt(rec: dict) -> list[dict] | str:
    """A ShareGPT conversation {"id"?, "conversations": [{"from", "value"}], "meta"?}: speakers system, human/user
    and gpt/chatgpt/assistant/model become the system, user and assistant roles; any other speaker is an error."""
    turns = rec["conversations"]
    if not isinstance(turns, list):
        return f"'conversations' must be a list of turns, got {type(turns).__name__}"
    messages = []
    for i, turn in enumerate(turns):
        speaker = _dict(turn).get("from")
        if speaker not in _SHAREGPT_ROLES:
            return f"conversations[{i}]: unknown speaker {speaker!r} (expected one of {'/'.join(_SHAREGPT_ROLES)})"
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    conversation = {"messages": messages, "meta": {**_dict(rec.get("meta")), "source_format": "sharegpt"}}
    return [{"id": rec["id"], **conversation} if "id" in rec else conversation]


def _label_studio_result(task: dict, types: tuple[str, ...]) -> tuple[dict, dict] | None:
    """(annotation, result) of the first result of one of `types` in the task's first submitted annotations."""
    for annotation in task.get("annotations") or []:
        if _dict(annotation).get("was_cancelled"):
            continue
        for result in _dict(annotation).get("result") or []:
            if str(_dict(result).get("type")).lower() in types:
                return annotation, result
    return None


def _textarea_text(result: dict) -> str:
    """A TextArea result's text; several lines of it are joined by newlines."""
    text = _dict(result.get("value")).get("text")
    return "\n".join([text] if isinstance(text, str) else [t for t in text or [] if isinstance(t, str)])


def _ranker_tiers(ranked: Any, tag: Any) -> list[list[str]] | None:
    """A Ranker result's value["ranker"] as tiers: a list of item ids (older exports) or {ranker's name: [ids]} (List +
    Ranker) is a strict order, best first; {bucket: [ids], ...} (List + Ranker + Bucket) is one tier per bucket in
    the export's order, which is the labeling config's (write the buckets best first), and "_" (items the labeler
    left unsorted) is no tier."""
    if isinstance(ranked, dict) and list(ranked) == [tag]:
        ranked = ranked[tag]
    if isinstance(ranked, list):
        return [[str(item)] for item in ranked]
    if isinstance(ranked, dict) and all(isinstance(ids, list) for ids in ranked.values()):
        return [[str(item) for item in ids] for name, ids in ranked.items() if name != "_" and ids]
    return None


def from_label_studio(task: dict) -> list[dict] | str:
    """A Label Studio task (JSON export) by its first submitted annotation's first result of these types:
    - "pairwise" (the RLHF preference template): left or right of the two compared data fields -> one comparison;
    - "ranker" (List + Ranker, see `_ranker_tiers`): the data's list of answers [{"id", "text"|"body"|...}] ranked
      -> the ranking's pairs (`ranking_pairs`);
    - "textarea": the ideal answer to the data's prompt -> a user/assistant conversation.
    meta: "labeler" (the annotation's completed_by), "instructions_version" (from the task's data)."""
    data, what = _dict(task.get("data")), f"Label Studio task {task.get('id')}"
    found = _label_studio_result(task, ("pairwise", "ranker", "textarea"))
    if found is None:
        return f"{what}: no submitted pairwise, ranker or textarea annotation"
    annotation, result = found
    by = annotation.get("completed_by")
    labeler = (by.get("email") or by.get("id")) if isinstance(by, dict) else by  # an id, or a user object
    meta = {"source_format": "label_studio", "labeler": labeler,
            "instructions_version": data.get("instructions_version")}
    rec_id, kind, value = f"ls-{task.get('id')}", result["type"].lower(), _dict(result.get("value"))
    if kind == "textarea":
        return _conversation(what, rec_id, _prompt(data), _textarea_text(result), meta)
    if kind == "ranker":
        key = next((k for k, v in data.items() if isinstance(v, list) and v
                    and all(isinstance(item, dict) and "id" in item for item in v)), None)
        tiers = _ranker_tiers(value.get("ranker"), result.get("from_name"))
        if key is None or tiers is None:
            return f"{what}: a ranker result needs value.ranker (ids or buckets of ids) and a data list of {{id, text}}"
        texts = {str(item["id"]): next((item[k] for k in _ITEM_TEXT_KEYS if k in item), None) for item in data[key]}
        return _ranked(what, rec_id, _prompt(data, skip=[key]), texts, tiers, meta)
    names = result.get("to_name") or ["answer1", "answer2"]
    names = names.split(",") if isinstance(names, str) else list(names)
    selected = value.get("selected")
    if len(names) != 2 or selected not in ("left", "right") or not all(n in data for n in names):
        return f"{what}: pairwise result needs two data fields and left/right"
    prompt = _prompt(data, skip=names)
    if prompt is None:
        return _no_prompt(what)
    left, right = data[names[0]], data[names[1]]
    chosen, rejected = (left, right) if selected == "left" else (right, left)
    return [{"id": rec_id, "prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": meta}]


def _argilla_answers(record: dict) -> list[tuple[str, Any, Any]]:
    """(question, value, user_id) of each submitted answer of an Argilla record: v1 responses are a list of user
    responses [{"values": {question: {"value"}}, "status", "user_id"}], v2 a dict {question: [{"value", "status",
    "user_id"}]}."""
    responses = record.get("responses") or []
    if isinstance(responses, dict):
        return [(q, a.get("value"), a.get("user_id")) for q, answers in responses.items()
                for a in (answers if isinstance(answers, list) else []) if _submitted(a)]
    return [(q, v.get("value"), r.get("user_id")) for r in responses if _submitted(r)
            for q, v in _dict(r.get("values")).items() if isinstance(v, dict)]


def _submitted(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("status", "submitted") == "submitted"


def _argilla_tiers(value: list) -> list[list[str]]:
    """A ranking question's answer as tiers: field names best first (a strict order), or [{"value": field, "rank": n}]
    where a smaller rank is better and equal ranks tie (an item without a rank is left out)."""
    if not all(isinstance(v, dict) for v in value):
        return [[str(v)] for v in value]
    tiers: dict[int, list[str]] = {}
    for v in value:
        if isinstance(v.get("rank"), int):
            tiers.setdefault(v["rank"], []).append(str(v.get("value")))
    return [tiers[rank] for rank in sorted(tiers)]


def from_argilla(record: dict) -> list[dict] | str:
    """An Argilla record (v1 or v2 export, `_argilla_answers`) with a prompt field, by its first submitted answer that
    is a ranking of two or more of its fields (`_argilla_tiers`) -> the ranking's pairs (`ranking_pairs`); else by
    its first text answer to a question named response/answer/ideal_response/completion/output (an SFT dataset) ->
    a user/assistant conversation. meta: "labeler" (the answer's user_id), "instructions_version" (from metadata)."""
    fields, version = _dict(record.get("fields")), _dict(record.get("metadata")).get("instructions_version")
    what, rec_id = f"Argilla record {record.get('id')}", f"argilla-{record.get('id')}"
    meta = {"source_format": "argilla", "instructions_version": version}
    answers = _argilla_answers(record)
    for _, value, user in answers:
        tiers = _argilla_tiers(value) if isinstance(value, list) else []
        ranked = [field for tier in tiers for field in tier]
        if len(ranked) >= 2 and all(field in fields for field in ranked):
            prompt, texts = _prompt(fields, skip=ranked), {field: fields[field] for field in ranked}
            return _ranked(what, rec_id, prompt, texts, tiers, {**meta, "labeler": user})
    for question, value, user in answers:
        if question in _ANSWER_QUESTIONS and isinstance(value, str):
            return _conversation(what, rec_id, _prompt(fields), value, {**meta, "labeler": user})
    return (f"{what}: no submitted ranking of two or more of its fields, nor a text answer to a question named "
            f"{'/'.join(_ANSWER_QUESTIONS)}")


def _export_converter(rec: dict) -> Any:
    if "data" in rec and "annotations" in rec:
        return from_label_studio
    if "fields" in rec and "responses" in rec:
        return from_argilla
    if "conversations" in rec:
        return from_sharegpt
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
    found = _label_studio_result(task, ("textarea",))
    if found is None:
        return f"Label Studio task {task.get('id')}: no submitted annotation with a textarea answer"
    annotation, result = found
    meta = {"source_format": "label_studio", "task_id": task.get("id"), "labeler": annotation.get("completed_by")}
    return {"queue_id": _dict(task.get("data")).get("queue_id"), "answer": _textarea_text(result), "meta": meta}


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


def split_key(kind: str, rec: dict) -> str:
    """What decides a record's side of the train/val split: the ranking it came from for the pairs of one ranking
    (so a held-out pair never shares its prompt's ranking with a training pair), else what it says."""
    return str(rec.get("meta", {}).get("ranking_id") or content_hash(kind, rec))


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
