"""Stage `train_tokenizer`: byte-level BPE (HF tokenizers, GPT-4's split) on a sample of the train documents taken
evenly from every shard, with the chat/tool specials at fixed ids; reports bytes per token on the whole val split."""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from data.tokens.documents import document_batches
from model.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe
from tasks.core.config import Section
from tasks.core.stage import StageRun, stage


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


def _first_text(files: Sequence[Path]) -> str:
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


class TokenizerConfig(Section):
    """The byte-level BPE tokenizer: its size and how much text it learns from."""

    vocab_size: int = Field(4096, ge=300, description="Tokens, special tokens included (uint16 shards below 65,536).")
    min_frequency: int = Field(2, ge=1, description="A pair seen fewer times is never merged.")
    max_train_chars: int = Field(20_000_000, ge=1, description="Characters of train text sampled from all shards.")


@stage("train_tokenizer", cycle="yearly", inputs=("preprocess",), config={"tokenizer": TokenizerConfig},
       main_metric="bytes_per_token")
def train_tokenizer(s: StageRun) -> dict:
    cfg = s.cfg.tokenizer
    docs = s.inputs["preprocess"].path / "documents"
    train_files, val_files = sorted(docs.glob("train-*.parquet")), sorted(docs.glob("val-*.parquet"))
    sample = sample_texts(train_files, cfg.max_train_chars)
    s.log.info(f"train_tokenizer: BPE on {len(sample.texts):,} of {sample.docs_seen:,} train documents "
               f"({sample.chars:,} chars) from {sample.shards} of {len(train_files)} shards")
    tok = train_bpe(sample.texts, cfg.vocab_size, cfg.min_frequency)
    tok.save(s.out / "tokenizer.json")
    n_bytes, n_tokens = compression(tok, val_files)
    metrics = {"vocab_size": tok.vocab_size, "bytes_per_token": n_bytes / max(1, n_tokens)}
    example = _first_text(val_files)[:200] or "The quick brown fox."
    pieces = [tok.decode([i]).replace("\n", "⏎").replace("`", "'") for i in tok.encode(example)]
    s.markdown(
        "report",
        f"**vocab** {tok.vocab_size} (incl. {len(SPECIAL_TOKENS)} special tokens), "
        f"**{metrics['bytes_per_token']:.2f} bytes/token** on the {n_bytes:,} bytes of the val split\n\n"
        f"Trained on {len(sample.texts):,} of {sample.docs_seen:,} train documents ({sample.chars:,} characters), "
        f"drawn from {sample.shards} of {len(train_files)} shards\n\n"
        f"How a held-out passage splits ({len(pieces)} tokens):\n\n`{' | '.join(pieces)}`\n",
    )
    s.log.info(f"train_tokenizer: vocab {tok.vocab_size}, {metrics['bytes_per_token']:.2f} bytes/token on val")
    counts = {"val_bytes": n_bytes, "val_tokens": n_tokens, "sample_docs": len(sample.texts),
              "sample_chars": sample.chars, "sample_shards": sample.shards, "train_shards": len(train_files)}
    return {"counts": counts, "metrics": metrics}
