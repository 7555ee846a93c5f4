"""Stage `crawl`: read crawl sources (WARC/WET, parquet/JSONL documents, HF datasets; local or fsspec URLs), alone or
as a weighted mix, into raw document shards."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import closing
from pathlib import Path

from data.samples import BUILTIN_SAMPLE
from data.sources.config import CrawlConfig
from data.sources.crawl_files import ingest_file, note_revision, raw_to_row
from data.sources.crawler import crawl_site
from data.sources.fingerprint import describe
from data.sources.quarantine import Quarantine, merge_quarantine
from data.sources.readers import READ_OUTCOMES, expand_sources, hf_revision, mix_sources, source_kind
from data.tokens.documents import ShardWriter
from tasks.core.parallel import map_shards
from tasks.core.samples import crawl_sources
from tasks.core.stage import StageRun, stage


def _check(cfg, workdir: Path) -> None:
    """Before anything runs: a local glob or directory among the sources that names no file is a typo, said at once
    (remote listings are checked when the crawl reads them, where a transient error can be retried)."""
    local = [s for s in _user_sources(cfg) if "://" not in s.removeprefix("file://") and not s.startswith("hf:")]
    try:
        expand_sources(local)
    except FileNotFoundError as exc:
        raise ValueError(f"crawl.sources: {exc}") from None


MAX_LISTED_BAD_FILES = 50  # in the manifest; quarantine.jsonl has them all


def _user_sources(cfg) -> list[str]:
    # The built-in sample is rebuilt from installed documentation; its size is in the config already.
    return [spec.source for spec in cfg.crawl.specs() if spec.source != BUILTIN_SAMPLE]


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    # Local files by content (by size, mtime_ns and inode past data.sources.fingerprint.HASH_LIMIT_BYTES), URLs
    # (s3://, https://...) by the URL string, hf: specs by the revision they pin; the manifest's info["inputs"] says
    # which way each one was done.
    sources = _user_sources(cfg)
    return {"sources": describe(sources)["key"]} if sources else {}


def _groups(cfg: CrawlConfig, workdir: Path) -> tuple[list[str], list[tuple[list[str], float]]]:
    """(labels, groups): a group (files, weight) per source of a weighted mix, or all plain sources as one group."""
    specs = crawl_sources(cfg, workdir)
    options = {"paths_base_url": cfg.paths_base_url, "max_files": cfg.max_files_per_source}
    if not cfg.weighted:
        return [", ".join(s.source for s in specs)], [(expand_sources([s.source for s in specs], **options), 1.0)]
    return [s.source for s in specs], [(expand_sources([s.source], **options), s.weight) for s in specs]


def _read_in_order(s: StageRun, cfg: CrawlConfig, groups: list, stats: Counter, lost: list[dict],
                   revisions: dict[str, str]) -> int:
    """A weighted mix, or a crawl capped at max_documents: one reader, documents in draw order. Files that could not
    be read go to `lost`, the Hub commit each hf: source was read at to `revisions`."""
    documents = 0
    with (
        Quarantine(s.out / "quarantine.jsonl") as quarantine,
        ShardWriter(s.out / "documents", "raw", cfg.rows_per_shard) as writer,
        closing(mix_sources(groups, quarantine, stats, cfg.seed, max_page_bytes=cfg.max_page_bytes)) as docs,
    ):
        for raw in docs:
            writer.write(raw_to_row(raw, stats))
            note_revision(raw, revisions)
            documents += 1
            if documents % 200 == 0:
                s.log.info(f"crawl: {documents} documents, {stats['read']} records read")
            if cfg.max_documents and documents >= cfg.max_documents:
                break
    lost.extend(quarantine.bad_files)
    return documents


def _read_in_parallel(s: StageRun, cfg: CrawlConfig, files: list[str], stats: Counter, lost: list[dict],
                      revisions: dict[str, str]) -> int:
    """Every file read in full: one job per file, on cfg.workers processes or the Dask cluster. A job's network or
    I/O error fails the map (map_shards raises it as the cause of its RuntimeError), and with it the stage."""
    jobs = [{"index": i, "source": f, "out": str(s.out), "rows_per_shard": cfg.rows_per_shard,
             "max_page_bytes": cfg.max_page_bytes} for i, f in enumerate(files)]
    results = map_shards(ingest_file, jobs, cfg.workers, cfg.dask_address, name="ingest_file",
                         on_result=lambda i, r: s.log.info(f"crawl: {files[i]}: {r['documents']} documents"))
    for result in results:
        stats.update(result["stats"])
        lost.extend(result["bad_files"])
        revisions.update(result["hf_revisions"])
    parts = s.out / "quarantine"
    merge_quarantine([parts / f"part-{i:05d}.jsonl" for i in range(len(jobs))], s.out / "quarantine.jsonl")
    parts.rmdir()
    return stats["docs_source_0"]  # each file's reader counted its documents as source 0


@stage("crawl", cycle="yearly", config={"crawl": CrawlConfig}, main_metric="documents", external=_external,
       check=_check, retries=2)
def crawl(s: StageRun) -> dict:
    cfg = s.cfg.crawl
    sources = _user_sources(s.cfg)
    inputs = describe(sources) if sources else None  # before reading, as the key saw them
    labels, groups = _groups(cfg, s.workdir)
    if cfg.web.seeds:  # the user's own site, crawled politely into a WARC inside the artifact, read like any other
        warc = s.out / "web.warc.gz"
        web = crawl_site(cfg.web.seeds, warc, max_pages=cfg.web.max_pages, delay_s=cfg.web.delay_s,
                         same_domain=cfg.web.same_domain, user_agent=cfg.web.user_agent, log=s.log.info)
        s.table("web", [{"count": k, "value": v} for k, v in sorted(web.items())], "crawl: the web crawl")
        if cfg.weighted:
            labels, groups = [*labels, "web"], [*groups, ([str(warc)], cfg.web.weight)]
        else:
            groups = [(groups[0][0] + [str(warc)], 1.0)]
            labels = [", ".join(filter(None, [*labels, "web"]))]
    stats: Counter = Counter()
    lost: list[dict] = []
    revisions: dict[str, str] = {}
    if cfg.weighted or cfg.max_documents:
        documents = _read_in_order(s, cfg, groups, stats, lost, revisions)
    else:
        documents = _read_in_parallel(s, cfg, groups[0][0], stats, lost, revisions)
    filtered = sum(v for k, v in stats.items() if k.startswith("filtered_"))
    counts = {
        "sources": len(cfg.sources),
        "files_listed": sum(len(files) for files, _ in groups),
        "read": stats["read"],
        "documents": documents,
        "filtered": filtered,
        "quarantined": stats["quarantined"],
        "files_quarantined": len(lost),  # files lost whole (or from a damaged point on): always present, 0 if none
        **{k: v for k, v in sorted(stats.items()) if k not in ("read", "quarantined")},
    }
    for i in range(len(groups)):
        counts[f"share_source_{i}"] = round(stats[f"docs_source_{i}"] / max(1, documents), 4)
    # Every record is counted before the next is read, so this holds even when max_documents stopped the crawl.
    assert stats["read"] == sum(stats[k] for k in READ_OUTCOMES) and stats["yielded"] == documents, (
        f"crawl counts do not reconcile: {counts}"
    )
    if documents == 0 and stats["bad_files"] and stats["bad_files"] == stats["files"]:
        path = s.out / "quarantine.jsonl"
        reasons = [json.loads(line)["reason"] for line in path.read_text().splitlines()[:3]]
        raise ValueError(f"crawl: all {stats['files']} files failed to read (see {path}): {reasons}")
    total_weight = sum(weight for _, weight in groups)
    s.table("sources", [
        {"source": label, "weight": weight, "files": len(files), "documents": stats[f"docs_source_{i}"],
         "share": counts[f"share_source_{i}"], "target_share": round(weight / total_weight, 4)}
        for i, (label, (files, weight)) in enumerate(zip(labels, groups, strict=True))
    ], "crawl: documents per source (a weighted mix stops when its first source runs out)")
    s.table("counts", [{"count": k, "value": v} for k, v in counts.items()], "crawl: records read, kept, dropped")
    info = _info(s, inputs, groups, stats, lost, revisions)
    return {"counts": counts, "metrics": {"documents": documents}, "info": info}


def _info(s: StageRun, inputs: dict | None, groups: list, stats: Counter, lost: list[dict],
          revisions: dict[str, str]) -> dict:
    """The manifest's info: how each input was fingerprinted, the Hub revisions read, the files lost whole, and a
    `warnings` list (what `factory status` flags), each warning also logged and the lost files shown as a table."""
    info: dict = {"inputs": inputs} if inputs else {}
    warnings = []
    if lost:
        warnings.append(f"{len(lost)} of {stats['files']} files could not be read (in full) and were quarantined: "
                        f"{', '.join(f['source'] for f in lost[:3])}{' ...' if len(lost) > 3 else ''} "
                        f"(reasons in {s.out / 'quarantine.jsonl'})")
        info["files_quarantined"] = lost[:MAX_LISTED_BAD_FILES]
        s.table("files-quarantined", lost[:MAX_LISTED_BAD_FILES], "crawl: files that could not be read")
    hf = [f for files, _ in groups for f in files if source_kind(f) == "hf"]
    if hf:
        info["hf_revisions"] = {f: {"pinned": hf_revision(f), "read": revisions.get(f)} for f in hf}
    for f, rev in info.get("hf_revisions", {}).items():
        if rev["pinned"] is None and rev["read"]:
            name, sep, rest = f[len("hf:"):].partition(":")
            warnings.append(f"{f} is not pinned: read at commit {rev['read']}, but a new commit of the dataset does "
                            f"not change the stage key; pin it as hf:{name}@{rev['read']}{sep}{rest}")
    for warning in warnings:
        s.log.warning(f"crawl: {warning}")
    if warnings:
        info["warnings"] = warnings
    return info
