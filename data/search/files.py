"""A user's own files as documents for the search index: .txt and .md as they are, .html/.htm through the crawl's
extraction (data/cleaning/extract.py), .jsonl as one document per {"text", "url"?, "title"?} line.

A document's url is the file's path relative to the folder (a .jsonl line without a url: `path#line`). What cannot be
read (another kind of file, a binary file, a page with no text, a bad line) is listed as (path, reason); hidden files
and folders (a name starting with '.') are left alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm")
JSONL_SUFFIXES = (".jsonl",)
SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + JSONL_SUFFIXES


def read_folder(folder: Path, skipped: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    """The documents in the files under `folder`, in path order; appends what it cannot read to `skipped`."""
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of files to index")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            skipped.append((rel, f"not a {', '.join(SUFFIXES)} file"))
            continue
        try:
            content = path.read_bytes()
        except OSError as exc:
            skipped.append((rel, f"cannot read it: {exc.strerror or exc}"))
            continue
        if b"\x00" in content[:8192]:
            skipped.append((rel, "binary, not text"))
            continue
        if suffix in JSONL_SUFFIXES:
            yield from _jsonl_documents(rel, content, skipped)
            continue
        text = _text(content, html=suffix in HTML_SUFFIXES, url=rel)
        if text:
            yield {"url": rel, "text": text}
        else:
            skipped.append((rel, "no text in it"))


def _text(content: bytes, html: bool, url: str) -> str | None:
    from data.cleaning.extract import ExtractOptions, decode, html_to_text

    if html:  # a user's pages are their content, not a crawl's boilerplate to cut: the whole page
        return html_to_text(content, url=url, options=ExtractOptions(main_content=False))
    return decode(content).strip() or None


def _jsonl_documents(rel: str, content: bytes, skipped: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    from data.cleaning.extract import decode

    for n, line in enumerate(decode(content).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{rel}:{n}"
        try:
            record = json.loads(line)
        except ValueError:
            skipped.append((where, "not JSON"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
            skipped.append((where, 'not a {"text": "..."} object with text'))
            continue
        url = record.get("url") if isinstance(record.get("url"), str) and record["url"].strip() else f"{rel}#{n}"
        doc = {"url": url, "text": record["text"]}
        if isinstance(record.get("title"), str):
            doc["title"] = record["title"]
        yield doc
