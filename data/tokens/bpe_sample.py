"""What the BPE tokenizer learns from and how it is measured: a uniform sample of the train documents over every
shard (by a hash of their ids, so it does not depend on the sharding), and bytes per token over a whole split."""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from data.tokens.documents import document_batches
from model.tokenizer import Tokenizer


@dataclass
class Sample:
    texts: list[str]
    chars: int
    shards: int  # how many of the shards it drew from
    docs_seen: int


def _rank(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")


def sample_texts(files: Sequence[Path], max_chars: int) -> Sample:
    """The documents whose ids hash lowest, just enough of them to reach `max_chars` characters (all of them when
    there are fewer): a uniform sample over every shard, in one pass, that depends on the documents and not on how
    they are sharded. A document's text is read into Python only while it can still enter the sample."""
    heap: list[tuple[int, int, int, str]] = []  # (-rank, -order, shard, text): the highest rank on top
    total = order = 0
    for shard, path in enumerate(files):
        for batch in document_batches(path, ["id", "text"], 4096):
            ranks = [_rank(i) for i in batch.column(0).to_pylist()]
            bar = -heap[0][0] if heap and total >= max_chars else None  # only falls as documents come in
            keep = [k for k, r in enumerate(ranks) if bar is None or r < bar]
            texts = batch.column(1).take(pa.array(keep, pa.int64())).to_pylist() if keep else []
            for k, text in zip(keep, texts, strict=True):
                if heap and total >= max_chars and ranks[k] >= -heap[0][0]:
                    continue
                heapq.heappush(heap, (-ranks[k], -(order + k), shard, text))
                total += len(text)
                while heap and total - len(heap[0][3]) >= max_chars:  # the top is not needed to reach max_chars
                    total -= len(heapq.heappop(heap)[3])
            order += len(ranks)
    kept = sorted(heap, reverse=True)  # lowest rank first: the same order whatever the shards
    return Sample([t for *_, t in kept], total, len({s for _, _, s, _ in kept}), order)


def first_text(files: Sequence[Path]) -> str:
    """The first document's text (a passage to show how the tokenizer splits text)."""
    for path in files:
        for batch in document_batches(path, ["text"], 1):
            if batch.num_rows:
                return batch.column(0)[0].as_py()
    return ""


def compression(tok: Tokenizer, files: Sequence[Path]) -> tuple[int, int]:
    """(UTF-8 bytes, tokens) over every document in `files`: bytes per token is how much text one token carries."""
    n_bytes = n_tokens = 0
    for path in files:
        for batch in document_batches(path, ["text"], 1024):
            n_bytes += pc.sum(pc.binary_length(batch.column(0))).as_py() or 0
            n_tokens += sum(map(len, tok.encode_batch(batch.column(0).to_pylist())))
    return n_bytes, n_tokens
