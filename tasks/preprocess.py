"""Stage `preprocess`: HTML -> text, quality filters, exact dedup, train/val split by document, parquet shards."""

from __future__ import annotations

from collections import Counter

from data.dedup import ExactDedup, split_of
from data.documents import ShardWriter, read_documents
from data.extract import html_to_text
from data.filters import apply_filters, build_filters
from data.quarantine import Quarantine
from tasks.stage import StageRun, stage


@stage("preprocess", inputs=("crawl",), main_metric="kept")
def preprocess(s: StageRun) -> dict:
    cfg = s.cfg.preprocess
    stats: Counter = Counter()
    filters = build_filters(
        {
            "min_words": cfg.min_words,
            "max_chars": cfg.max_chars,
            "gopher_repetition": cfg.gopher_repetition,
            "gopher_quality": cfg.gopher_quality,
            "c4": cfg.c4,
            "english": cfg.english,
        }
    )
    dedup = ExactDedup()
    raw_files = sorted((s.inputs["crawl"].path / "documents").glob("*.parquet"))

    with (
        Quarantine(s.out / "quarantine.jsonl") as quarantine,
        ShardWriter(s.out / "documents", "train") as train,
        ShardWriter(s.out / "documents", "val") as val,
    ):

        def extracted():
            for doc in read_documents(raw_files):
                stats["read"] += 1
                try:
                    content_type = doc["meta"].get("content_type", "text/html")
                    text = (
                        html_to_text(doc["text"], doc["url"], favor=cfg.favor)
                        if "html" in content_type
                        else doc["text"].strip()
                    )
                except Exception as exc:  # a page the extractor chokes on is kept aside with its reason
                    quarantine.add(doc, doc["url"], f"extraction failed: {type(exc).__name__}: {exc}")
                    stats["quarantined"] += 1
                    continue
                if not text:
                    stats["filtered_no_text"] += 1
                    continue
                yield {**doc, "text": text}

        for doc in apply_filters(extracted(), filters, stats):
            if cfg.dedup and dedup.is_duplicate(doc["text"]):
                stats["duplicates"] += 1
                continue
            split = split_of(doc["id"], cfg.val_fraction, cfg.seed)
            (val if split == "val" else train).write(doc)
            stats[f"kept_{split}"] += 1
            stats["chars_" + split] += len(doc["text"])

    kept = stats["kept_train"] + stats["kept_val"]
    filtered = {k: v for k, v in sorted(stats.items()) if k.startswith("filtered_")}
    counts = {
        "read": stats["read"],
        "kept": kept,
        "train": stats["kept_train"],
        "val": stats["kept_val"],
        "duplicates": stats["duplicates"],
        "quarantined": stats["quarantined"],
        **filtered,
        "chars_train": stats["chars_train"],
        "chars_val": stats["chars_val"],
    }
    assert counts["read"] == kept + sum(filtered.values()) + stats["duplicates"] + stats["quarantined"], (
        f"preprocess counts do not reconcile: {counts}"
    )
    if stats["kept_val"] == 0 or stats["kept_train"] == 0:
        raise ValueError(
            f"preprocess kept {stats['kept_train']} train and {stats['kept_val']} val documents: "
            "too few to train on; loosen the filters or add crawl sources"
        )
    s.table(
        "counts",
        [{"rule": k, "documents": v} for k, v in counts.items()],
        "preprocess: what each rule kept and dropped",
    )
    return {"counts": counts, "metrics": {"kept": kept, "keep_rate": kept / max(1, counts["read"])}}
