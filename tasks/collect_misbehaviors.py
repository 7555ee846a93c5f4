"""Stage `collect_misbehaviors`: user flags, detector hits in the served traffic and failed eval items become the
labelers' queue (ranked, merged, PII-scrubbed, also as a Label Studio import), with a serving report per model version.

Since the last collection: user flags, automatic detectors over the logged traffic and failed eval items become the
labelers' queue, merged by near-identical prompt, scrubbed of PII and ranked by frequency x severity; and a serving
report per model version over the same window.

The window is (the store's watermark, its last seq]: the watermark lives in the request store itself (so every
machine sharing a PostgreSQL store agrees on it) and moves only after the queue files are written. Detectors and
what "benign" means are documented in data/chat/misbehavior.py; labelers' instructions in data/chat/instructions.md.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from pydantic import Field

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.misbehavior import (
    DEDUP_THRESHOLD,
    INSTRUCTIONS,
    LABEL_STUDIO_CONFIG,
    detectors,
    eval_findings,
    instructions_version,
    label_studio_tasks,
    merge,
    near_duplicate_groups,
    rank,
    report_metrics,
    scrub,
    serving_report,
    traffic_findings,
    transcript,
)
from model.files import atomic_write_json, atomic_write_text
from tasks.core.config import Section
from tasks.core.stage import StageRun, stage

STORE_ENV = "FACTORY_STORE_URL"
WATERMARK = "collect_misbehaviors"  # where the last collection ended
WINDOW_START = "collect_misbehaviors.from"  # where it started: a rerun with nothing new finds that window again


class CollectConfig(Section):
    """How much goes back to the labelers each week, and how misbehaviours are found in the logged traffic."""

    max_items: int = Field(500, ge=1, description="Most queue items per collection (the highest ranked).")
    store: str = Field("", description="The chat server's request/feedback store (a SQLAlchemy URL: SQLite or "
                       "PostgreSQL); '' = sqlite:///<workdir>/serving/requests.db. FACTORY_STORE_URL overrides it "
                       "(put passwords there, not in the config).", json_schema_extra={"runtime": True})
    dedup_threshold: float = Field(DEDUP_THRESHOLD, gt=0, le=1, description="Prompts whose word-bigram Jaccard "
                                   "similarity reaches this are one queue item, counted (equal ones always are).")
    repetition_ratio: float = Field(0.5, gt=0, lt=1, description="The `repetition` detector flags an answer when "
                                    "this share of its word 3-grams repeat an earlier one.")


def labeling_queue_dir(workdir: Path) -> Path:
    """Where the labelers pick up the queue (one set of files per collection, named by its artifact key)."""
    return Path(workdir) / "labeling" / "queue"


def store_url(cfg, workdir: Path) -> str:
    from serve.store import default_url

    return os.environ.get(STORE_ENV) or cfg.collect.store or default_url(Path(workdir).resolve())


def open_store(cfg, workdir: Path):
    """The request store, or None when it is a SQLite file no server has written yet (nothing to read, and computing
    a key must not create a database)."""
    from sqlalchemy.engine import make_url

    from serve.store import Store

    url = store_url(cfg, workdir)
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).exists():
        return None
    return Store(url)


def collection_window(store) -> tuple[dict, dict]:
    """(after, until) seqs of requests and feedback to read: from the watermark to the store's last seq; when nothing
    came since the last collection, that collection's window again (so its key, and its artifact, are found again)."""
    end, last = store.watermark(WATERMARK), store.last_seq()
    if end == last:
        return store.watermark(WINDOW_START), end
    return end, last


# The window each store's latest key was computed on: the build reads exactly that window, even if requests arrived
# between the key and the build (execute() computes the key and builds in the same process, one after the other).
_KEYED_WINDOWS: dict[str, tuple[dict, dict]] = {}


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    """The store (password hidden) and the window of its requests and feedback (its watermark and last seq): new
    traffic or feedback is a new key; and the labeling instructions' version (a .md edit is not in the code hash)."""
    from sqlalchemy.engine import make_url

    found = {"instructions": instructions_version()}
    store = open_store(cfg, workdir)
    if store is None:
        return {**found, "store": None}
    with store:
        window = collection_window(store)
    _KEYED_WINDOWS[store.url] = window
    return {**found, "store": make_url(store.url).render_as_string(hide_password=True),
            "after": window[0], "until": window[1]}


@stage("collect_misbehaviors", cycle="weekly", inputs=("evals", "deploy"), config={"collect": CollectConfig},
       main_metric="queued", external=_external)
def collect_misbehaviors(s: StageRun) -> dict:
    cfg = s.cfg.collect
    stats: Counter = Counter()
    requests, feedback, after, until = read_window(s.cfg, s.workdir)
    checks = detectors(cfg.repetition_ratio)
    findings = traffic_findings(requests, feedback, checks, stats)
    findings += eval_findings(read_jsonl(s.inputs["evals"].path / "results.jsonl"), stats)
    findings, replaced = scrub(findings)
    groups = near_duplicate_groups([transcript(f.messages) for f in findings], cfg.dedup_threshold)
    version = instructions_version()
    items = rank(merge(findings, groups, version))
    queued = items[: cfg.max_items]
    queue = write_queue(s.out, labeling_queue_dir(s.workdir), s.key, queued, version)

    report = serving_report(requests, findings, [d.name for d in checks])
    atomic_write_json(s.out / "serving_report.json", {"after": after, "until": until, "versions": report})
    counts = {
        **{k: stats[k] for k in ("requests_read", "requests_flagged", "requests_clean", "requests_errored",
                                 "feedback_read", "user_flags", "feedback_other", "flagged_earlier_requests",
                                 "eval_results", "eval_failures")},
        "findings": len(findings), "items": len(items), "merged": len(findings) - len(items), "queued": len(queued),
        "over_max_items": len(items) - len(queued), "simulated_items": sum(it["meta"]["simulated"] for it in queued),
        "pii_replaced": sum(replaced.values()),
        **{k: v for k, v in sorted(stats.items()) if k.startswith("detector.")},
    }
    reconcile(counts)
    if until is not None:  # the queue is written: only now is this window collected
        advance_watermark(s.cfg, s.workdir, after, until)
    _report(s, queued, report, queue)
    return {
        "counts": counts,
        "metrics": {"queued": len(queued), "findings": len(findings), **report_metrics(report)},
        "info": {"window": {"after": after, "until": until}, "instructions_version": version, "queue": str(queue)},
    }


def read_window(cfg, workdir: Path) -> tuple[list[dict], list[dict], dict | None, dict | None]:
    """(requests, feedback, after, until): the window's rows, in the window the key was computed on; nothing (and
    None, None) without a store."""
    store = open_store(cfg, workdir)
    if store is None:
        return [], [], None, None
    with store:
        after, until = _KEYED_WINDOWS.pop(store.url, None) or collection_window(store)
        requests = store.requests(after=after["requests"], until=until["requests"])
        return requests, store.feedback_since(after["feedback"], until["feedback"]), after, until


def advance_watermark(cfg, workdir: Path, after: dict, until: dict) -> None:
    """Mark the window collected; its start first, so a crash between the two writes leaves the old window whole."""
    with open_store(cfg, workdir) as store:
        store.set_watermark(WINDOW_START, after)
        store.set_watermark(WATERMARK, until)


def reconcile(c: dict) -> None:
    """Every request, feedback row and finding is accounted for exactly once."""
    checks = {
        "requests_read = flagged + clean + errored":
            c["requests_read"] == c["requests_flagged"] + c["requests_clean"] + c["requests_errored"],
        "feedback_read = user_flags + other": c["feedback_read"] == c["user_flags"] + c["feedback_other"],
        "findings = flagged requests (this window and earlier) + eval failures":
            c["findings"] == c["requests_flagged"] + c["flagged_earlier_requests"] + c["eval_failures"],
        "findings = items + merged; items = queued + over max_items":
            c["findings"] == c["items"] + c["merged"] and c["items"] == c["queued"] + c["over_max_items"],
    }
    broken = [name for name, ok in checks.items() if not ok]
    assert not broken, f"collect_misbehaviors counts do not reconcile ({'; '.join(broken)}): {c}"


def write_queue(out: Path, queue_dir: Path, key: str, items: list[dict], version: str) -> Path:
    """The queue in our JSONL and as a Label Studio import file with its labeling config and the instructions, in the
    artifact and in the labelers' folder (files named by the artifact key, so a rerun rewrites its own)."""
    tasks = label_studio_tasks(items)
    instructions = INSTRUCTIONS.read_text(encoding="utf-8")
    for folder, prefix in ((out, ""), (queue_dir, f"queue-{key}")):
        write_jsonl(folder / (f"{prefix}.jsonl" if prefix else "queue.jsonl"), items)
        atomic_write_text(folder / (f"{prefix}.label_studio.json" if prefix else "queue.label_studio.json"),
                          json.dumps(tasks, ensure_ascii=False, indent=1))
    atomic_write_text(out / "label_config.xml", LABEL_STUDIO_CONFIG)
    atomic_write_text(queue_dir / "label_config.xml", LABEL_STUDIO_CONFIG)
    atomic_write_text(out / "instructions.md", instructions)
    atomic_write_text(queue_dir / f"instructions-{version}.md", instructions)
    return queue_dir / f"queue-{key}.jsonl"


def _report(s: StageRun, queued: list[dict], report: dict[str, dict], queue: Path) -> None:
    by_source = Counter(it["source"] for it in queued)
    s.table("queue", [{"source": k, "items": v} for k, v in sorted(by_source.items())], f"labeling queue: {queue}")
    rows = [{"model_version": v, **{k: (round(x, 4) if isinstance(x, float) else x) for k, x in row.items()}}
            for v, row in report.items()]
    if rows:
        s.table("serving", rows, "served traffic per model version over the collected window")
    s.log.info(f"collect_misbehaviors: {len(queued)} items for labelers -> {queue} (and a Label Studio import file "
               f"beside it); serving report for {len(report)} model version(s)")
