"""Stage `index`: a BM25 index of the kept documents' passages (data/search), for the assistant's search tool.

The index covers every document preprocess kept, train and val, and lies in `<artifact>/index/`: load it with
`data.search.SearchIndex.load`, or give that folder to `model.tools.make_toolbox`.

Retrieval is measured on a sample of the indexed documents drawn by a hash of their ids (the same sample whatever the
sharding): `title_recall_at_k` is the share whose own page is among the top `eval_k` results for the page's title
(what the model would search for a named page), `snippet_recall_at_k` the same for `snippet_words` consecutive words
taken from the middle of the page (a search for something the page says)."""

from __future__ import annotations

import hashlib
import time

from pydantic import Field, model_validator

from data.search.index import OVERLAP_WORDS, PASSAGE_WORDS
from model.tools import SEARCH_K
from tasks.core.config import Section
from tasks.core.stage import StageRun, stage

SAMPLE_ROWS = 20  # queries shown in the report's table


class IndexConfig(Section):
    """The search index over the crawl: passage size and how retrieval is measured."""

    passage_words: int = Field(PASSAGE_WORDS, ge=5, description="Words per passage; the tool returns whole passages "
                               "(the label generator's search conversations use the default).")
    overlap_words: int = Field(OVERLAP_WORDS, ge=0, description="Words a passage shares with the one before it.")
    eval_queries: int = Field(200, ge=0, description="Documents sampled to measure retrieval (0: no measure).")
    eval_k: int = Field(SEARCH_K, ge=1, le=20, description="Results a query may look at (as many as the search tool "
                        "returns by default: tools.search_k).")
    snippet_words: int = Field(8, ge=1, description="Words of a document's middle that make its snippet query.")
    seed: int = Field(0, description="Picks the documents sampled for the measure.")

    @model_validator(mode="after")
    def _overlap_below_passage(self) -> IndexConfig:
        if self.overlap_words >= self.passage_words:
            raise ValueError(f"overlap_words ({self.overlap_words}) must be below passage_words ({self.passage_words})")
        return self


@stage("index", cycle="yearly", inputs=("preprocess",), config={"index": IndexConfig},
       main_metric="title_recall_at_k")
def index(s: StageRun) -> dict:
    from data.search import SearchIndex, title_from_url
    from data.tokens.documents import read_documents

    cfg = s.cfg.index
    files = sorted((s.inputs["preprocess"].path / "documents").glob("*.parquet"))
    docs = [{"id": d["id"], "url": d["url"] or d["id"], "text": d["text"]}
            for d in read_documents(files, columns=["id", "url", "text"])]
    start = time.perf_counter()
    built = SearchIndex.build(docs, cfg.passage_words, cfg.overlap_words)
    built.save(s.out / "index")
    seconds = time.perf_counter() - start
    s.log.info(f"index: {len(built):,} passages of {built.documents:,} documents from {len(files)} shards "
               f"in {seconds:.1f} s")

    sample = sorted(docs, key=lambda d: _rank(cfg.seed, d["id"]))[: cfg.eval_queries]
    rows, title_hits, snippet_hits = [], 0, 0
    for doc in sample:
        title = title_from_url(doc["url"])
        found = [p.url for p in built.search(title, cfg.eval_k)]
        snippet = _snippet(doc["text"], cfg.snippet_words)
        title_hits += doc["url"] in found
        snippet_hits += doc["url"] in [p.url for p in built.search(snippet, cfg.eval_k)]
        rows.append({"query": title, "page": doc["url"], "found": doc["url"] in found, "results": " ".join(found)})
    n = len(sample)
    metrics = {"title_recall_at_k": title_hits / n if n else 0.0, "snippet_recall_at_k": snippet_hits / n if n else 0.0,
               "documents": built.documents, "passages": len(built), "seconds": round(seconds, 2)}
    counts = {"documents": built.documents, "passages": len(built), "skipped": len(built.skipped),
              "read": len(docs), "eval_queries": n, "eval_k": cfg.eval_k, "shards": len(files)}
    s.table("queries", rows[:SAMPLE_ROWS],
            f"index: title queries for sampled pages and their top {cfg.eval_k} results")
    s.markdown("report", (
        f"**{built.documents:,} documents**, {len(built):,} passages of {cfg.passage_words} words "
        f"(overlap {cfg.overlap_words}) in {seconds:.1f} s\n\n"
        f"On {n} sampled pages, the page is in the top {cfg.eval_k} results for its title "
        f"**{metrics['title_recall_at_k']:.1%}** of the time, and for {cfg.snippet_words} words from its middle "
        f"**{metrics['snippet_recall_at_k']:.1%}**\n"))
    s.log.info(f"index: title recall@{cfg.eval_k} {metrics['title_recall_at_k']:.3f}, "
               f"snippet recall@{cfg.eval_k} {metrics['snippet_recall_at_k']:.3f} on {n} pages")
    return {"counts": counts, "metrics": metrics, "info": {"skipped": built.skipped[:20]}}


def _rank(seed: int, doc_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()


def _snippet(text: str, words: int) -> str:
    """`words` consecutive words from the middle of `text`."""
    split = text.split()
    start = max(0, len(split) // 2 - words // 2)
    return " ".join(split[start:start + words])
