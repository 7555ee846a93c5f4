"""A BM25 index over passages of documents (bm25s): what the assistant's search tool looks things up in.

Each document is cut into passages of about `passage_words` words that overlap by `overlap_words` (the first starts
at the document's beginning), so a result is short enough for a small model's context and still whole. A passage is
indexed with its document's title in front, so a query naming a page finds it. Queries and passages are lower-cased
and lose English stopwords (bm25s.tokenize); a result is the best passage of each page, best first.

On disk an index is a folder: `documents.jsonl` (url, title of each document), `passages.jsonl` (document number,
text), `bm25/` (bm25s' arrays and vocabulary) and `index.json`, written last. `save` writes all of it into a temp folder
and renames that into place, so a folder that loads is always a whole index.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from model.files import replace_dir

FORMAT = "factory-search-index/1"
# ~40 words is ~60-100 tokens of crawl text: one passage, the question and the answer fit a 256-token context
PASSAGE_WORDS, OVERLAP_WORDS = 40, 8
META = "index.json"
# Extensions dropped from the last path segment of a URL or file name to make a title.
_PAGE_SUFFIXES = (".html", ".htm", ".md", ".txt", ".jsonl", ".php", ".asp", ".aspx", ".rst")


@dataclass(frozen=True)
class Passage:
    url: str
    title: str
    text: str
    score: float


class NotAnIndex(ValueError):
    """A folder that holds no complete search index."""


def title_from_url(url: str) -> str:
    """The last segment of a URL's (or a relative path's) path, less a page extension:
    https://docs.python.org/3/library/json.html -> "json"; notes/rivers.md -> "rivers"; a bare site -> its host."""
    parts = urlsplit(url)
    segment = parts.path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in _PAGE_SUFFIXES:
        if segment.lower().endswith(suffix) and len(segment) > len(suffix):
            segment = segment[: -len(suffix)]
            break
    return segment or parts.netloc or url


def split_passages(text: str, passage_words: int = PASSAGE_WORDS, overlap_words: int = OVERLAP_WORDS) -> list[str]:
    """`text` as passages of `passage_words` words (whitespace-separated), each starting `passage_words -
    overlap_words` words after the one before: the first at the first word, the last reaching the last word."""
    if passage_words < 1 or not 0 <= overlap_words < passage_words:
        raise ValueError(f"passages need passage_words >= 1 and 0 <= overlap_words < passage_words, "
                         f"got {passage_words} and {overlap_words}")
    words = text.split()
    stride = passage_words - overlap_words
    # a passage starting after len - overlap would hold only words the one before already has
    return [" ".join(words[start:start + passage_words])
            for start in range(0, max(1, len(words) - overlap_words), stride) if words]


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased words of two or more letters or digits, English stopwords removed (bm25s' tokenizer)."""
    return _bm25s().tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


@dataclass
class SearchIndex:
    """Passages of documents and their BM25 index. Build one with `build` or `from_folder`; `save`/`load` it."""

    urls: list[str]
    titles: list[str]
    passage_doc: np.ndarray  # the document number of each passage
    passage_text: list[str]
    bm25: Any  # bm25s.BM25
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, why it is not in the index)

    @classmethod
    def build(cls, docs: Iterable[Mapping[str, Any]], passage_words: int = PASSAGE_WORDS,
              overlap_words: int = OVERLAP_WORDS) -> SearchIndex:
        """An index of `docs` ({"url", "text", optional "title", optional "id"}), in their order: the same documents
        give the same index and the same results. A document without words is listed in `skipped`."""
        split_passages("", passage_words, overlap_words)  # checks the sizes before reading anything
        urls: list[str] = []
        titles: list[str] = []
        owners: list[int] = []
        texts: list[str] = []
        skipped: list[tuple[str, str]] = []
        for n, doc in enumerate(docs):
            url = str(doc.get("url") or doc.get("id") or f"document {n}")
            passages = split_passages(str(doc.get("text") or ""), passage_words, overlap_words)
            if not passages:
                skipped.append((url, "no text"))
                continue
            owners += [len(urls)] * len(passages)
            texts += passages
            titles.append(str(doc.get("title") or "").strip() or title_from_url(url))
            urls.append(url)
        bm25 = _bm25([f"{titles[d]} {t}" for d, t in zip(owners, texts, strict=True)])
        settings = {"passage_words": passage_words, "overlap_words": overlap_words}
        return cls(urls, titles, np.asarray(owners, dtype=np.int64), texts, bm25, settings, skipped)

    @classmethod
    def from_folder(cls, folder: Path | str, **kw: Any) -> SearchIndex:
        """An index of a user's own files under `folder` (.txt, .md, .html/.htm, .jsonl; see data/search/files.py);
        the files and records it could not read are listed in `skipped`."""
        from data.search.files import read_folder

        skipped: list[tuple[str, str]] = []
        index = cls.build(read_folder(Path(folder), skipped), **kw)
        index.skipped = skipped + index.skipped
        return index

    @property
    def documents(self) -> int:
        return len(self.urls)

    def __len__(self) -> int:
        return len(self.passage_text)

    def search(self, query: str, k: int = 2) -> list[Passage]:
        """The best passage of each of the `k` pages that match `query` best, best first; [] when no word of the query
        (stopwords aside) is in the index. Equal scores keep the passages' order, so results never vary."""
        if self.bm25 is None or not query or not query.strip() or k < 1:
            return []
        (words,) = tokenize([query])
        ids = [i for i in self.bm25.get_tokens_ids(words) if i != self.bm25.vocab_dict.get("")]
        if not ids:
            return []
        scores = self.bm25.get_scores_from_ids(ids)
        found: list[Passage] = []
        seen: set[int] = set()
        for i in np.argsort(-scores, kind="stable"):
            if scores[i] <= 0:
                break
            doc = int(self.passage_doc[i])
            if doc in seen:  # one passage per page: the best one
                continue
            seen.add(doc)
            found.append(Passage(self.urls[doc], self.titles[doc], self.passage_text[i], float(scores[i])))
            if len(found) == k:
                break
        return found

    # ------------------------------------------------------------------------------------------------- on disk

    def save(self, folder: Path | str) -> None:
        """Write the index to `folder` (replacing one there) through a temp folder beside it, renamed into place only
        when complete; `index.json` is written last, so even the temp folder never loads."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            _write_jsonl(tmp / "documents.jsonl", ({"url": u, "title": t} for u, t in zip(self.urls, self.titles,
                                                                                         strict=True)))
            _write_jsonl(tmp / "passages.jsonl", ({"doc": int(d), "text": t}
                                                  for d, t in zip(self.passage_doc, self.passage_text, strict=True)))
            if self.bm25 is not None:
                self.bm25.save(str(tmp / "bm25"), show_progress=False)
            meta = {"format": FORMAT, "documents": self.documents, "passages": len(self), **self.settings}
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes an owner-only folder; an index is meant to be shared
            replace_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, folder: Path | str) -> SearchIndex:
        folder = Path(folder)
        meta_path = folder / META
        if not meta_path.is_file():
            what = "does not exist" if not folder.exists() else f"has no {META}"
            raise NotAnIndex(f"{folder} is not a search index: it {what} (build one with the `index` stage or "
                             "SearchIndex.build(...).save(folder))")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise NotAnIndex(f"{meta_path}: not JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise NotAnIndex(f"{folder} is not a search index of format {FORMAT!r} (its {META} says {found!r})")
        docs = list(_read_jsonl(folder / "documents.jsonl"))
        passages = list(_read_jsonl(folder / "passages.jsonl"))
        if (len(docs), len(passages)) != (meta["documents"], meta["passages"]):
            raise NotAnIndex(f"{folder}: {len(docs)} documents and {len(passages)} passages on disk, "
                             f"{META} says {meta['documents']} and {meta['passages']}")
        bm25 = None
        if passages:
            bm25 = _bm25s().BM25.load(str(folder / "bm25"), show_progress=False)
        settings = {k: v for k, v in meta.items() if k not in ("format", "documents", "passages")}
        return cls([d["url"] for d in docs], [d["title"] for d in docs],
                   np.asarray([p["doc"] for p in passages], dtype=np.int64), [p["text"] for p in passages], bm25,
                   settings)


def _bm25(texts: list[str]) -> Any:
    """bm25s' BM25 (Lucene's scoring) over `texts`; None for no texts, which nothing matches."""
    if not texts:
        return None
    bm25s = _bm25s()
    retriever = bm25s.BM25()
    # ids in order of first appearance: the vocabulary, and so the saved files, are the same on every build
    retriever.index(bm25s.tokenize(texts, stopwords="en", return_ids=True, show_progress=False), show_progress=False)
    return retriever


def _bm25s() -> Any:
    import bm25s

    # bm25s sets its logger to DEBUG on import and logs each step of a build; the stage reports what matters
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise NotAnIndex(f"{path.parent} is not a whole search index: {path.name} is missing")
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
