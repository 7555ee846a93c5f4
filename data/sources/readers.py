"""Streaming readers for crawl inputs (WARC, WET, parquet, JSONL, Hugging Face datasets) that count every record.

A source is a local path or any fsspec URL (s3://, https://, memory://...): a file, a glob, a directory, or a Common
Crawl `.paths[.gz]` listing. Every candidate document record adds 1 to stats["read"] and ends in exactly one of:
yielded (stats["yielded"]), filtered (stats["filtered_<why>"]) or quarantined (stats["quarantined"]), so
    read == sum(stats[k] for k in READ_OUTCOMES).
A file that cannot be read at all (missing, 404, corrupt parquet...) is one read record, quarantined with its reason,
and adds to stats["bad_files"]; reading goes on with the next file. A network or I/O error (connection refused or
reset, a timeout, HTTP 5xx/429, EIO) is not the file's fault: it is raised as TransientReadError, never quarantined,
so the caller fails and can try again (data/sources/errors.py says which errors are which). WARC records that are
not documents (warcinfo, request, metadata, revisit...) count as stats["skipped_<type>"]. Documents read from a Hub
dataset carry the commit they were read at (meta["hf_revision"]); "hf:NAME@REVISION" pins one.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import random
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import charset_normalizer
from warcio.archiveiterator import ArchiveIterator

from data.sources.errors import raise_if_transient
from data.sources.quarantine import Quarantine

# Document types we extract text from. Trusting the HTTP Content-Type (no payload sniffing) is deliberate:
# sniffing silently drops what it misjudges; a wrong header is counted here as filtered_content_type. The one
# sniff we do is the other way round: a "text/html" body that is plainly binary is counted as filtered_binary.
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_CONTENT_TYPES = {*HTML_TYPES, "text/plain"}
READ_OUTCOMES = ("yielded", "filtered_status", "filtered_content_type", "filtered_binary", "filtered_too_large",
                 "quarantined")
MAX_PAGE_BYTES = 5_000_000  # Common Crawl itself truncates payloads at 1 MiB
COMMON_CRAWL_BASE_URL = "https://data.commoncrawl.org"

WARC_SUFFIXES = (".warc.gz", ".warc")
WET_SUFFIXES = (".warc.wet.gz", ".warc.wet", ".wet.gz", ".wet")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = WET_SUFFIXES + WARC_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
PATHS_SUFFIXES = (".paths", ".paths.gz")

_HTTP_STATUS_LINE = re.compile(r"^HTTP/\d(\.\d)?$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_RESYNC_CHUNK = 1 << 20
_READ_CHUNK = 1 << 16
# fsspec backends that are separate packages, for an error that says what to install.
_FSSPEC_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                    "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp", "hf": "huggingface_hub"}

# Binary bodies declared as text: well-known file signatures, NUL bytes, or too many control/undecodable bytes.
_BINARY_SIGNATURES = (b"\x89PNG", b"%PDF-", b"PK\x03\x04", b"GIF87a", b"GIF89a", b"\xff\xd8\xff", b"\x1f\x8b",
                      b"wOFF", b"wOF2", b"7z\xbc\xaf", b"Rar!\x1a")
_BINARY_SNIFF_BYTES = 4096
_BINARY_RATIO = 0.3
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\f\r\x1b") + b"\x7f"  # ESC: ISO-2022-JP text uses it
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL_BYTES)


@dataclass
class RawDocument:
    """A document as read, before text extraction: HTML or text bytes plus where it came from."""

    id: str
    url: str
    content: bytes | str
    content_type: str  # mime type only, e.g. "text/html", "text/plain"
    source: str
    meta: dict[str, Any] = field(default_factory=dict)  # warc_date, warc_record_id, http_status, charset, ...


# --- which files a source names ---------------------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return bool(_URL.match(source))


def _file_name(source: str) -> str:
    """The lowercased name that tells a source's type: a URL's query string (a presigned URL's) left out."""
    name = source.lower()
    return name.split("?", 1)[0].split("#", 1)[0] if _is_url(name) else name


def _is_hf_spec(source: str) -> bool:
    return source.startswith("hf:") and not source.startswith("hf://")  # hf:// is huggingface_hub's fsspec


def _backend_error(protocol: str, url: str, err: Exception) -> Exception:
    if isinstance(err, ImportError):
        package = _FSSPEC_PACKAGES.get(protocol)
        hint = f"pip install {package}" if package else f"install the fsspec backend for {protocol}:// ({err})"
        return ImportError(f"source {url!r}: reading {protocol}:// URLs needs {package or 'a backend'}: {hint}")
    return ValueError(f"source {url!r}: cannot open {protocol}:// URLs ({err})")  # e.g. fsspec's "Protocol not known"


def _require_backend(url: str) -> None:
    """Fail before reading anything when a URL's fsspec backend is not installed (s3:// needs s3fs)."""
    import fsspec  # imported here: local paths never need it

    protocol = url.split("://", 1)[0].lower()
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as err:
        raise _backend_error(protocol, url, err) from err


def _filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise _backend_error(url.split("://", 1)[0].lower(), url, err) from err


def expand_sources(sources: list[str], *, paths_base_url: str = COMMON_CRAWL_BASE_URL,
                   max_files: int | None = None) -> list[str]:
    """The files each source names, in source order, each source's files sorted; a file named twice is read once.

    Globs (local, or through the URL's fsspec filesystem), directories (their supported files), Common Crawl
    `.paths[.gz]` files (each line joined to `paths_base_url`); `max_files` keeps the first N of each. "hf:" specs and
    single files or URLs stay as they are, unchecked: one that is missing or unreadable is a bad file when read.
    A glob matching nothing, an empty directory or paths file, or a URL scheme whose backend is not installed is a
    configuration error, raised here.
    """
    out: list[str] = []
    for source in sources:
        try:
            files = _expand_one(source, paths_base_url)
        except Exception as err:
            raise_if_transient(err, source)  # a listing that timed out is retried, not taken as "no such files"
            raise
        out.extend(files[:max_files] if max_files else files)
    for url in {f.split("://", 1)[0].lower(): f for f in out if _is_url(f)}.values():
        _require_backend(url)
    return list(dict.fromkeys(out))


def _expand_one(source: str, paths_base_url: str) -> list[str]:
    if _is_hf_spec(source):
        return [source]
    if source.lower().startswith("file://"):
        source = source[len("file://"):]  # read local files directly, as fast as plain paths
    if _file_name(source).endswith(PATHS_SUFFIXES):
        return _expand_paths_file(source, paths_base_url)
    if _is_url(source):
        return _expand_url(source)
    pattern = os.path.expanduser(source)
    if glob.has_magic(pattern):
        matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
        if not matches:
            raise FileNotFoundError(f"source pattern {source!r} matched no files")
        return matches
    if os.path.isdir(pattern):
        files = sorted(str(p) for p in Path(pattern).rglob("*")
                       if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"source directory {source!r} holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
        return files
    if os.path.isfile(pattern) or pattern.lower().endswith(SUPPORTED_SUFFIXES):
        return [pattern]  # a named file that is missing by the time it is read is a bad file, not a crash
    raise FileNotFoundError(f"source {source!r} does not exist")


def _expand_url(source: str) -> list[str]:
    fs, path = _filesystem(source)
    protocol = source.split("://", 1)[0].lower()
    # A '?' in an http(s) URL starts its query string, not a glob.
    magic = "*" in path or "[" in path if protocol in ("http", "https") else glob.has_magic(path)
    if magic:
        found = fs.glob(path, detail=True)
        files = sorted(fs.unstrip_protocol(p) for p, info in found.items() if info.get("type") != "directory")
        if not files:
            raise FileNotFoundError(f"source pattern {source!r} matched no files")
        return files
    if _file_name(source).endswith(SUPPORTED_SUFFIXES):
        return [source]  # no listing call per file: a missing one is a bad file when read
    if fs.isdir(path):
        files = sorted(fs.unstrip_protocol(p) for p in fs.find(path) if p.lower().endswith(SUPPORTED_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"source directory {source!r} holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
        return files
    return [source]  # source_kind() says what is wrong with it


def _expand_paths_file(source: str, base_url: str) -> list[str]:
    """Common Crawl's `wet.paths.gz` & co.: one path per line, relative to the data server (absolute ones kept)."""
    try:
        if _is_url(source):
            fs, path = _filesystem(source)
            data = fs.cat_file(path)
        else:
            data = Path(source).expanduser().read_bytes()
        if _file_name(source).endswith(".gz"):
            data = gzip.decompress(data)
        lines = data.decode("utf-8").splitlines()
    except Exception as err:
        raise_if_transient(err, source)  # a 503 is not a missing listing: the crawl fails and is retried
        if not isinstance(err, (OSError, EOFError, zlib.error, UnicodeDecodeError)):
            raise
        raise FileNotFoundError(f"paths file {source!r}: cannot read it ({type(err).__name__}: {err})") from err
    base = base_url.rstrip("/")
    files = [line if _is_url(line) or line.startswith("/") else f"{base}/{line}"
             for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]
    if not files:
        raise FileNotFoundError(f"paths file {source!r} lists no files")
    return files


def source_kind(source: str) -> str:
    """"warc", "wet", "parquet", "jsonl" or "hf" for a source path/spec; ValueError for anything else."""
    name = _file_name(source)
    if _is_hf_spec(source):
        return "hf"
    for kind, suffixes in (("wet", WET_SUFFIXES), ("warc", WARC_SUFFIXES), ("parquet", PARQUET_SUFFIXES),
                           ("jsonl", JSONL_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    raise ValueError(f"source {source!r}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)} "
                     "or hf:NAME[@REVISION][:CONFIG][:SPLIT])")


# --- reading: sources in order, or a weighted mix ---------------------------------------------------------------


def read_sources(sources: list[str], quarantine: Quarantine, stats: Counter, *,
                 max_page_bytes: int = MAX_PAGE_BYTES, paths_base_url: str = COMMON_CRAWL_BASE_URL,
                 max_files: int | None = None) -> Iterator[RawDocument]:
    """Stream RawDocuments from every source in order, each read in full (sources are expanded first)."""
    files = expand_sources(sources, paths_base_url=paths_base_url, max_files=max_files)
    yield from mix_sources([(files, 1.0)], quarantine, stats, max_page_bytes=max_page_bytes)


def mix_sources(groups: list[tuple[list[str], float]], quarantine: Quarantine, stats: Counter, seed: int = 0, *,
                max_page_bytes: int = MAX_PAGE_BYTES) -> Iterator[RawDocument]:
    """Interleave source groups (expanded files, weight): each next document comes from group i with probability
    weight_i / sum(weights), drawn from random.Random(seed), so the same seed gives the same order. The mix stops when
    the first group runs out (datasets' interleave_datasets "first_exhausted"): shares stay as weighted instead of
    drifting to whatever is left. One group is simply read in full. Each group's files are read lazily, in order;
    stats[f"docs_source_{i}"] counts the documents taken from group i.
    """
    for files, weight in groups:
        if not weight > 0:
            raise ValueError(f"source weights must be > 0, got {weight} for {files[:1]}")
        for source in files:
            source_kind(source)  # an unsupported file is a configuration error: raise before reading anything
    streams = [_read_group(files, quarantine, stats, max_page_bytes) for files, _ in groups]
    try:
        if len(streams) == 1:
            for doc in streams[0]:
                stats["docs_source_0"] += 1
                yield doc
            return
        rng = random.Random(seed)
        indices = range(len(streams))
        cum_weights = list(accumulate(weight for _, weight in groups))
        while True:
            i = rng.choices(indices, cum_weights=cum_weights)[0]
            doc = next(streams[i], None)
            if doc is None:
                stats[f"exhausted_source_{i}"] = 1
                return
            stats[f"docs_source_{i}"] += 1
            yield doc
    finally:
        for stream in streams:
            stream.close()  # the groups left mid-file delete their temporary copies now


def _read_group(files: list[str], quarantine: Quarantine, stats: Counter, max_page_bytes: int) -> Iterator[RawDocument]:
    for source in files:
        yield from _read_file(source, quarantine, stats, max_page_bytes)


def _read_file(source: str, quarantine: Quarantine, stats: Counter, max_page_bytes: int) -> Iterator[RawDocument]:
    """One file's documents; a file that fails (missing, 404, corrupt, wrong columns) is counted and skipped, a
    network or I/O error is raised as TransientReadError."""
    readers = {"warc": _read_warc, "wet": _read_wet, "parquet": _read_parquet, "jsonl": _read_jsonl, "hf": _read_hf}
    reader = readers[source_kind(source)]
    stats["files"] += 1
    try:
        for doc in reader(source, quarantine, stats, max_page_bytes):
            stats["yielded"] += 1
            yield doc
    except Exception as err:  # noqa: BLE001 - one bad file never stops the others
        raise_if_transient(err, source)
        _bad_file(quarantine, stats, source, {"file": source}, f"{source}: cannot read file "
                  f"({type(err).__name__}: {str(err)[:300]}); skipped, reading goes on with the next file")


@contextmanager
def _local_file(source: str) -> Iterator[str]:
    """A local path to read `source` from: the path itself, or for a URL a temporary copy, deleted afterwards.

    The copy costs local disk (a Common Crawl WARC is ~1 GB) and a full download before the first record. It buys what
    remote streams do not give reliably: cheap seeks to resync after damage (WARC) and random access (parquet), from
    every fsspec filesystem alike, including HTTP servers without range requests.
    """
    if not _is_url(source):
        yield source
        return
    fs, path = _filesystem(source)
    fd, tmp = tempfile.mkstemp(prefix="llm-factory-crawl-", suffix=f"-{Path(path).name}"[-60:])
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        os.unlink(tmp)


def _quarantine(quarantine: Quarantine, stats: Counter, record: Any, source: str, reason: str) -> None:
    quarantine.add(record, source, reason)
    stats["quarantined"] += 1


def _bad_file(quarantine: Quarantine, stats: Counter, source: str, record: Any, reason: str) -> None:
    stats["read"] += 1  # as one record, so read == yielded + filtered + quarantined still holds
    stats["bad_files"] += 1
    quarantine.bad_files.append({"source": source, "reason": reason})
    _quarantine(quarantine, stats, record, source, reason)


def _looks_binary(head: bytes, charset: str | None = None) -> bool:
    """Whether a body declared as text is binary, judged on its first 4 KB: a file signature (PNG, PDF, ZIP...),
    NUL bytes, or more than 30% control or undecodable bytes; legacy-charset text without a declared charset is
    told apart from binary by charset_normalizer finding an encoding for it."""
    head = head[:_BINARY_SNIFF_BYTES]
    if not head:
        return False
    if head.startswith(_BINARY_SIGNATURES):
        return True
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (charset or "").lower().startswith(("utf-16", "utf-32")):
        return False  # UTF-16/32 text is full of NUL bytes
    if b"\x00" in head:
        return True
    control = len(head.translate(None, _NOT_CONTROL))
    try:
        undecodable = head.decode(charset or "utf-8", errors="replace").count("\ufffd")
    except LookupError:
        undecodable = head.decode("utf-8", errors="replace").count("\ufffd")
    if control + undecodable <= _BINARY_RATIO * len(head):
        return False
    return control > _BINARY_RATIO * len(head) or charset_normalizer.from_bytes(head).best() is None


# --- WARC / WET -----------------------------------------------------------------------------------------------


class _QuietArchiveIterator(ArchiveIterator):
    # warcio writes a warning to stderr when a record is not followed by blank lines (bad Content-Length);
    # we count and quarantine such damage ourselves instead.
    INC_RECORD = ""


def _iter_warc_records(path: str, name: str, doc_type: str, quarantine: Quarantine, stats: Counter, start: int = 0,
                       skip_through: int = -1, stop_after: int | None = None) -> Generator[tuple[Any, int], None,
                                                                                          int | None]:
    """Yield (warcio record, offset) for every readable `doc_type` record of the local file `path`, reported as
    `name`; other types are counted as skipped.

    From offset `start`; records at or before `skip_through` are passed over uncounted (another reader has read
    them); with `stop_after`, the first record past that offset is left unread and its offset returned (None: the
    file ended), so the fast reader can take over from it.

    Damage does not lose the rest of the file: on a record that ends early (warcio stops at a corrupt gzip member
    as if the file ended) or data warcio cannot parse, skip to the next gzip member / WARC header and go on.
    Each damaged stretch is quarantined once and counted as one read record; a damaged `doc_type` record is
    quarantined by the caller, which sees its missing bytes.
    """
    gzipped = _file_name(name).endswith(".gz")
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
                    if stop_after is not None and offset > stop_after:
                        return offset
                    if offset <= skip_through:
                        _drain(record)
                        continue
                    # warcio reads a record without Content-Length to the end of the file (or gzip member),
                    # silently swallowing the records after it; it takes an invalid one as 0 (record.length).
                    length = "" if record.length else record.rec_headers.get_header("Content-Length") or ""
                    if not record.length and not length.strip().isdigit():
                        stats["read"] += 1
                        _quarantine(quarantine, stats, {"file": name, "offset": offset}, name,
                                    f"{name} offset {offset}: broken WARC record header (Content-Length "
                                    f"{length[:40]!r}); skipped to the next record")
                        resume_after = offset
                        break
                    if record.rec_type == doc_type:
                        yield record, offset
                    else:
                        stats[f"skipped_{record.rec_type or 'unknown'}"] += 1
                    missing = _drain(record)
                    if missing:
                        if record.rec_type != doc_type:
                            stats["read"] += 1
                            _quarantine(quarantine, stats, {"file": name, "offset": offset}, name,
                                        f"{name} offset {offset}: {record.rec_type} record truncated, {missing} "
                                        "bytes missing; skipped to the next record")
                        resume_after = offset
                        break
                else:
                    # warcio can also end quietly before the end of the file: a cut gzip member whose stream runs
                    # on into the next member's bytes without a zlib error. What is left is damage, not the end.
                    stopped = getattr(iterator, "offset", None)
                    if stopped is not None and _data_after(path, stopped):
                        stats["read"] += 1
                        _quarantine(quarantine, stats, {"file": name, "offset": stopped}, name,
                                    f"{name} offset {stopped}: unreadable WARC data (the reader stopped before the "
                                    "end of the file); skipped to the next record")
                        resume_after = stopped
            except Exception as err:  # noqa: BLE001 - zlib.error, ArchiveLoadFailed, ValueError...
                raise_if_transient(err, name)  # EIO on a local disk: the bytes may well be fine
                error_offset = max(getattr(iterator, "offset", offset), offset)
                stats["read"] += 1
                _quarantine(quarantine, stats, {"file": name, "offset": error_offset}, name,
                            f"{name} offset {error_offset}: unreadable WARC data "
                            f"({type(err).__name__}: {str(err)[:200]!r}); skipped to the next record")
                resume_after = error_offset
        # Always move forward, even when warcio reports an offset before where this pass started.
        start = None if resume_after is None else _next_record_start(path, max(resume_after, start) + 1, gzipped)
    return None


def _data_after(path: str, offset: int) -> bool:
    """Whether anything but whitespace follows `offset` in the file."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(_RESYNC_CHUNK):
            if chunk.strip():
                return True
    return False


def _drain(record: Any) -> int:
    """Read what the consumer left of a record; return how many bytes of its declared length the file lacked."""
    stream = record.raw_stream
    while stream.read(_READ_CHUNK):
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


def _record_id(record: Any, name: str, offset: int) -> str:
    rid = record.rec_headers.get_header("WARC-Record-ID")
    return rid.strip("<>") if rid else f"{Path(name).name}@{offset}"


def _read_payload(record: Any, max_bytes: int, charset: str | None) -> tuple[str, bytes]:
    """("ok", payload), ("binary", head) or ("too_large", head), reading the payload (chunked/content-encoding
    decoded by warcio) as a stream: a binary body stops after 4 KB, a huge one past `max_bytes`, never all of it."""
    stream = record.content_stream()
    head = stream.read(_BINARY_SNIFF_BYTES)  # warcio's readers return short only at the end of the payload
    if _looks_binary(head, charset):
        return "binary", head
    payload = head + stream.read(max(0, max_bytes + 1 - len(head)))  # at most one byte past the limit in memory
    if len(payload) > max_bytes:
        return "too_large", head
    return "ok", payload


def _missing(record: Any) -> int:
    """How many block bytes the file lacked: the LimitReader left short when the file ends mid-record."""
    return getattr(record.raw_stream, "limit", 0) or 0


def split_content_type(value: str | None) -> tuple[str, str | None]:
    """'text/html; charset="UTF-8"' -> ('text/html', 'utf-8'); the charset is None when not given."""
    if not value:
        return "", None
    mime, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip():
            charset = val.strip().strip("\"'").lower()
    return mime.strip().lower(), charset


def _read_warc(source: str, quarantine: Quarantine, stats: Counter, max_page_bytes: int) -> Iterator[RawDocument]:
    """FastWARC reads the file; each record it cannot vouch for (damage, a header or payload to quarantine, an
    encoded payload) and the rest after its last record go to warcio, whose damage handling and reasons are the
    promises this reader keeps (stats["warcio_fallback_<why>"] counts the hand-overs)."""
    with _local_file(source) as path:
        offset: int | None = 0
        while offset is not None:
            last, handed, why = yield from _fast_pass(path, source, offset, stats, max_page_bytes)
            if why is not None:
                stats["warcio_fallback"] += 1
                stats[f"warcio_fallback_{why}"] += 1
            # warcio: the record handed over, or from the last record read on (damage, or nothing at the end)
            resume = handed if handed is not None else max(last, offset)
            offset = yield from _warcio_pass(path, source, start=resume, skip_through=last, stop_after=resume,
                                             quarantine=quarantine, stats=stats, max_page_bytes=max_page_bytes)


def read_warc_with_warcio(source: str, quarantine: Quarantine, stats: Counter,
                          max_page_bytes: int = MAX_PAGE_BYTES) -> Iterator[RawDocument]:
    """The whole file with warcio alone: what the FastWARC reader must give, record for record (tests, bench)."""
    with _local_file(source) as path:
        yield from _warcio_pass(path, source, 0, -1, None, quarantine, stats, max_page_bytes)


def _warcio_pass(path: str, name: str, start: int, skip_through: int, stop_after: int | None, quarantine: Quarantine,
                 stats: Counter, max_page_bytes: int) -> Generator[RawDocument, None, int | None]:
    """warcio from `start` through the record at `stop_after` (and any damage after it; None: to the end): returns
    where the next record starts, or None at the end of the file."""
    records = _iter_warc_records(path, name, "response", quarantine, stats, start, skip_through, stop_after)
    while True:
        try:
            record, offset = next(records)
        except StopIteration as end:
            return end.value
        stats["read"] += 1
        doc = _response_to_raw(record, name, offset, quarantine, stats, max_page_bytes)
        if doc is not None:
            yield doc


class _HandOver(Exception):
    """A record the fast reader leaves to warcio, and why."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def _fast_pass(path: str, name: str, start: int, stats: Counter,
               max_page_bytes: int) -> Generator[RawDocument, None, tuple[int, int | None, str | None]]:
    """FastWARC from `start` while every record is plainly fine. Returns (offset of the last record it dealt with,
    or -1; offset of the record it handed over, or None when it stopped between records; why it stopped, or None
    when the file ended cleanly)."""
    from fastwarc.warc import ArchiveIterator

    last = -1
    with open(path, "rb") as fh:
        fh.seek(start)
        iterator = iter(ArchiveIterator(fh, parse_http=True, auto_decode="none"))
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                return last, None, None
            except Exception as err:  # noqa: BLE001 - OSError on a corrupt member or header: warcio resyncs
                raise_if_transient(err, name)
                return last, None, "unreadable"
            offset = record.stream_pos
            try:
                doc = _fast_record(record, name, offset, stats, max_page_bytes)
            except _HandOver as handover:
                return last, offset, handover.why
            last = offset
            if doc is not None:
                yield doc


def _fast_record(record: Any, name: str, offset: int, stats: Counter, max_page_bytes: int) -> RawDocument | None:
    """What warcio's path makes of a record (a document, a filtered or skipped count), for records that need none of
    its repairs; _HandOver for anything else, before a count is touched."""
    headers = record.headers
    length = headers.get("Content-Length") or ""
    if not length.strip().isdigit():
        raise _HandOver("record_header")
    rec_type = (headers.get("WARC-Type") or "").strip()  # as warcio names it: skipped_<type> counts agree
    if rec_type != "response":
        if _read_all(record.reader, 0) != record.content_length:
            raise _HandOver("truncated")
        stats[f"skipped_{rec_type or 'unknown'}"] += 1
        return None
    http = record.http_headers
    status_line = (http.status_line or "") if http is not None else ""
    protocol, _, rest = status_line.partition(" ")
    status = rest.split(" ", 1)[0]
    if http is None or not _HTTP_STATUS_LINE.match(protocol) or not re.fullmatch(r"\d{3}", status):
        raise _HandOver("http_header")
    if http.get("Transfer-Encoding") or http.get("Content-Encoding"):
        raise _HandOver("encoded_payload")  # warcio decodes chunked and compressed payloads
    mime, charset = split_content_type(http.get("Content-Type"))
    head = record.reader.read(_BINARY_SNIFF_BYTES)
    keep = status == "200" and mime in TEXT_CONTENT_TYPES and not _looks_binary(head, charset)
    body = head + record.reader.read(max(0, max_page_bytes + 1 - len(head))) if keep else head
    size = _read_all(record.reader, len(body))
    if size != record.content_length:
        raise _HandOver("truncated")
    if status != "200":
        outcome = "filtered_status"
    elif mime not in TEXT_CONTENT_TYPES:
        outcome = "filtered_content_type"
    elif not keep:
        outcome = "filtered_binary"
    elif len(body) > max_page_bytes:
        outcome = "filtered_too_large"
    else:
        outcome = None
    truncated = headers.get("WARC-Truncated")
    declared = (http.get("Content-Length") or "").strip()
    if outcome is None and declared and not truncated and declared.isdigit() and int(declared) != len(body):
        raise _HandOver("http_length")  # warcio's path quarantines it with its reason
    stats["read"] += 1
    if outcome is not None:
        stats[outcome] += 1
        return None
    return _response_document(headers.get, body, mime, charset, int(status), name, offset)


def _read_all(reader: Any, already: int) -> int:
    """`already` plus what is left to read of a FastWARC payload."""
    while chunk := reader.read(_READ_CHUNK):
        already += len(chunk)
    return already


def _response_to_raw(record: Any, name: str, offset: int, quarantine: Quarantine, stats: Counter,
                     max_page_bytes: int) -> RawDocument | None:
    url = record.rec_headers.get_header("WARC-Target-URI") or ""
    where = f"{name} offset {offset} ({url or 'no WARC-Target-URI'})"
    summary = {"file": name, "offset": offset, "url": url,
               "warc_record_id": record.rec_headers.get_header("WARC-Record-ID")}
    http = record.http_headers
    if http is None:
        _quarantine(quarantine, stats, summary, name, f"{where}: response record without an HTTP header block")
        return None
    status = http.get_statuscode() or ""
    if not _HTTP_STATUS_LINE.match(http.protocol or "") or not re.fullmatch(r"\d{3}", status):
        summary["status_line"] = f"{http.protocol} {http.statusline}"
        _quarantine(quarantine, stats, summary, name, f"{where}: unparseable HTTP status line "
                    f"{(http.protocol + ' ' + http.statusline)[:80]!r}")
        return None
    if status != "200":
        stats["filtered_status"] += 1
        return None
    mime, charset = split_content_type(http.get_header("Content-Type"))
    if mime not in TEXT_CONTENT_TYPES:  # a missing Content-Type too: we do not sniff what it might be
        stats["filtered_content_type"] += 1
        return None
    try:
        outcome, payload = _read_payload(record, max_page_bytes, charset)
    except Exception as err:  # noqa: BLE001 - broken chunked encoding, bad gzip content-encoding...
        raise_if_transient(err, name)
        _quarantine(quarantine, stats, summary, name, f"{where}: cannot read payload ({type(err).__name__}: {err})")
        return None
    if outcome != "ok":
        stats[f"filtered_{outcome}"] += 1
        return None
    missing = _missing(record)
    if missing:
        summary["payload_head"] = payload[:200]
        _quarantine(quarantine, stats, summary, name,
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
        _quarantine(quarantine, stats, summary, name, f"{where}: HTTP Content-Length {declared.strip()} but payload "
                    f"has {len(payload)} bytes (truncated or corrupt record)")
        return None
    return _response_document(record.rec_headers.get_header, payload, mime, charset, int(status), name, offset)


def _response_document(header: Callable[[str], str | None], payload: bytes, mime: str, charset: str | None,
                       status: int, name: str, offset: int) -> RawDocument:
    """The RawDocument of a response record read whole, from its WARC headers (`header(name)`, warcio's or
    FastWARC's getter): both readers make the same one."""
    meta = {"warc_date": header("WARC-Date"), "warc_record_id": header("WARC-Record-ID"), "http_status": status,
            "charset": charset, "warc_file": name, "warc_offset": offset}
    if truncated := header("WARC-Truncated"):
        meta["warc_truncated"] = truncated
    rid = header("WARC-Record-ID")
    return RawDocument(id=rid.strip("<>") if rid else f"{Path(name).name}@{offset}",
                       url=header("WARC-Target-URI") or "", content=payload, content_type=mime, source=name,
                       meta=meta)


def _read_wet(source: str, quarantine: Quarantine, stats: Counter, max_page_bytes: int) -> Iterator[RawDocument]:
    with _local_file(source) as path:
        for record, offset in _iter_warc_records(path, source, "conversion", quarantine, stats):
            stats["read"] += 1
            url = record.rec_headers.get_header("WARC-Target-URI") or ""
            where = f"{source} offset {offset} ({url})"
            try:
                outcome, payload = _read_payload(record, max_page_bytes, "utf-8")
            except Exception as err:  # noqa: BLE001
                raise_if_transient(err, source)
                _quarantine(quarantine, stats, {"file": source, "offset": offset, "url": url}, source,
                            f"{where}: cannot read conversion record ({type(err).__name__}: {err})")
                continue
            if outcome != "ok":
                stats[f"filtered_{outcome}"] += 1
                continue
            missing = _missing(record)
            if missing:
                _quarantine(quarantine, stats, {"file": source, "offset": offset, "url": url}, source,
                            f"{where}: record truncated, {missing} bytes missing")
                continue
            meta = {"warc_date": record.rec_headers.get_header("WARC-Date"),
                    "warc_record_id": record.rec_headers.get_header("WARC-Record-ID"),
                    "refers_to": record.rec_headers.get_header("WARC-Refers-To"),
                    "charset": "utf-8", "warc_file": source, "warc_offset": offset}
            yield RawDocument(id=_record_id(record, source, offset), url=url, content=payload,
                              content_type="text/plain", source=source, meta=meta)


# --- already-extracted text: JSONL, parquet, Hugging Face ------------------------------------------------------


def _too_large(text: str, max_bytes: int) -> bool:
    # UTF-8 takes at most 4 bytes a character: most texts are judged without encoding them.
    return len(text) > max_bytes or (len(text) * 4 > max_bytes
                                     and len(text.encode("utf-8", "surrogatepass")) > max_bytes)


def _row_to_raw(row: dict[str, Any], default_id: str, source: str, where: str, quarantine: Quarantine,
                stats: Counter, extra_meta: dict[str, Any], max_bytes: int) -> RawDocument | None:
    """A {"text", "id"?, "url"?, "meta"?} row -> RawDocument (text/plain), or quarantine naming what is wrong."""
    if not isinstance(row, dict):
        _quarantine(quarantine, stats, row, source, f"{where}: expected a JSON object, got {type(row).__name__}")
        return None
    text = row.get("text")
    if not isinstance(text, str):
        reason = "missing 'text'" if text is None else f"'text' must be a string, got {type(text).__name__}"
        _quarantine(quarantine, stats, row, source, f"{where}: {reason}")
        return None
    if _too_large(text, max_bytes):
        stats["filtered_too_large"] += 1
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


def _read_jsonl(source: str, quarantine: Quarantine, stats: Counter, max_page_bytes: int) -> Iterator[RawDocument]:
    with _local_file(source) as path:
        opener = gzip.open if _file_name(source).endswith(".gz") else open
        name = Path(source).name
        with opener(path, "rb") as fh:
            lineno = 0
            while True:
                try:
                    # At most one byte over the limit in memory: a longer line is counted as too large and skipped.
                    raw = fh.readline(max_page_bytes + 1)
                    huge = len(raw) > max_page_bytes and not raw.endswith(b"\n")
                    while huge and (rest := fh.readline(_RESYNC_CHUNK)) and not rest.endswith(b"\n"):
                        pass
                except (OSError, EOFError, zlib.error) as err:  # truncated/corrupt .gz
                    raise_if_transient(err, source)
                    _bad_file(quarantine, stats, source, {"file": source, "after_line": lineno},
                              f"{source} after line {lineno}: unreadable ({type(err).__name__}: {err}); "
                              "rest of file skipped")
                    return
                if not raw:
                    return
                lineno += 1
                if huge:
                    stats["read"] += 1
                    stats["filtered_too_large"] += 1
                    continue
                if not raw.strip():
                    continue  # blank lines are not records
                stats["read"] += 1
                where = f"{source} line {lineno}"
                try:
                    row = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    _quarantine(quarantine, stats, raw, source, f"{where}: invalid JSON ({err})")
                    continue
                doc = _row_to_raw(row, f"{name}:{lineno}", source, where, quarantine, stats, {"line": lineno},
                                  max_page_bytes)
                if doc is not None:
                    yield doc


def _read_parquet(source: str, quarantine: Quarantine, stats: Counter, max_page_bytes: int) -> Iterator[RawDocument]:
    import pyarrow.parquet as pq

    with _local_file(source) as path:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if "text" not in names:
            raise ValueError(f"{source}: parquet input needs a 'text' column; it has {names}")
        columns = [c for c in ("id", "url", "text", "source", "meta") if c in names]
        name = Path(source).name
        row_index = 0
        for batch in pf.iter_batches(batch_size=1_024, columns=columns):
            for row in batch.to_pylist():
                stats["read"] += 1
                doc = _row_to_raw(row, f"{name}:{row_index}", source, f"{source} row {row_index}", quarantine,
                                  stats, {"row": row_index}, max_page_bytes)
                row_index += 1
                if doc is not None:
                    yield doc


def parse_hf_spec(source: str) -> tuple[str, str | None, str]:
    """"hf:NAME[@REVISION][:CONFIG][:SPLIT]" -> (name, config or None, split; default "train"); hf_revision() gives
    the revision."""
    parts = source[len("hf:"):].split(":")
    name = parts[0].partition("@")[0]
    if not name or len(parts) > 3:
        raise ValueError(f"source {source!r}: expected hf:NAME[@REVISION][:CONFIG][:SPLIT]")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


def hf_revision(source: str) -> str | None:
    """The revision (branch, tag or commit) an "hf:NAME@REVISION..." spec pins, or None when it pins none."""
    parse_hf_spec(source)
    return source[len("hf:"):].split(":")[0].partition("@")[2] or None


def _is_commit(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}", value) is not None


def _read_hf(source: str, quarantine: Quarantine, stats: Counter, max_page_bytes: int) -> Iterator[RawDocument]:
    from datasets import load_dataset_builder  # imported here: slow to import, and only this source kind needs it

    name, config, split = parse_hf_spec(source)
    # What load_dataset(..., streaming=True) does, keeping the builder: its hash is the commit the Hub resolved the
    # revision (or the main branch) to, so every document says which version of the dataset it was read from.
    builder = load_dataset_builder(name, config, revision=hf_revision(source))
    dataset = builder.as_streaming_dataset(split=split)
    revision = {"hf_revision": builder.hash} if _is_commit(builder.hash) else {}  # a local folder has no commit
    for i, row in enumerate(dataset):
        stats["read"] += 1
        doc = _row_to_raw(row, f"{name}:{split}:{i}", source, f"{source} row {i}", quarantine, stats,
                          {"row": i, **revision}, max_page_bytes)
        if doc is not None:
            yield doc
