"""Token shards: flat binary arrays of token ids (uint16 or uint32) with a JSON sidecar, read back by memmap; the
worker that tokenizes one document shard into them; and the batch samplers the trainer uses (random windows for
training, sequential windows for validation)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.tokens.documents import document_batches
from model.files import atomic_write_bytes
from model.tokenizer import Tokenizer

if TYPE_CHECKING:  # torch is imported where batches are made: tokenize workers never pay for it
    import torch


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65_536 else np.dtype(np.uint32)


def write_token_shard(path: str | os.PathLike[str], tokens: np.ndarray, vocab_size: int) -> None:
    """Write `tokens` as raw little-endian ids to `path` and {"dtype", "num_tokens", "vocab_size"} to
    path.with_suffix(".json"). The sidecar is written last, so a shard without one is incomplete."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"{path}: tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{path}: token ids must be in [0, {vocab_size}), got range "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    dtype = token_dtype(vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, memoryview(np.ascontiguousarray(tokens.astype(dtype.newbyteorder("<"), copy=False))))
    sidecar = {"dtype": dtype.name, "num_tokens": int(tokens.size), "vocab_size": int(vocab_size)}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(sidecar, indent=2).encode())


class TokenShardWriter:
    """Buffers token ids and writes full shards of `tokens_per_shard` as "{prefix}-{i:05d}.bin" (+ .json).

    The prefix starts with the split ("train", or "train-00003" for the tokens of document shard 3): load_tokens
    reads "{split}-*.bin" in name order."""

    def __init__(self, out_dir: str | os.PathLike[str], prefix: str, vocab_size: int,
                 tokens_per_shard: int = 10_000_000):
        if tokens_per_shard < 1:
            raise ValueError(f"tokens_per_shard must be >= 1, got {tokens_per_shard}")
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.vocab_size = vocab_size
        self.tokens_per_shard = tokens_per_shard
        self.dtype = token_dtype(vocab_size)
        self.paths: list[Path] = []
        self.num_tokens = 0
        self._buffer = np.empty(tokens_per_shard, dtype=self.dtype)
        self._filled = 0

    def add(self, ids: list[int] | np.ndarray) -> None:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            ids = ids.astype(np.int64)  # a list (or an empty one, which numpy makes float)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"{self.prefix} shard writer: token ids must be in [0, {self.vocab_size}), "
                             f"got range [{ids.min()}, {ids.max()}]")
        self.num_tokens += int(ids.size)
        while ids.size:
            take = min(ids.size, self.tokens_per_shard - self._filled)
            self._buffer[self._filled:self._filled + take] = ids[:take]
            self._filled += take
            ids = ids[take:]
            if self._filled == self.tokens_per_shard:
                self._flush()

    def add_documents(self, docs: Sequence[Sequence[int]] | Sequence[np.ndarray], bos_id: int) -> int:
        """Append each document's ids after a bos token, in one array; returns the number of tokens added.
        `docs`: lists of ids, or arrays (Tokenizer.encode_arrays), which are joined without a Python int per token."""
        if not 0 <= bos_id < self.vocab_size:
            raise ValueError(f"{self.prefix} shard writer: bos id {bos_id} is not in [0, {self.vocab_size})")
        if not docs:
            return 0
        if all(isinstance(d, np.ndarray) for d in docs):
            bos = np.array([bos_id], dtype=docs[0].dtype)
            flat = np.concatenate([part for ids in docs for part in (bos, ids)])
        else:  # lists: straight into the shard's dtype, no int64 copy in between
            tokens = chain.from_iterable(chain.from_iterable(((bos_id,), ids) for ids in docs))
            try:
                flat = np.fromiter(tokens, dtype=self.dtype, count=len(docs) + sum(map(len, docs)))
            except OverflowError as e:  # an id that does not fit the dtype is out of [0, vocab_size) too
                raise ValueError(f"{self.prefix} shard writer: token ids must be in [0, {self.vocab_size}): {e}") from e
        self.add(flat)
        return len(flat)

    def _flush(self) -> None:
        if not self._filled:
            return
        path = self.out_dir / f"{self.prefix}-{len(self.paths):05d}.bin"
        write_token_shard(path, self._buffer[:self._filled], self.vocab_size)
        self.paths.append(path)
        self._filled = 0

    def close(self) -> list[Path]:
        self._flush()
        return list(self.paths)


@dataclass(frozen=True)
class TokenizeJob:
    """One document shard to tokenize, as handed to a worker process."""

    documents: Path  # a parquet shard of documents; its `text` column is read
    tokenizer: Path  # tokenizer.json
    out_dir: Path
    prefix: str  # the token shards are "{prefix}-{j:05d}.bin": "train-00003" for document shard 3 of train
    tokens_per_shard: int = 10_000_000
    num_threads: int = 1  # encoding threads in the worker: more when there are fewer shards than cores


SPLITS = ("train", "val")


def plan_token_shards(documents: Path, tokenizer: Path, out_dir: Path, tokens_per_shard: int,
                      cores: int) -> list[TokenizeJob]:
    """One job per document shard, named by the shard's place in its split: the tokens of the i-th `train-*.parquet`
    (in name order) go to `train-{i:05d}-{j:05d}.bin`, so load_tokens reads them back in document order."""
    files = {split: sorted(documents.glob(f"{split}-*.parquet")) for split in SPLITS}
    n_jobs = sum(map(len, files.values()))
    # Fewer shards than cores (often the val split alone): the spare cores encode on threads inside the workers.
    threads = max(1, cores // max(1, min(cores, n_jobs)))
    return [TokenizeJob(path, tokenizer, out_dir, f"{split}-{i:05d}", tokens_per_shard, threads)
            for split in SPLITS for i, path in enumerate(files[split])]


@lru_cache(maxsize=4)
def _tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(path)  # once per worker process, not once per shard


def tokenize_document_shard(job: TokenizeJob) -> dict:
    """Tokenize one document shard into token shards, bos before every document. What the worker wrote depends on
    the job only (not on which process ran it or when), so a split comes out the same on any number of workers.
    Returns {"docs", "tokens", "shards": [file names], "dtype"}."""
    tok = _tokenizer(job.tokenizer)
    batches = document_batches(job.documents, ["text"])  # checks the column before any shard is started
    writer = TokenShardWriter(job.out_dir, job.prefix, tok.vocab_size, job.tokens_per_shard)
    n_docs = 0
    for batch in batches:
        texts = batch.column(0).to_pylist()
        writer.add_documents(tok.encode_arrays(texts, num_threads=job.num_threads), tok.bos_id)
        n_docs += len(texts)
    paths = writer.close()
    return {"docs": n_docs, "tokens": writer.num_tokens, "shards": [p.name for p in paths], "dtype": writer.dtype.name}


def _open_shard(path: Path) -> np.memmap:
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        raise FileNotFoundError(f"{path}: no sidecar {sidecar.name}; the shard is incomplete")
    info = json.loads(sidecar.read_text())
    dtype = np.dtype(info["dtype"]).newbyteorder("<")
    expected = info["num_tokens"] * dtype.itemsize
    if path.stat().st_size != expected:
        raise ValueError(f"{path}: {path.stat().st_size} bytes on disk, sidecar says {info['num_tokens']} "
                         f"{info['dtype']} tokens ({expected} bytes)")
    return np.memmap(path, dtype=dtype, mode="r", shape=(info["num_tokens"],))


class TokenStream:
    """Several token shards read as one 1-D sequence without loading them: a slice reads only the shards it covers
    (so training on a corpus larger than RAM works as with one memmap)."""

    ndim = 1

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])
        self.dtype = arrays[0].dtype

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError(f"TokenStream takes slices, got {type(key).__name__}")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("TokenStream slices must be contiguous (step 1)")
        parts = []
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            lo = start - int(self.offsets[i])
            hi = min(stop - int(self.offsets[i]), len(self.arrays[i]))
            parts.append(self.arrays[i][lo:hi])
            start += hi - lo
            i += 1
        if not parts:
            return np.zeros(0, dtype=self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Everything in memory at once (for small splits, e.g. a unigram baseline)."""
        out = np.concatenate(self.arrays)
        return out if dtype is None else out.astype(dtype)

    def tolist(self) -> list[int]:
        return np.asarray(self).tolist()


def load_tokens(shard_dir: str | os.PathLike[str], split: str) -> np.ndarray | TokenStream:
    """All tokens of a split as one 1-D sequence, in shard name order (= document order), nothing read up front:
    one shard's memmap, or a TokenStream over several."""
    paths = sorted(Path(shard_dir).glob(f"{split}-*.bin"))
    if not paths:
        raise FileNotFoundError(f"{shard_dir}: no token shards for split {split!r} ({split}-*.bin)")
    arrays = [_open_shard(p) for p in paths]
    return arrays[0] if len(arrays) == 1 else TokenStream(arrays)


class TokenBatches:
    """Batches of (x, y) windows from one token array (a memmap reads only the windows it needs); y is x shifted by
    one token.

    __call__(index) is a pure function of (seed, index), so batch `index` is the same in every run and a resumed
    trainer gets exactly the batches it would have had. windows="random" draws window starts at random;
    "sequential" walks the non-overlapping windows in order (batch i holds windows i*B .. i*B+B-1, wrapping into
    the next epoch), so every token is seen once per epoch.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0, windows: str = "random"):
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
        if len(tokens) < seq_len + 1:
            raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} tokens, got {len(tokens)}")
        if windows not in ("random", "sequential"):
            raise ValueError(f"windows must be 'random' or 'sequential', got {windows!r}")
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.windows = windows
        self.n_windows = (len(tokens) - 1) // seq_len

    def _stack(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        T = self.seq_len
        rows = np.stack([np.asarray(self.tokens[s:s + T + 1], dtype=np.int64) for s in starts])
        rows_t = torch.from_numpy(rows)
        return rows_t[:, :-1].contiguous(), rows_t[:, 1:].contiguous()

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, None]:
        if self.windows == "sequential":
            starts = (np.arange(index * self.batch_size, (index + 1) * self.batch_size) % self.n_windows) * self.seq_len
        else:
            rng = np.random.default_rng([self.seed, index])
            starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        x, y = self._stack(starts)
        return x, y, None

    def sequential(self, max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows from the start, in order (for validation); the last batch may be smaller."""
        starts = np.arange(self.n_windows) * self.seq_len
        for b, i in enumerate(range(0, self.n_windows, self.batch_size)):
            if max_batches is not None and b >= max_batches:
                return
            yield self._stack(starts[i:i + self.batch_size])
