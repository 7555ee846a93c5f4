"""Stage `train_tokenizer`: byte-level BPE (HF tokenizers) on the train documents, with the chat/tool specials."""

from __future__ import annotations

from data.documents import read_documents
from model.tokenizer import SPECIAL_TOKENS, train_bpe
from tasks.stage import StageRun, stage


def _texts(files, max_chars: int):
    total = 0
    for doc in read_documents(files):
        if total >= max_chars:
            return
        total += len(doc["text"])
        yield doc["text"]


@stage("train_tokenizer", inputs=("preprocess",), sections=("tokenizer",), main_metric="bytes_per_token")
def train_tokenizer(s: StageRun) -> dict:
    cfg = s.cfg.tokenizer
    docs = s.inputs["preprocess"].path / "documents"
    tok = train_bpe(
        _texts(sorted(docs.glob("train-*.parquet")), cfg.max_train_chars), cfg.vocab_size, cfg.min_frequency
    )
    tok.save(s.out / "tokenizer.json")
    # Compression on held-out text: how many UTF-8 bytes one token carries.
    val_texts = list(_texts(sorted(docs.glob("val-*.parquet")), 2_000_000))
    n_bytes = sum(len(t.encode()) for t in val_texts)
    n_tokens = sum(len(ids) for ids in tok.encode_batch(val_texts))
    metrics = {"vocab_size": tok.vocab_size, "bytes_per_token": n_bytes / max(1, n_tokens)}
    example = val_texts[0][:200] if val_texts else "The quick brown fox."
    pieces = [tok.decode([i]).replace("\n", "⏎").replace("`", "'") for i in tok.encode(example)]
    s.markdown(
        "report",
        f"**vocab** {tok.vocab_size} (incl. {len(SPECIAL_TOKENS)} special tokens), "
        f"**{metrics['bytes_per_token']:.2f} bytes/token** on {n_bytes:,} held-out bytes\n\n"
        f"How a held-out passage splits ({len(pieces)} tokens):\n\n`{' | '.join(pieces)}`\n",
    )
    s.log.info(f"train_tokenizer: vocab {tok.vocab_size}, {metrics['bytes_per_token']:.2f} bytes/token on val")
    return {"counts": {"val_bytes": n_bytes, "val_tokens": n_tokens}, "metrics": metrics}
