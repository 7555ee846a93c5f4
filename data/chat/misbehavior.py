"""Misbehaviours of the served assistant, made into labeling-queue items: automatic detectors over logged traffic, user
flags and failed eval items become findings; PII is scrubbed from them; findings whose prompts are near-identical are
merged into one item that counts them; items are ranked by frequency x severity. Also the serving report per model
version, and the queue as a Label Studio import file with its labeling config.

Plain functions over the chat server's request and feedback rows (the dicts serve/store.py returns): the stage reads
the store, this module never does.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data.chat.labels import queue_item
from data.chat.skills.refusal import _PLACE_ENDINGS, _REFUSAL_PHRASES, _SYLLABLES
from data.cleaning.minhash import HashedWords, MinHashConfig, MinHasher, UnionFind, equal_key_runs, shingle_hashes
from data.cleaning.pii import PII
from model.chat import BOS, ROLE_MARKERS, TOOL_CALL_END, TOOL_CALL_START

INSTRUCTIONS = Path(__file__).with_name("instructions.md")


def instructions_version(path: Path = INSTRUCTIONS) -> str:
    """The labeling instructions' version: a hash of their text, so an edit is a new version in every queue item."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------------
# detectors: each looks at one logged request (a completed one: status 200) and says what it saw, or None

REPETITION_RATIO = 0.5  # share of repeated word 3-grams from which an answer is a loop (ordinary prose: under 0.1)
REPETITION_MIN_WORDS = 8  # shorter answers are measured on characters, e.g. "hahahahaha..."
REPETITION_MIN_CHARS = 24
REFUSAL_HEAD_CHARS = 160  # a refusal says so up front; "not sure" deep in a long answer is a hedge, not a refusal
REFUSAL_PHRASES = (*_REFUSAL_PHRASES, "i can't help", "i cannot help", "i can't assist", "i cannot assist",
                   "i won't", "i will not", "i'm not able to", "i am not able to", "i am unable to", "as an ai")
# What a refusal is right for: a question naming something made up, as the refusal skill asks them (a word built of
# its nonsense syllables: "Velmorquan", "Brindaland"), or a plainly harmful request. Any other prompt is benign.
_MADE_UP = re.compile(f"(?:{'|'.join(_SYLLABLES)}){{2,}}(?:{'|'.join(_PLACE_ENDINGS)})?")
_HARMFUL = re.compile(r"\b(?:bombs?|explosives?|weapons?|poison\w*|malware|ransomware|kill\w*|murder\w*|suicide|"
                      r"self-harm|steal\w*|meth)\b", re.IGNORECASE)
MARKUP = (BOS, *[m for pair in ROLE_MARKERS.values() for m in pair], TOOL_CALL_START, TOOL_CALL_END)
_ANY_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>")  # our markers, and any other model's (<|endoftext|>)


@dataclass(frozen=True)
class Detector:
    """One automatic check of a logged answer: its name (kept in the queue item), its severity (1 minor .. 3 severe,
    the ranking weight) and `find(row)`: None, or what it saw."""

    name: str
    severity: int
    description: str
    find: Callable[[dict], str | None]


def repetition_ratio(text: str, n: int = 3) -> float:
    """Share of the text's word n-grams that repeat an earlier one: 0 for none, near 1 for one phrase over and over.
    Under REPETITION_MIN_WORDS words, character 4-grams of the text without spaces are measured instead (when there
    are REPETITION_MIN_CHARS of them); shorter texts are 0."""
    words = text.lower().split()
    if len(words) >= REPETITION_MIN_WORDS:
        units: list[Any] = words
    else:
        units, n = list("".join(words)), 4
        if len(units) < REPETITION_MIN_CHARS:
            return 0.0
    grams = [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def refusal_phrase(answer: str) -> str | None:
    """The refusal phrase the answer opens with (within its first REFUSAL_HEAD_CHARS characters), or None."""
    head = answer.lower().replace("\u2019", "'")[:REFUSAL_HEAD_CHARS]
    return next((p for p in REFUSAL_PHRASES if p in head), None)


def decline_reason(prompt: str) -> str | None:
    """Why declining `prompt` is right (a made-up subject, a harmful request), or None for a benign prompt."""
    made_up = next((w for w in re.findall(r"[A-Za-z]+", prompt) if _MADE_UP.fullmatch(w.lower())), None)
    if made_up is not None:
        return f"asks about {made_up!r}, a made-up name"
    if (harm := _HARMFUL.search(prompt)) is not None:
        return f"a harmful request ({harm.group(0)!r})"
    return None


def prompt_messages(row: dict) -> list[dict]:
    """The conversation a request answered: its chat messages, or a completion's prompt as one user turn."""
    keep = ("role", "content", "name", "tool_calls", "tool_call_id")
    if row.get("messages"):
        return [{k: m[k] for k in keep if k in m} for m in row["messages"]]
    return [{"role": "user", "content": row.get("prompt") or ""}]


def last_user_text(messages: list[dict]) -> str:
    return next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")


def _answer(row: dict) -> str:
    return row.get("answer") or ""


def _empty(row: dict) -> str | None:
    return "the answer is empty" if not _answer(row).strip() else None


def _truncated(row: dict) -> str | None:
    if row.get("finish_reason") != "length":
        return None
    return f"cut at max_tokens={(row.get('sampling') or {}).get('max_tokens', '?')}"


def _broken_format(row: dict) -> str | None:
    found = sorted({m for m in MARKUP if m in _answer(row)} | set(_ANY_SPECIAL.findall(_answer(row))))
    if found:
        return f"chat markup in the answer: {' '.join(found)}"
    if row.get("finish_reason") not in ("stop", "length"):
        return f"unterminated answer (finish_reason {row.get('finish_reason')!r}, neither 'stop' nor 'length')"
    return None


def _benign_refusal(row: dict) -> str | None:
    if (phrase := refusal_phrase(_answer(row))) is None:
        return None
    if decline_reason(last_user_text(prompt_messages(row))) is not None:
        return None
    return f"refused a benign prompt ({phrase!r})"


def detectors(repeat_ratio: float = REPETITION_RATIO) -> list[Detector]:
    """The automatic detectors, most severe first."""

    def repetition(row: dict) -> str | None:
        ratio = repetition_ratio(_answer(row))
        return f"{ratio:.0%} of the answer's 3-grams repeat" if ratio >= repeat_ratio else None

    return [
        Detector("empty_answer", 3, "a completed request with a blank answer", _empty),
        Detector("repetition", 3, f"a loop: >= {repeat_ratio:.0%} of word 3-grams repeat an earlier one", repetition),
        Detector("broken_format", 3, "chat markup (<|user_start|>...) in the answer, or it ended without "
                 "<|assistant_end|> and before max_tokens", _broken_format),
        Detector("benign_refusal", 2, "a refusal phrase up front, to a prompt naming nothing made up and asking "
                 "nothing harmful", _benign_refusal),
        Detector("truncated", 1, "cut at max_tokens (finish_reason 'length')", _truncated),
    ]


SEVERITY = {**{d.name: d.severity for d in detectors()}, "user_flag": 3, "failed_eval": 2}


# ---------------------------------------------------------------------------------------------------------------
# findings: one misbehaving exchange each


@dataclass
class Finding:
    """A logged request that a detector or a user flagged, or a failed eval item; `hits`: {detector: what it saw}."""

    messages: list[dict]
    answer: str
    hits: dict[str, str]
    source: str  # "traffic" or "eval:<skill>"
    response_id: str | None = None
    expected: str | None = None
    simulated: bool = False
    model_version: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def severity(self) -> int:
        return max(SEVERITY.get(h, 1) for h in self.hits)


def _from_request(row: dict, hits: dict[str, str]) -> Finding:
    meta = {"endpoint": row.get("endpoint"), "created": row.get("created")}
    return Finding(prompt_messages(row), _answer(row), hits, "traffic", row.get("id"),
                   simulated=bool((row.get("meta") or {}).get("simulated")),
                   model_version=None if row.get("model_version") is None else str(row["model_version"]), meta=meta)


def traffic_findings(requests: Iterable[dict], feedback: Iterable[dict], checks: list[Detector],
                     stats: Counter) -> list[Finding]:
    """Findings from the requests of a window (each run through `checks` when it completed) and the window's feedback
    (a -1 rating is a user flag, on a request of the window or an earlier one). stats: requests_read =
    requests_flagged + requests_clean + requests_errored (status != 200, not checked, not flagged);
    feedback_read = user_flags + feedback_other; detector.<name> per hit."""
    rows: dict[str, dict] = {}
    hits: dict[str, dict[str, str]] = {}
    for row in requests:
        stats["requests_read"] += 1
        rows[row["id"]], hits[row["id"]] = row, {}
        if row.get("status", 200) != 200:
            continue
        for check in checks:
            if (seen := check.find(row)) is not None:
                hits[row["id"]][check.name] = seen
                stats[f"detector.{check.name}"] += 1
    window = set(rows)
    for fb in feedback:
        stats["feedback_read"] += 1
        latest = ((fb.get("request") or {}).get("feedback") or [fb])[-1]  # a flag taken back by a thumbs-up is none
        if fb.get("rating") != -1 or latest.get("rating") != -1 or not fb.get("request"):
            stats["feedback_other"] += 1  # a thumbs-up, a flag taken back, or one whose request is gone
            continue
        stats["user_flags"] += 1
        rid = fb["response_id"]
        if rid not in rows:
            rows[rid], hits[rid] = fb["request"], {}
        reason = (fb.get("reason") or "").strip() or "flagged by a user"
        before = hits[rid].get("user_flag")
        hits[rid]["user_flag"] = reason if before is None or reason in before.split("; ") else f"{before}; {reason}"
    findings = []
    for rid, row in rows.items():
        if rid in window:
            kind = "flagged" if hits[rid] else "errored" if row.get("status", 200) != 200 else "clean"
            stats[f"requests_{kind}"] += 1
        if hits[rid]:
            findings.append(_from_request(row, hits[rid]))
    stats["flagged_earlier_requests"] += len(set(rows) - window)
    return findings


def eval_findings(results: Iterable[dict], stats: Counter) -> list[Finding]:
    """A failed item of the evals (results.jsonl rows: id, skill, messages, response, answer, correct)."""
    out = []
    for r in results:
        stats["eval_results"] += 1
        if r["correct"]:
            continue
        stats["eval_failures"] += 1
        out.append(Finding(r["messages"], r["response"], {"failed_eval": f"failed eval skill {r['skill']}"},
                           f"eval:{r['skill']}", expected=r.get("answer"), meta={"eval_id": r["id"]}))
    return out


def scrub(findings: list[Finding], pii: PII | None = None) -> tuple[list[Finding], Counter]:
    """The findings with PII (e-mail and public IP addresses) replaced in every prompt turn, answer, flag reason and
    expected answer; and how many of each kind were replaced."""
    pii = pii or PII()
    replaced: Counter = Counter()

    def clean(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        text, found = pii.replace(text)
        replaced.update(found)
        return text

    out = [replace(f, messages=[{**m, "content": clean(m.get("content"))} for m in f.messages],
                   answer=clean(f.answer), hits={k: clean(v) for k, v in f.hits.items()}, expected=clean(f.expected))
           for f in findings]
    return out, replaced


# ---------------------------------------------------------------------------------------------------------------
# near-duplicate prompts, ranking, queue items

# Near-identical, not similar: one other word in a 12-word question ("...the letter 'r' appear in 'pattern'?" /
# "...in 'airport'?") is another question (bigram Jaccard 0.83); one word in 40 is a near-copy (0.91).
DEDUP_THRESHOLD = 0.9
_LSH = MinHashConfig(ngram=2, buckets=20, hashes_per_bucket=5)  # pairs above ~0.5 bigram Jaccard become candidates


def transcript(messages: list[dict]) -> str:
    """A conversation as text for a person to read: 'User: ...' and 'Assistant: ...' paragraphs."""
    return "\n\n".join(f"{str(m.get('role', '?')).capitalize()}: {m.get('content') or ''}" for m in messages)


def near_duplicate_groups(texts: list[str], threshold: float = DEDUP_THRESHOLD) -> list[list[int]]:
    """Indices of `texts` grouped by near-identical text: equal once normalized (case, punctuation, spacing), or word
    bigram sets with Jaccard similarity >= threshold (MinHash LSH proposes pairs, the exact Jaccard decides). Groups
    are in order of their first member; each lists its members in order."""
    hashed = [HashedWords.of(t) for t in texts]
    shingles = [set(shingle_hashes(h.hashes, _LSH.ngram).tolist()) for h in hashed]
    uf = UnionFind()
    first: dict[str, int] = {}
    for i, h in enumerate(hashed):
        uf.union(first.setdefault(" ".join(h.words), i), i)
    if len(texts) > 1:
        keys = np.stack([MinHasher(_LSH).band_keys(h) for h in hashed])
        ids = np.arange(len(texts), dtype=np.int64)
        for b in range(_LSH.buckets):
            for run in equal_key_runs(keys[:, b], ids):
                for j in run[1:]:
                    a, c = shingles[int(run[0])], shingles[int(j)]
                    if len(a & c) >= threshold * len(a | c):
                        uf.union(int(run[0]), int(j))
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(texts)):
        groups[uf.find(i)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def merge(findings: list[Finding], groups: list[list[int]], version: str) -> list[dict]:
    """One queue item per group: the most severe member (the first among equals) speaks for it; the item counts the
    members and lists every detector and response id. queue_item's fields plus severity, count, detectors,
    response_ids, instructions_version and score (count x severity); meta.simulated is true when every member is
    simulated traffic (which is kept, only marked)."""
    items = []
    for group in groups:
        members = [findings[i] for i in group]
        lead = max(members, key=lambda f: f.severity)  # max keeps the first of equals
        detected = sorted({h for f in members for h in f.hits})
        reasons = {h: v for f in reversed(members) for h, v in f.hits.items()}
        reasons.update(lead.hits)
        source = ("user_flag" if "user_flag" in detected else lead.source if lead.source.startswith("eval:")
                  else f"detector:{max(lead.hits, key=lambda h: SEVERITY.get(h, 1))}")
        simulated = sum(f.simulated for f in members)
        meta = {**lead.meta, "simulated": simulated == len(members), "simulated_count": simulated,
                "model_versions": sorted({f.model_version for f in members if f.model_version is not None})}
        eval_ids = sorted({f.meta["eval_id"] for f in members if "eval_id" in f.meta})
        if eval_ids:
            meta["eval_ids"] = eval_ids
        expected = next((f.expected for f in members if f.expected is not None), None)
        reason = "; ".join(f"{h}: {reasons[h]}" for h in sorted(reasons, key=lambda h: (-SEVERITY.get(h, 1), h)))
        item = queue_item(lead.messages, lead.answer, reason, source, expected=expected, meta=meta)
        severity = max(f.severity for f in members)
        item.update(severity=severity, count=len(members), detectors=detected, score=severity * len(members),
                    response_ids=sorted({f.response_id for f in members if f.response_id}),
                    instructions_version=version)
        items.append(item)
    return items


def rank(items: list[dict]) -> list[dict]:
    """Most urgent first: frequency x severity, then severity, then frequency; ties in a stable order (by id)."""
    return sorted(items, key=lambda it: (-it["count"] * it["severity"], -it["severity"], -it["count"], it["id"]))


# ---------------------------------------------------------------------------------------------------------------
# the serving report


def version_label(version: Any) -> str:
    """'v3' for model version 3 (or 'v3'), 'unknown' when the request logged none; safe in an MLflow metric name."""
    if version is None or str(version) == "":
        return "unknown"
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", str(version))
    return text if text.startswith("v") else f"v{text}"


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None  # linear interpolation (numpy's default)


def serving_report(requests: list[dict], findings: list[Finding], names: list[str]) -> dict[str, dict]:
    """Per model version, over a window's requests: requests, errors and error_rate (status != 200), prompt and
    completion tokens, latency p50/p90/p99 and time to first token p50/p99 (seconds, linear percentiles), user_flags
    (requests of the version flagged by a user in the window, the request possibly older) and flag_rate
    (user_flags / requests), flagged (requests of the window any detector or user flagged) and flagged_rate,
    simulated requests, and the hits of each detector in `names` (`detector.<name>`)."""
    by_version: dict[str, list[dict]] = defaultdict(list)
    for row in requests:
        by_version[version_label(row.get("model_version"))].append(row)
    in_window = {row["id"] for row in requests}
    flags: Counter = Counter()
    flagged: Counter = Counter()
    hits: dict[str, Counter] = defaultdict(Counter)
    for f in findings:
        if f.source != "traffic":
            continue
        v = version_label(f.model_version)
        flags[v] += "user_flag" in f.hits
        if f.response_id in in_window:
            flagged[v] += 1
            hits[v].update(h for h in f.hits if h != "user_flag")
    report = {}
    for v in sorted(set(by_version) | set(flags)):
        rows = by_version.get(v, [])
        n = len(rows)
        latency = [r["latency_s"] for r in rows if r.get("latency_s") is not None]
        ttft = [r["ttft_s"] for r in rows if r.get("ttft_s") is not None]
        errors = sum(r.get("status", 200) != 200 for r in rows)
        report[v] = {
            "requests": n, "errors": errors, "error_rate": errors / n if n else None,
            "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in rows),
            "completion_tokens": sum(r.get("completion_tokens") or 0 for r in rows),
            "latency_p50": _percentile(latency, 50), "latency_p90": _percentile(latency, 90),
            "latency_p99": _percentile(latency, 99),
            "ttft_p50": _percentile(ttft, 50), "ttft_p99": _percentile(ttft, 99),
            "user_flags": flags[v], "flag_rate": flags[v] / n if n else None,
            "flagged": flagged[v], "flagged_rate": flagged[v] / n if n else None,
            "simulated": sum(bool((r.get("meta") or {}).get("simulated")) for r in rows),
            **{f"detector.{name}": hits[v][name] for name in names},
        }
    return report


def report_metrics(report: dict[str, dict]) -> dict[str, float]:
    """The report as flat MLflow metrics: serving.<version>.<field> (values that are None left out)."""
    return {f"serving.{v}.{k}": value for v, row in report.items() for k, value in row.items() if value is not None}


# ---------------------------------------------------------------------------------------------------------------
# Label Studio: the import file and the labeling config (a TextArea for the corrected answer)

LABEL_STUDIO_CONFIG = """<View>
  <Header value="Conversation so far"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="What the model answered"/>
  <Text name="model_answer" value="$model_answer"/>
  <Header value="Why it was flagged"/>
  <Text name="reason" value="$reason"/>
  <Header value="Expected answer (when known)"/>
  <Text name="expected" value="$expected"/>
  <Header value="The answer the assistant should have given (see the labeling instructions)"/>
  <TextArea name="answer" toName="prompt" rows="8" editable="true" maxSubmissions="1" required="true"
            placeholder="Write the assistant's answer"/>
  <Text name="instructions_version" value="instructions $instructions_version"/>
</View>
"""


def label_studio_tasks(items: list[dict]) -> list[dict]:
    """Queue items as Label Studio tasks ({"data": ...}): the labeler reads `prompt` (the transcript) and writes the
    answer in the config's TextArea `answer`; `queue_id` links the export back to the item."""
    return [{"data": {"queue_id": it["id"], "prompt": transcript(it["messages"]), "messages": it["messages"],
                      "model_answer": it["model_answer"], "reason": it["reason"], "expected": it.get("expected") or "",
                      "instructions_version": it.get("instructions_version", "")}} for it in items]
