"""Stage `ingest_labels`: validate what labelers delivered, quarantine bad records with file, line and reason,
dedup, split train/val."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data.chat.labels import LabelsConfig, content_hash, read_inbox, split_records, write_jsonl
from data.samples import BUILTIN_SAMPLE
from data.sources.fingerprint import fingerprint
from data.sources.quarantine import Quarantine
from tasks.core.samples import inbox_dir
from tasks.core.stage import StageRun, stage


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    if cfg.labels.inbox == BUILTIN_SAMPLE:  # generated from the sample crawl's pages
        return {"sample_pages": cfg.crawl.sample_pages}
    return {"inbox": fingerprint([cfg.labels.inbox])}


@stage("ingest_labels", cycle="weekly", config={"labels": LabelsConfig}, main_metric="conversations_train",
       external=_external)
def ingest_labels(s: StageRun) -> dict:
    cfg = s.cfg.labels
    inbox = inbox_dir(cfg, s.workdir, s.cfg.crawl.sample_pages)
    if not inbox.is_dir():
        raise FileNotFoundError(f"labels.inbox {str(inbox)!r} is not a folder of JSONL files")
    stats: Counter = Counter()
    seen: set[str] = set()
    kept: dict[str, list[dict]] = {"conversation": [], "comparison": []}
    with Quarantine(s.out / "quarantine.jsonl") as quarantine:
        for kind, record in read_inbox(inbox, quarantine, stats, cfg):
            digest = content_hash(kind, record)
            if digest in seen:
                stats["duplicates"] += 1
                continue
            seen.add(digest)
            kept[kind].append(record)
    counts = {
        "files": len([p for p in inbox.rglob("*") if p.suffix in (".jsonl", ".json")]),
        "read": stats["read"],
        "kept": sum(len(v) for v in kept.values()),
        "duplicates": stats["duplicates"],
        "quarantined": stats["quarantined"],
    }
    for kind, name in (("conversation", "conversations"), ("comparison", "comparisons")):
        train, val = split_records(kept[kind], cfg.val_fraction, cfg.seed)
        counts[f"{name}_train"] = write_jsonl(s.out / f"{name}_train.jsonl", train)
        counts[f"{name}_val"] = write_jsonl(s.out / f"{name}_val.jsonl", val)
    assert counts["read"] == counts["kept"] + counts["duplicates"] + counts["quarantined"], (
        f"ingest_labels counts do not reconcile: {counts}"
    )
    if not counts["conversations_train"]:
        raise ValueError(f"labels inbox {inbox}: no valid conversations to train on (see quarantine.jsonl)")
    s.table("counts", [{"count": k, "value": v} for k, v in counts.items()], f"labels from {inbox}")
    s.log.info(
        f"ingest_labels: {counts['read']} read, {counts['kept']} kept, {counts['duplicates']} duplicates, "
        f"{counts['quarantined']} quarantined -> {s.out / 'quarantine.jsonl'}"
    )
    return {
        "counts": counts,
        "metrics": {"conversations_train": counts["conversations_train"], "quarantined": counts["quarantined"]},
    }
