"""Tokens/s of the tokenize stage's path against tiktoken loaded with the same merges, in the same run.

Text: the plain-text pydoc pages of ~150 installed standard-library modules (English prose and code, like the sample
crawl), a byte-level BPE trained on them with model.tokenizer.train_bpe (vocab --vocab). Baseline:
tiktoken.Encoding(same split pattern, same merges).encode_ordinary_batch(texts, num_threads=cores). Ours: what
tasks/tokenize.py does per batch of documents, Tokenizer.encode_batch and TokenShardWriter.add_documents (bos before
each document, uint16 shards written to a temp dir). Both produce the same ids (checked).

Usage: python bench/tokenize.py [--rounds 3] [--vocab 4096]. Last line: `ratio: X.XX` (ours / baseline).
"""
from __future__ import annotations

import os
import sys

# this file's name is also the standard library's `tokenize`: run as a script, keep its folder off the import path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import pkgutil  # noqa: E402
import pydoc  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

from data.shards import TokenShardWriter  # noqa: E402
from model.tokenizer import train_bpe  # noqa: E402


def corpus(limit: int = 150) -> list[str]:
    texts = []
    for name in sorted(sys.stdlib_module_names):
        if len(texts) >= limit or name.startswith("_") or name in ("antigravity", "this", "idlelib", "tkinter"):
            continue
        if pkgutil.find_loader(name) is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                texts.append(pydoc.render_doc(__import__(name), renderer=pydoc.plaintext))
        except Exception:  # a module that cannot import here (platform-specific): skip it
            continue
    return texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()
    texts = corpus()
    tok = train_bpe(texts, args.vocab)
    fast = tok.fast_encoding()
    if fast is None:
        raise SystemExit("tiktoken is not installed or does not reproduce this tokenizer")
    cores = os.cpu_count() or 1
    n_bytes = sum(len(t.encode()) for t in texts)
    print(f"{len(texts)} documents, {n_bytes / 1e6:.1f} MB, vocab {tok.vocab_size}, {cores} cores")

    def baseline() -> int:
        return sum(len(ids) + 1 for ids in fast.encode_ordinary_batch(texts, num_threads=cores))

    def ours() -> int:
        with tempfile.TemporaryDirectory() as out:
            writer = TokenShardWriter(out, "train", tok.vocab_size)
            n = sum(writer.add_documents(tok.encode_batch(texts[i:i + 1024]), tok.bos_id)
                    for i in range(0, len(texts), 1024))
            writer.close()
            return n

    assert ours() == baseline()  # the same token count (the ids are checked by tests/model/test_tokenizer.py)
    base, mine = [], []
    for r in range(args.rounds):
        for fn, rates in ((baseline, base), (ours, mine)) if r % 2 == 0 else ((ours, mine), (baseline, base)):
            start = time.perf_counter()
            n = fn()
            rates.append(n / (time.perf_counter() - start))
        print(f"round {r}: tiktoken {base[-1]:,.0f} tok/s | ours {mine[-1]:,.0f} tok/s")
    print(f"ratio: {statistics.median(mine) / statistics.median(base):.2f}")


if __name__ == "__main__":
    main()
