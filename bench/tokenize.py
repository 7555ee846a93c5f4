"""Tokens/s of the tokenize stage against tiktoken loaded with the same merges, in the same run.

Text: the plain-text pydoc pages of ~150 installed standard-library modules (English prose and code, like the sample
crawl), --repeat times over, and a byte-level BPE trained on one copy with model.tokenizer.train_bpe (vocab --vocab).
The stage runs on whole crawls, where starting its worker processes (~0.4 s on 2 cores: Python, numpy, pyarrow, the
tokenizer) is a small part of the time; one copy (3 MB) takes tiktoken ~0.2 s, so with --repeat 1 the start-up is
most of what is measured.

Baseline: tiktoken.Encoding(same split, same merges).encode_ordinary_batch(texts, num_threads=cores), the texts
already in memory, nothing written. Ours: the stage's own path, tasks.tokenize.tokenize_documents: --shards parquet
document shards in (as preprocess writes them), --workers processes (0: all cores), token shards out (uint16, bos
before each document). Both count the same tokens (checked); the ids are checked by tests/model/test_tokenizer.py.
Before the timings, where one worker's time goes (read parquet, encode, join the ids with bos, write).

Usage: python bench/tokenize.py [--rounds 3] [--vocab 4096] [--repeat 16] [--shards 8] [--workers 0].
Last line: `ratio: X.XX` (ours / baseline).
"""
from __future__ import annotations

import os
import sys

# this file's name is also the standard library's `tokenize`: run as a script, keep its folder off the import path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

# Only light imports up here: the stage's worker processes start by re-running this module's top level.
import argparse  # noqa: E402
import pkgutil  # noqa: E402
import pydoc  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402


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


def write_documents(texts: list[str], directory: Path, shards: int) -> list[Path]:
    """Document shards `train-{i:05d}-00000.parquet`, as preprocess writes them; documents dealt round-robin."""
    from data.tokens.documents import ShardWriter

    paths = []
    for i in range(shards):
        with ShardWriter(directory, f"train-{i:05d}") as writer:
            for j in range(i, len(texts), shards):
                writer.write({"id": str(j), "text": texts[j]})
        paths += writer.paths
    return paths


def profile(paths: list[Path], tokenizer: Path, out: Path) -> dict[str, float]:
    """Seconds one worker spends in each step over all the shards (in this process, one thread)."""
    import pyarrow.parquet as pq

    from data.tokens.shards import TokenShardWriter, _tokenizer

    tok = _tokenizer(tokenizer)
    steps = dict.fromkeys(("read parquet", "encode", "join ids", "write"), 0.0)
    writer = TokenShardWriter(out, "profile", tok.vocab_size, tokens_per_shard=1 << 26)  # one write, at the end
    for path in paths:
        start = time.perf_counter()
        batches = [b.column(0).to_pylist()
                   for b in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["text"])]
        steps["read parquet"] += time.perf_counter() - start
        for texts in batches:
            start = time.perf_counter()
            ids = tok.encode_arrays(texts)  # one uint32 array per document
            steps["encode"] += time.perf_counter() - start
            start = time.perf_counter()
            writer.add_documents(ids, tok.bos_id)
            steps["join ids"] += time.perf_counter() - start
    start = time.perf_counter()
    writer.close()
    steps["write"] += time.perf_counter() - start
    return steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=16, help="copies of the corpus (the stage's start-up amortizes)")
    parser.add_argument("--shards", type=int, default=8, help="document shards the stage reads")
    parser.add_argument("--workers", type=int, default=0, help="the stage's worker processes (0: all cores)")
    args = parser.parse_args()

    from model.tokenizer import train_bpe
    from tasks.core.parallel import cpu_count, resolve_workers
    from tasks.tokenize import tokenize_documents

    one_copy = corpus()
    texts = one_copy * args.repeat
    tok = train_bpe(one_copy, args.vocab)
    fast = tok.fast_encoding()
    if fast is None:
        raise SystemExit("tiktoken is not installed or does not reproduce this tokenizer")
    cores = cpu_count()  # the cores this process may use (taskset), as the stage counts them
    n_bytes = sum(len(t.encode()) for t in texts)
    print(f"{len(texts)} documents ({len(one_copy)} x {args.repeat}), {n_bytes / 1e6:.1f} MB, vocab {tok.vocab_size}, "
          f"{cores} cores; ours: {args.shards} document shards on {resolve_workers(args.workers)} worker(s)")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok.save(work / "tokenizer.json")
        paths = write_documents(texts, work / "documents", args.shards)

        def baseline() -> int:
            return sum(len(ids) + 1 for ids in fast.encode_ordinary_batch(texts, num_threads=cores))

        def ours() -> int:
            with tempfile.TemporaryDirectory(dir=work) as out:
                counts = tokenize_documents(work / "documents", work / "tokenizer.json", Path(out),
                                            workers=args.workers)
            return counts["tokens_train"]

        steps = profile(paths, work / "tokenizer.json", work / "profile")
        total = sum(steps.values())
        print("one worker's time: " + ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in steps.items()))

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
