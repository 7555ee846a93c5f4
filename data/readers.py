"""Streaming readers for crawl inputs (WARC, WET, parquet, JSONL, Hugging Face datasets) that count every record.

Every candidate document record adds 1 to stats["read"] and ends in exactly one of: yielded (stats["yielded"]),
filtered (stats["filtered_status"], stats["filtered_content_type"]) or quarantined (stats["quarantined"]), so
    read == yielded + filtered_status + filtered_content_type + quarantined.
WARC records that are not documents (warcinfo, request, metadata, revisit...) count as stats["skipped_<type>"].
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warcio.archiveiterator import ArchiveIterator

from data.quarantine import Quarantine

# Document types we extract text from. Trusting the HTTP Content-Type (no payload sniffing) is deliberate:
# sniffing silently drops what it misjudges; a wrong header is counted here as filtered_content_type.
TEXT_CONTENT_TYPES = {"text/html", "application/xhtml+xml", "text/plain"}
READ_OUTCOMES = ("yielded", "filtered_status", "filtered_content_type", "quarantined")

WARC_SUFFIXES = (".warc.gz", ".warc")
WET_SUFFIXES = (".warc.wet.gz", ".warc.wet", ".wet.gz", ".wet")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = WET_SUFFIXES + WARC_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES

_HTTP_STATUS_LINE = re.compile(r"^HTTP/\d(\.\d)?$")
_RESYNC_CHUNK = 1 << 20


@dataclass
class RawDocument:
    """A document as read, before text extraction: HTML or text bytes plus where it came from."""

    id: str
    url: str
    content: bytes | str
    content_type: str  # mime type only, e.g. "text/html", "text/plain"
    source: str
    meta: dict[str, Any] = field(default_factory=dict)  # warc_date, warc_record_id, http_status, charset, ...


def expand_sources(sources: list[str]) -> list[str]:
    """Expand globs (sorted) and directories (their supported files, sorted); keep "hf:" specs as they are."""
    out: list[str] = []
    for source in sources:
        if source.startswith("hf:"):
            out.append(source)
            continue
        pattern = os.path.expanduser(source)
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise FileNotFoundError(f"source pattern {source!r} matched no files")
            out.extend(m for m in matches if os.path.isfile(m))
        elif os.path.isdir(pattern):
            files = sorted(str(p) for p in Path(pattern).rglob("*")
                           if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES))
            if not files:
                raise FileNotFoundError(f"source directory {source!r} holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
            out.extend(files)
        elif os.path.isfile(pattern):
            out.append(pattern)
        else:
            raise FileNotFoundError(f"source {source!r} does not exist")
    return list(dict.fromkeys(out))  # a file named twice is read once


def source_kind(source: str) -> str:
    """"warc", "wet", "parquet", "jsonl" or "hf" for a source path/spec; ValueError for anything else."""
    name = source.lower()
    if source.startswith("hf:"):
        return "hf"
    for kind, suffixes in (("wet", WET_SUFFIXES), ("warc", WARC_SUFFIXES), ("parquet", PARQUET_SUFFIXES),
                           ("jsonl", JSONL_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    raise ValueError(f"source {source!r}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)} "
                     "or hf:NAME[:CONFIG][:SPLIT])")


def read_sources(sources: list[str], quarantine: Quarantine, stats: Counter) -> Iterator[RawDocument]:
    """Stream RawDocuments from every source in order (sources are expanded first)."""
    readers = {"warc": _read_warc, "wet": _read_wet, "parquet": _read_parquet, "jsonl": _read_jsonl, "hf": _read_hf}
    for source in expand_sources(sources):
        stats["sources"] += 1
        for doc in readers[source_kind(source)](source, quarantine, stats):
            stats["yielded"] += 1
            yield doc


def _quarantine(quarantine: Quarantine, stats: Counter, record: Any, source: str, reason: str) -> None:
    quarantine.add(record, source, reason)
    stats["quarantined"] += 1


# --- WARC / WET -----------------------------------------------------------------------------------------------


class _QuietArchiveIterator(ArchiveIterator):
    # warcio writes a warning to stderr when a record is not followed by blank lines (bad Content-Length);
    # we count and quarantine such damage ourselves instead.
    INC_RECORD = ""


def _iter_warc_records(path: str, doc_type: str, quarantine: Quarantine,
                       stats: Counter) -> Iterator[tuple[Any, int]]:
    """Yield (warcio record, offset) for every readable `doc_type` record; other types are counted as skipped.

    Damage does not lose the rest of the file: on a record that ends early (warcio stops at a corrupt gzip member
    as if the file ended) or data warcio cannot parse, skip to the next gzip member / WARC header and go on.
    Each damaged stretch is quarantined once and counted as one read record; a damaged `doc_type` record is
    quarantined by the caller, which sees its missing bytes.
    """
    start: int | None = 0
    gzipped = path.lower().endswith(".gz")
    while start is not None:
        with open(path, "rb") as fh:
            fh.seek(start)
            iterator = _QuietArchiveIterator(fh)
            offset = start
            resume_after: int | None = None
            try:
                for record in iterator:
                    # iterator.offset is this record's start until warcio reads past it (get_record_offset() would
                    # consume the record to find its length).
                    offset = iterator.offset
                    if record.rec_type == doc_type:
                        yield record, offset
                    else:
                        stats[f"skipped_{record.rec_type or 'unknown'}"] += 1
                    missing = _drain(record)
                    if missing:
                        if record.rec_type != doc_type:
                            stats["read"] += 1
                            _quarantine(quarantine, stats, {"file": path, "offset": offset}, path,
                                        f"{path} offset {offset}: {record.rec_type} record truncated, {missing} "
                                        "bytes missing; skipped to the next record")
                        resume_after = offset
                        break
            except Exception as err:  # noqa: BLE001 - zlib.error, ArchiveLoadFailed, ValueError...
                error_offset = max(getattr(iterator, "offset", offset), offset)
                stats["read"] += 1
                _quarantine(quarantine, stats, {"file": path, "offset": error_offset}, path,
                            f"{path} offset {error_offset}: unreadable WARC data "
                            f"({type(err).__name__}: {str(err)[:200]!r}); skipped to the next record")
                resume_after = error_offset
        # Always move forward, even when warcio reports an offset before where this pass started.
        start = None if resume_after is None else _next_record_start(path, max(resume_after, start) + 1, gzipped)


def _drain(record: Any) -> int:
    """Read what the consumer left of a record; return how many bytes of its declared length the file lacked."""
    stream = record.raw_stream
    while stream.read(1 << 16):
        pass
    return getattr(stream, "limit", 0) or 0


def _next_record_start(path: str, offset: int, gzipped: bool) -> int | None:
    """Offset of the next plausible record start at or after `offset` (gzip member magic, or a WARC/1.x line)."""
    magic = b"\x1f\x8b\x08" if gzipped else b"WARC/1."
    with open(path, "rb") as fh:
        fh.seek(offset)
        pos = offset
        tail = b""
        while chunk := fh.read(_RESYNC_CHUNK):
            data = tail + chunk
            found = data.find(magic)
            while found != -1:
                candidate = pos - len(tail) + found
                if gzipped and _gzip_member_ok(path, candidate):
                    return candidate
                if not gzipped and (candidate == 0 or _preceded_by_newline(path, candidate)):
                    return candidate
                found = data.find(magic, found + 1)
            tail = data[-(len(magic) - 1):]
            pos += len(chunk)
    return None


def _gzip_member_ok(path: str, offset: int) -> bool:
    """A random 1f 8b 08 inside compressed data is not a member start: check that it decompresses."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        head = fh.read(64 * 1024)
    try:
        return bool(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 16).startswith(b"WARC/"))
    except zlib.error:
        return False


def _preceded_by_newline(path: str, offset: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(offset - 1)
        return fh.read(1) == b"\n"


def _record_id(record: Any, path: str, offset: int) -> str:
    rid = record.rec_headers.get_header("WARC-Record-ID")
    return rid.strip("<>") if rid else f"{Path(path).name}@{offset}"


def _read_payload(record: Any) -> tuple[bytes, int]:
    """Payload bytes (chunked/content-encoding decoded by warcio) and how many block bytes the file lacked."""
    payload = record.content_stream().read()
    missing = getattr(record.raw_stream, "limit", 0) or 0  # LimitReader left short: the file ended mid-record
    return payload, missing


def _split_content_type(value: str | None) -> tuple[str, str | None]:
    if not value:
        return "", None
    mime, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip("\"'").lower()
    return mime.strip().lower(), charset


def _read_warc(path: str, quarantine: Quarantine, stats: Counter) -> Iterator[RawDocument]:
    for record, offset in _iter_warc_records(path, "response", quarantine, stats):
        stats["read"] += 1
        doc = _response_to_raw(record, path, offset, quarantine, stats)
        if doc is not None:
            yield doc


def _response_to_raw(record: Any, path: str, offset: int, quarantine: Quarantine,
                     stats: Counter) -> RawDocument | None:
    url = record.rec_headers.get_header("WARC-Target-URI") or ""
    where = f"{path} offset {offset} ({url or 'no WARC-Target-URI'})"
    summary = {"file": path, "offset": offset, "url": url,
               "warc_record_id": record.rec_headers.get_header("WARC-Record-ID")}
    http = record.http_headers
    if http is None:
        _quarantine(quarantine, stats, summary, path, f"{where}: response record without an HTTP header block")
        return None
    status = http.get_statuscode() or ""
    if not _HTTP_STATUS_LINE.match(http.protocol or "") or not re.fullmatch(r"\d{3}", status):
        summary["status_line"] = f"{http.protocol} {http.statusline}"
        _quarantine(quarantine, stats, summary, path, f"{where}: unparseable HTTP status line "
                    f"{(http.protocol + ' ' + http.statusline)[:80]!r}")
        return None
    if status != "200":
        stats["filtered_status"] += 1
        return None
    mime, charset = _split_content_type(http.get_header("Content-Type"))
    if mime not in TEXT_CONTENT_TYPES:
        stats["filtered_content_type"] += 1
        return None
    try:
        payload, missing = _read_payload(record)
    except Exception as err:  # noqa: BLE001 - broken chunked encoding, bad gzip content-encoding...
        _quarantine(quarantine, stats, summary, path, f"{where}: cannot read payload ({type(err).__name__}: {err})")
        return None
    if missing:
        summary["payload_head"] = payload[:200]
        _quarantine(quarantine, stats, summary, path,
                    f"{where}: record truncated, {missing} bytes of its WARC block missing (file ends mid-record?)")
        return None
    truncated = record.rec_headers.get_header("WARC-Truncated")
    declared = http.get_header("Content-Length")
    # Only comparable when the payload is stored as sent; a crawler-declared truncation (WARC-Truncated, e.g.
    # Common Crawl's 1 MiB cap) is kept: the first MiB of a page still extracts fine.
    if (declared and not truncated and not http.get_header("Transfer-Encoding")
            and not http.get_header("Content-Encoding") and declared.strip().isdigit()
            and int(declared) != len(payload)):
        summary["payload_head"] = payload[:200]
        _quarantine(quarantine, stats, summary, path, f"{where}: HTTP Content-Length {declared.strip()} but payload "
                    f"has {len(payload)} bytes (truncated or corrupt record)")
        return None
    meta = {"warc_date": record.rec_headers.get_header("WARC-Date"),
            "warc_record_id": record.rec_headers.get_header("WARC-Record-ID"),
            "http_status": int(status), "charset": charset, "warc_file": path, "warc_offset": offset}
    if truncated:
        meta["warc_truncated"] = truncated
    return RawDocument(id=_record_id(record, path, offset), url=url, content=payload, content_type=mime,
                       source=path, meta=meta)


def _read_wet(path: str, quarantine: Quarantine, stats: Counter) -> Iterator[RawDocument]:
    for record, offset in _iter_warc_records(path, "conversion", quarantine, stats):
        stats["read"] += 1
        url = record.rec_headers.get_header("WARC-Target-URI") or ""
        try:
            payload, missing = _read_payload(record)
        except Exception as err:  # noqa: BLE001
            _quarantine(quarantine, stats, {"file": path, "offset": offset, "url": url}, path,
                        f"{path} offset {offset} ({url}): cannot read conversion record ({type(err).__name__}: {err})")
            continue
        if missing:
            _quarantine(quarantine, stats, {"file": path, "offset": offset, "url": url}, path,
                        f"{path} offset {offset} ({url}): record truncated, {missing} bytes missing")
            continue
        meta = {"warc_date": record.rec_headers.get_header("WARC-Date"),
                "warc_record_id": record.rec_headers.get_header("WARC-Record-ID"),
                "refers_to": record.rec_headers.get_header("WARC-Refers-To"),
                "charset": "utf-8", "warc_file": path, "warc_offset": offset}
        yield RawDocument(id=_record_id(record, path, offset), url=url, content=payload, content_type="text/plain",
                          source=path, meta=meta)


# --- already-extracted text: JSONL, parquet, Hugging Face ------------------------------------------------------


def _row_to_raw(row: dict[str, Any], default_id: str, source: str, where: str, quarantine: Quarantine,
                stats: Counter, extra_meta: dict[str, Any]) -> RawDocument | None:
    """A {"text", "id"?, "url"?, "meta"?} row -> RawDocument (text/plain), or quarantine naming what is wrong."""
    if not isinstance(row, dict):
        _quarantine(quarantine, stats, row, source, f"{where}: expected a JSON object, got {type(row).__name__}")
        return None
    text = row.get("text")
    if not isinstance(text, str):
        reason = "missing 'text'" if text is None else f"'text' must be a string, got {type(text).__name__}"
        _quarantine(quarantine, stats, row, source, f"{where}: {reason}")
        return None
    meta = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta else {}
        except json.JSONDecodeError:
            meta = {"raw_meta": meta}
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.update(extra_meta)
    doc_id = row.get("id")
    return RawDocument(id=str(doc_id) if doc_id not in (None, "") else default_id, url=str(row.get("url") or ""),
                       content=text, content_type="text/plain", source=source, meta=meta)


def _read_jsonl(path: str, quarantine: Quarantine, stats: Counter) -> Iterator[RawDocument]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    name = Path(path).name
    with opener(path, "rb") as fh:
        lineno = 0
        while True:
            try:
                raw = fh.readline()
            except (OSError, EOFError, zlib.error) as err:  # truncated/corrupt .gz
                stats["read"] += 1
                _quarantine(quarantine, stats, {"file": path, "after_line": lineno}, path,
                            f"{path} after line {lineno}: unreadable ({type(err).__name__}: {err}); "
                            "rest of file skipped")
                return
            if not raw:
                return
            lineno += 1
            if not raw.strip():
                continue  # blank lines are not records
            stats["read"] += 1
            where = f"{path} line {lineno}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                _quarantine(quarantine, stats, raw, path, f"{where}: invalid JSON ({err})")
                continue
            doc = _row_to_raw(row, f"{name}:{lineno}", path, where, quarantine, stats, {"line": lineno})
            if doc is not None:
                yield doc


def _read_parquet(path: str, quarantine: Quarantine, stats: Counter) -> Iterator[RawDocument]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if "text" not in names:
        raise ValueError(f"{path}: parquet input needs a 'text' column; it has {names}")
    columns = [c for c in ("id", "url", "text", "source", "meta") if c in names]
    name = Path(path).name
    row_index = 0
    for batch in pf.iter_batches(batch_size=1_024, columns=columns):
        for row in batch.to_pylist():
            stats["read"] += 1
            doc = _row_to_raw(row, f"{name}:{row_index}", path, f"{path} row {row_index}", quarantine, stats,
                              {"row": row_index})
            row_index += 1
            if doc is not None:
                yield doc


def parse_hf_spec(source: str) -> tuple[str, str | None, str]:
    """"hf:NAME[:CONFIG][:SPLIT]" -> (name, config or None, split; default "train")."""
    parts = source[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"source {source!r}: expected hf:NAME[:CONFIG][:SPLIT]")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


def _read_hf(source: str, quarantine: Quarantine, stats: Counter) -> Iterator[RawDocument]:
    from datasets import load_dataset  # imported here: slow to import, and only this source kind needs it

    name, config, split = parse_hf_spec(source)
    dataset = load_dataset(name, config, split=split, streaming=True)
    for i, row in enumerate(dataset):
        stats["read"] += 1
        doc = _row_to_raw(row, f"{name}:{split}:{i}", source, f"{source} row {i}", quarantine, stats, {"row": i})
        if doc is not None:
            yield doc
