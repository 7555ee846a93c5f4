"""Stage `crawl`: read crawl sources (WARC/WET, parquet/JSONL documents, HF datasets) into raw document shards."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data.documents import ShardWriter
from data.extract import decode
from data.quarantine import Quarantine
from data.readers import expand_sources, read_sources
from tasks.config import BUILTIN_SAMPLE, FactoryConfig
from tasks.samples import crawl_sources, fingerprint
from tasks.stage import StageRun, stage


def _external(cfg: FactoryConfig, workdir: Path) -> dict:
    local = [s for s in cfg.crawl.sources if s != BUILTIN_SAMPLE]
    return {"sources": fingerprint(local)} if local else {}


@stage("crawl", main_metric="documents", external=_external, retries=2)
def crawl(s: StageRun) -> dict:
    cfg = s.cfg.crawl
    sources = expand_sources(crawl_sources(cfg, s.workdir))
    stats: Counter = Counter()
    documents = 0
    with (
        Quarantine(s.out / "quarantine.jsonl") as quarantine,
        ShardWriter(s.out / "documents", "raw", cfg.rows_per_shard) as writer,
    ):
        for raw in read_sources(sources, quarantine, stats):
            text = decode(raw.content, raw.meta.get("charset"))  # unknown charsets fall back to UTF-8
            writer.write(
                {
                    "id": raw.id,
                    "url": raw.url,
                    "text": text,
                    "source": raw.source,
                    "meta": {**raw.meta, "content_type": raw.content_type},
                }
            )
            documents += 1
            if documents % 200 == 0:
                s.log.info(f"crawl: {documents} documents, {stats['read']} records read")
            if cfg.max_documents and documents >= cfg.max_documents:
                break
    filtered = sum(v for k, v in stats.items() if k.startswith("filtered_"))
    counts = {
        "sources": len(sources),
        "read": stats["read"],
        "documents": documents,
        "filtered": filtered,
        "quarantined": stats["quarantined"],
        **{k: v for k, v in sorted(stats.items()) if k not in ("read", "quarantined")},
    }
    if not cfg.max_documents or documents < cfg.max_documents:
        assert stats["read"] == documents + filtered + stats["quarantined"], f"crawl counts do not reconcile: {counts}"
    s.table("counts", [{"count": k, "value": v} for k, v in counts.items()], "crawl: records read, kept, dropped")
    return {"counts": counts, "metrics": {"documents": documents}}
