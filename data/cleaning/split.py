"""The exact-duplicate key of a text (normalised, then hashed), and the stable train/val split by document id."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_PUNCT_DIGITS = re.compile(r"[\d\W_]+", re.UNICODE)


def normalize_for_dedup(text: str) -> str:
    """Lowercase, NFKC, punctuation and digits to spaces, whitespace collapsed: pages that differ only in a date,
    a counter or spacing hash the same."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT_DIGITS.sub(" ", text).split())


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(normalize_for_dedup(text).encode("utf-8"), digest_size=16).digest()


def split_of(doc_id: str, val_fraction: float, seed: int = 0) -> str:
    """"train" or "val" from a hash of (seed, doc_id): the same document lands in the same split in every run,
    whatever order or subset of the crawl is processed."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < val_fraction else "train"
