"""Stage `train_tokenizer`: byte-level BPE (HF tokenizers, GPT-4's split) on a sample of the train documents taken
evenly from every shard, with the chat/tool specials at fixed ids; reports bytes per token on the whole val split."""

from __future__ import annotations

from pydantic import Field

from data.tokens.bpe_sample import compression, first_text, sample_texts
from model.tokenizer import SPECIAL_TOKENS, train_bpe
from tasks.core.config import Section
from tasks.core.stage import StageRun, stage


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
    example = first_text(val_files)[:200] or "The quick brown fox."
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
