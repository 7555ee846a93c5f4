"""Fingerprints of a stage's inputs outside the artifact store (crawl sources, a labeling inbox, a checkpoint).

A local file is fingerprinted by its content (BLAKE2b, streamed), so touching or copying it changes nothing and an edit
that keeps its size and mtime is still seen. A file over HASH_LIMIT_BYTES would cost seconds to hash each time a key is
computed (every `factory status`), so it is fingerprinted by size, nanosecond mtime and inode instead; each entry says
which way it was done, for the manifest. A URL is fingerprinted by the URL string; an "hf:" spec by the revision it
pins, or as unpinned; a path that matches nothing by its name, so that it appearing later changes the key.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

HASH_LIMIT_BYTES = 256 * 2**20
HASH = "blake2b"
_CHUNK = 1 << 20
# Content hashes already computed in this process (a key is computed several times a run), by a stat that changes
# with any write: ctime moves on every write and on os.utime too, so a file edited and given its old mtime back is
# hashed again. Timestamps tick coarsely (a few ms), so as in git's "racy" check a file changed in the last second is
# not remembered: an edit within the same tick would leave its stat as it was.
_HASHED: dict[tuple, str] = {}
_RACY_NS = 1_000_000_000


def _content_hash(path: Path, st: os.stat_result) -> str:
    memo = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo in _HASHED:
        return _HASHED[memo]
    settled = st.st_ctime_ns < time.time_ns() - _RACY_NS
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    if settled:
        _HASHED[memo] = h.hexdigest()
    return h.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    st = path.stat()
    if st.st_size <= HASH_LIMIT_BYTES:
        return {"path": str(path), "bytes": st.st_size, "by": "content", HASH: _content_hash(path, st)}
    return {"path": str(path), "bytes": st.st_size, "by": "stat", "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _is_hf_spec(source: str) -> bool:
    return source.startswith("hf:") and not source.startswith("hf://")


def describe(sources: list[str]) -> dict[str, Any]:
    """{"key": a short hash of all entries, "hash", "hash_limit_bytes", "entries": [...]}, one entry per local file
    ({"path", "bytes", "by": "content", "blake2b"} or {"path", "bytes", "by": "stat", "mtime_ns", "inode"}), per URL
    ({"source", "by": "url"}), per "hf:" spec ({"source", "by": "hf_revision", "revision": pinned or None}, plus its
    files when it names a local folder) and per path matching nothing ({"source", "by": "name"}). Directories stand
    for every file under them."""
    entries: list[dict[str, Any]] = []
    for source in sources:
        if _is_hf_spec(source):
            from data.sources.readers import hf_revision  # here: the readers import warcio, most stages never need it

            entries.append({"source": source, "by": "hf_revision", "revision": hf_revision(source)})
            folder = Path(source[len("hf:"):].split(":")[0].partition("@")[0]).expanduser()
            if folder.is_dir():  # a local dataset folder (datasets reads those too): its files are inputs like any
                entries.extend(_file_entry(f) for f in sorted(folder.rglob("*")) if f.is_file())
            continue
        if "://" in source and not source.lower().startswith("file://"):
            entries.append({"source": source, "by": "url"})
            continue
        pattern = os.path.expanduser(source[len("file://"):] if source.lower().startswith("file://") else source)
        matches = sorted(glob.glob(pattern, recursive=True))
        for match in matches:
            files = sorted(Path(match).rglob("*")) if Path(match).is_dir() else [Path(match)]
            entries.extend(_file_entry(f) for f in files if f.is_file())
        if not matches:
            entries.append({"source": source, "by": "name"})
    key = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:12]
    return {"key": key, "hash": HASH, "hash_limit_bytes": HASH_LIMIT_BYTES, "entries": entries}


def fingerprint(sources: list[str]) -> str:
    """A short hash that changes when a local file's content (by stat, over HASH_LIMIT_BYTES), a URL, an "hf:" spec's
    pinned revision or the set of files a pattern matches changes: new or changed inputs give a new stage key."""
    return describe(sources)["key"]
