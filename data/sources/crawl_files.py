"""Crawl records -> raw document shards: the `crawl` stage's per-record conversion and its one-file-per-job form.

One job reads one source file into its own shards (`raw-FILE-PART.parquet`) and its own quarantine file, so the
files of a crawl can be read in parallel and the output does not depend on which worker read which file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data.cleaning.extract import decode_with_charset
from data.sources.quarantine import Quarantine
from data.sources.readers import RawDocument, mix_sources
from data.tokens.documents import Document, ShardWriter


def raw_to_row(raw: RawDocument, stats: Counter) -> Document:
    """Decode the payload (declared charset, else <meta>, else UTF-8, else a guess) and keep where it came from."""
    decoded = decode_with_charset(raw.content, raw.meta.get("charset"))
    meta = {**raw.meta, "content_type": raw.content_type}
    if decoded.charset:
        meta["charset_used"] = decoded.charset
    stats["charset_fallback"] += decoded.fallback  # informational: the document is kept
    return {"id": raw.id, "url": raw.url, "text": decoded.text, "source": raw.source, "meta": meta}


def note_revision(raw: RawDocument, revisions: dict[str, str]) -> None:
    """Remember the Hub commit a source was read at (the hf reader puts it in each document's meta)."""
    revision = raw.meta.get("hf_revision")
    if revision:
        revisions.setdefault(raw.source, revision)


def ingest_file(job: dict) -> dict:
    """job: {"index", "source" (one expanded file, URL or hf: spec), "out", "rows_per_shard", "max_page_bytes"}.
    Returns {"stats": {...}, "documents": n, "bad_files": [{"source", "reason"}], "hf_revisions": {source: commit}}.
    A network or I/O error raises TransientReadError (the job fails; nothing is quarantined)."""
    out = Path(job["out"])
    stats: Counter = Counter()
    revisions: dict[str, str] = {}
    documents = 0
    with (
        Quarantine(out / "quarantine" / f"part-{job['index']:05d}.jsonl") as quarantine,
        ShardWriter(out / "documents", f"raw-{job['index']:05d}", job["rows_per_shard"]) as writer,
    ):
        for raw in mix_sources([([job["source"]], 1.0)], quarantine, stats, max_page_bytes=job["max_page_bytes"]):
            writer.write(raw_to_row(raw, stats))
            note_revision(raw, revisions)
            documents += 1
    return {"stats": dict(stats), "documents": documents, "bad_files": quarantine.bad_files, "hf_revisions": revisions}
