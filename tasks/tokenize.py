"""Stage `tokenize`: documents -> flat uint16/uint32 token shards (bos before every document), train and val."""

from __future__ import annotations

from itertools import islice

from data.documents import read_documents
from data.shards import TokenShardWriter
from model.tokenizer import Tokenizer
from tasks.stage import StageRun, stage


def _batched(iterable, n: int):
    it = iter(iterable)
    while batch := list(islice(it, n)):
        yield batch


@stage("tokenize", inputs=("preprocess", "train_tokenizer"), main_metric="tokens_train", version="2")
def tokenize(s: StageRun) -> dict:
    tok = Tokenizer.from_file(s.inputs["train_tokenizer"].path / "tokenizer.json")
    docs = s.inputs["preprocess"].path / "documents"
    counts = {}
    for split in ("train", "val"):
        writer = TokenShardWriter(s.out / "shards", split, tok.vocab_size, s.cfg.tokenize.tokens_per_shard)
        n_docs = n_tokens = 0
        for batch in _batched(read_documents(sorted(docs.glob(f"{split}-*.parquet"))), 1024):
            n_tokens += writer.add_documents(tok.encode_batch([d["text"] for d in batch]), tok.bos_id)
            n_docs += len(batch)
        shards = writer.close()
        counts.update({f"docs_{split}": n_docs, f"tokens_{split}": n_tokens, f"shards_{split}": len(shards)})
    return {"counts": counts, "metrics": {"tokens_train": counts["tokens_train"], "tokens_val": counts["tokens_val"]}}
