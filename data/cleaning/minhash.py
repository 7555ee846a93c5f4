"""Near-duplicate detection with MinHash LSH across every shard of a run, FineWeb-style, in bounded memory.

Per document (in the shard workers): the text's word 5-grams are hashed, `buckets * hashes_per_bucket` MinHash
values are taken, and each bucket's values are folded into one 64-bit band key. Two documents that share any band
key are near-duplicates (FineWeb: 14 buckets x 8 hashes finds pairs above ~0.75 Jaccard similarity with high
probability). Across shards (in the driver), one bucket is held at a time: its keys from all shards (16 bytes per
document, ~160 MB for 10M documents) are sorted, equal neighbours are joined in a union-find that only ever holds
documents that have a duplicate, and in each cluster the document with the smallest (shard, row) id is kept, so the
result does not depend on how shards were scheduled. Beyond ~100M documents per run, dedup per dump (as FineWeb
does) or replace this sort with datatrove's k-way merge of sorted bucket files.

We hash in numpy rather than using datasketch: its LSH index keeps every signature in memory, and we need the
bucket-at-a-time merge over shard files that datatrove uses.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
SHINGLE_CHUNK = 4096


def normalized_words(text: str) -> list[str]:
    """Lowercased NFKC words with punctuation removed (datatrove's simplify_text, roughly)."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()


def hash64(text: str) -> int:
    """A stable 64-bit hash of a string (blake2b: the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def word_hashes(words: list[str]) -> np.ndarray:
    """hash64 of each word, computed once per distinct word."""
    cache: dict[str, int] = {}
    out = np.empty(len(words), dtype=np.uint64)
    for i, word in enumerate(words):
        h = cache.get(word)
        if h is None:
            h = cache[word] = hash64(word)
        out[i] = h
    return out


@dataclass(frozen=True)
class HashedWords:
    """A text's normalized words and their hashes: made once per document, shared by MinHash and the poison scan."""

    words: list[str]
    hashes: np.ndarray

    @classmethod
    def of(cls, text: str | HashedWords) -> HashedWords:
        if isinstance(text, HashedWords):
            return text
        words = normalized_words(text)
        return cls(words, word_hashes(words))


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorised: a bijective 64-bit mix (uint64 arithmetic wraps by design)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shingle_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit hash per run of n consecutive word hashes (order-sensitive); a text shorter than n words is one
    shingle of all its words."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.uint64)
    n = min(n, len(hashes))
    count = len(hashes) - n + 1
    with np.errstate(over="ignore"):
        acc = np.zeros(count, dtype=np.uint64)
        for i in range(n):
            acc = _mix(acc ^ hashes[i:i + count])
    return acc


class MinHashConfig(BaseModel):
    """MinHash near-duplicate removal across the run (FineWeb: 5-grams, 14 buckets x 8 hashes)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ngram: int = Field(5, ge=1, description="Words per shingle (FineWeb: 5).")
    buckets: int = Field(14, ge=1, description="LSH bands; a pair sharing any band is a duplicate (FineWeb: 14).")
    hashes_per_bucket: int = Field(8, ge=1, description="MinHash values per band (FineWeb: 8).")
    seed: int = 1

    @property
    def num_hashes(self) -> int:
        return self.buckets * self.hashes_per_bucket

    def seeds(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.integers(0, 2**63, size=self.num_hashes, dtype=np.int64).astype(np.uint64)


class MinHasher:
    """text -> `buckets` band keys (uint64)."""

    def __init__(self, params: MinHashConfig):
        self.params = params  # `enabled` is the pipeline's business: a MinHasher always hashes
        self._seeds = params.seeds()

    def band_keys(self, text: str | HashedWords) -> np.ndarray:
        p = self.params
        shingles = shingle_hashes(HashedWords.of(text).hashes, p.ngram)
        if len(shingles) == 0:
            shingles = np.zeros(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            # in chunks: a 100k-word page would otherwise make a 100k x 112 matrix (~90 MB) at once
            signature = np.full(p.num_hashes, np.iinfo(np.uint64).max, dtype=np.uint64)
            for start in range(0, len(shingles), SHINGLE_CHUNK):
                chunk = shingles[start:start + SHINGLE_CHUNK]
                np.minimum(signature, _mix(chunk[:, None] ^ self._seeds[None, :]).min(axis=0), out=signature)
            bands = signature.reshape(p.buckets, p.hashes_per_bucket)
            keys = np.zeros(p.buckets, dtype=np.uint64)
            for j in range(p.hashes_per_bucket):
                keys = _mix(keys ^ bands[:, j])
        return keys


class UnionFind:
    """Union-find over document ids (ints) that only stores the ids it is told about."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller id becomes the root: it is the document a cluster keeps
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo
            self.parent.setdefault(lo, lo)


def equal_key_runs(keys: np.ndarray, ids: np.ndarray) -> Iterable[np.ndarray]:
    """Groups of ids (each of 2+) that share a key, found by sorting; deterministic for equal inputs."""
    if len(keys) < 2:
        return
    order = np.lexsort((ids, keys))
    keys, ids = keys[order], ids[order]
    boundaries = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(keys)]))
    for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        yield ids[start:end]


def duplicates_by_key(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Ids whose key equals the key of a smaller id (exact duplicates: all but the first of each group)."""
    groups = [group[1:] for group in equal_key_runs(keys, ids)]
    return np.sort(np.concatenate(groups)) if groups else np.zeros(0, dtype=np.int64)


def near_duplicates(bucket_arrays: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Ids to drop: every member of a near-duplicate cluster except its smallest id.

    `bucket_arrays` yields, one bucket at a time, (band keys of all documents, their ids)."""
    uf = UnionFind()
    for keys, ids in bucket_arrays:
        for group in equal_key_runs(keys, ids):
            first = int(group[0])
            for other in group[1:]:
                uf.union(first, int(other))
    drop = [x for x in uf.parent if uf.find(x) != x]
    return np.array(sorted(drop), dtype=np.int64)
