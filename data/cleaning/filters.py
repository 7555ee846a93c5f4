"""Document filters in FineWeb's order (datatrove's recipe): URL -> language -> Gopher repetition -> Gopher quality ->
C4 -> FineWeb rules. Each is a small step saying why it drops a document; C4 also rewrites the text.

Defaults and drop-reason names are the ones datatrove 0.10.1 uses for FineWeb (`examples/fineweb.py`), so our
reports line up with theirs. Each step's defaults live in its options model (URLOptions, GopherQualityOptions...),
which the preprocess config (data/cleaning/config.py) holds as that step's setting. Any adaptation to a particular
crawl (e.g. API documentation, whose code has braces) belongs in the preset's config, not here. PII replacement runs
after dedup and lives in data/cleaning/pii.py.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from data.cleaning import langid
from data.cleaning.base import Filter, Options, step
from data.tokens.documents import Document

# --- text helpers ---------------------------------------------------------------------------------------------------

# datatrove splits English into words with spaCy's tokenizer: punctuation marks become tokens of their own
# ("end." -> "end", "."), contractions split in two ("it's" -> "it", "'s"), URLs and numbers stay whole. These rules
# approximate it without a spaCy dependency; counts differ only on rarer forms (hyphenated dates, "e.g." is 2 tokens
# here, 1 there), and the steps' decisions with spaCy's words agree with ours on ~96% of our sample's pages. With this
# tokenizer (and sentence_spans) swapped into datatrove's filters, its decisions and ours are identical on every page
# of our sample crawl and variants of them: tests/data/test_datatrove_parity.py runs datatrove's blocks to check it.
_TOKEN = re.compile(
    r"(?:https?|ftp)://[^\s<>\"]*[^\s<>\".,;:!?)\]'’]"  # URLs
    r"|(?<![\w.+-])[\w.+-]++@\w[\w.-]*\w"  # e-mail addresses
    r"|\w+(?:[.,]\w+)*"  # words, numbers (3.14, 1,000), dotted names (os.path)
    r"|['’](?:s|re|ve|ll|d|m|t)\b"  # clitics: it's -> it 's
    r"|\.{2,}"  # an ellipsis is one token
    r"|[^\w\s]",  # any other mark, one per token
    re.IGNORECASE,
)
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


@lru_cache(maxsize=4)  # consecutive steps (Gopher repetition, then quality) see the same text
def split_words(text: str) -> tuple[str, ...]:
    """Words and punctuation tokens, approximating datatrove's English word tokenizer (spaCy)."""
    return tuple(_TOKEN.findall(text))


def words_of(text: str) -> list[str]:
    """Whitespace words (what MinLength counts)."""
    return text.split()


@lru_cache(maxsize=8192)
def _is_punct_char(ch: str) -> bool:
    # Approximates datatrove's punctuation set: ASCII punctuation, Unicode punctuation, control characters.
    return ch in string.punctuation or unicodedata.category(ch)[0] in "PC"


def is_symbol_word(word: str) -> bool:
    """True for a token made only of punctuation ("--", "...", "»"); such tokens are not words for Gopher."""
    if word[0].isalnum():  # the common case, decided without a regex
        return False
    return _LETTER_OR_DIGIT.search(word) is None and all(_is_punct_char(c) for c in word)


# Sentence-ending marks of the common scripts (datatrove uses Unicode's full Sentence_Terminal list).
TERMINAL_PUNCTUATION = tuple(".!?。！？．｡؟۔।॥։።፧၊။។៕‼‽⁇⁈⁉⸮﹒﹖﹗܀܁܂᠃᠉꓿꘎꘏")
# A sentence ends at a lone terminal mark followed by space and (after any quotes or brackets) a letter or digit.
# The runs in between are bounded so that a line of ". . . . ." stays linear.
_SENTENCE_END = re.compile(r"(?:(?<!\.)\.(?!\.)|[!?。！？؟۔।॥])[^\w\s]{0,10}+\s[\W_]{0,20}+(?=[^\W_])")
_ABBREVIATION = re.compile(r"(?:(?<!\w)[A-Za-z]|\b(?:mr|mrs|ms|dr|prof|st|vs|etc|inc|ltd|jr|sr|cf|al|fig|no))$",
                           re.IGNORECASE)  # searched in the 8 characters before a period


def sentence_spans(line: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in one line, approximating spaCy's sentencizer (which datatrove's C4 filter
    counts with): a new sentence starts after '.', '!' or '?' unless the period closes an abbreviation ("e.g.",
    "Mr.", "J."). A blank line has none."""
    if not line.strip():
        return []
    starts = [0] + [m.end() for m in _SENTENCE_END.finditer(line)
                    if not (line[m.start()] == "." and _ABBREVIATION.search(line[max(0, m.start() - 8):m.start()]))]
    return list(zip(starts, [*starts[1:], len(line)], strict=True))


def count_sentences(line: str) -> int:
    """Sentences in one line (see sentence_spans)."""
    return len(sentence_spans(line))


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(items equal to an earlier item, characters in those items): first occurrences do not count."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


# --- 1. URL ---------------------------------------------------------------------------------------------------------

# A small built-in list of adult and spam terms (datatrove ships larger ones; pass a big domain list such as UT1's
# through block_domains_file). Banned words match whole tokens of the URL, soft-banned words drop a URL holding
# soft_word_threshold of them, subwords match anywhere in the URL with punctuation removed.
DEFAULT_BANNED_WORDS = frozenset(
    "porn porno pornos xxx hentai bukkake blowjob blowjobs handjob gangbang creampie cumshot cumshots camgirl camgirls "
    "camslut camwhore milf milfs shemale upskirt jailbait dildo dildos livesex sexcam sexcams nsfw bdsm deepthroat "
    "pussy slut sluts whore whores viagra cialis".split())
DEFAULT_SOFT_BANNED_WORDS = frozenset(
    "sex sexy nude nudes naked erotic erotica escort escorts webcam webcams hardcore fetish lingerie topless orgasm "
    "boobs babes fuck dick horny adult adults casino casinos payday".split())
DEFAULT_BANNED_SUBWORDS = frozenset(
    "pornhub xvideos xhamster youporn redtube brazzers chaturbate livejasmin youjizz xnxx freesex sexvideo porntube "
    "bongacams stripchat camsoda".split())

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _read_domain_list(path: str | Path) -> set[str]:
    """One domain per line; blank lines and '#' comments ignored."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return {d for line in f if (d := _clean_domain(line.split("#", 1)[0]))}
    except OSError as err:
        raise ValueError(f"url filter: cannot read block_domains_file {str(path)!r}: {err}") from err


def _clean_domain(entry: str) -> str:
    return entry.strip().lower().removeprefix("*.").strip(".")


Words = tuple[str, ...]


class URLOptions(Options):
    """URLFilter's options (FineWeb: the built-in lists, threshold 2)."""

    block_domains: Words = Field((), description="Domains to drop; a blocked domain blocks its subdomains.")
    block_domains_file: str | None = Field(None, description="A file of domains, one per line ('#' comments).")
    block_urls: Words = Field((), description="Exact URLs to drop.")
    banned_words: Words = Field((), description="Words that drop a URL holding one of them as a token.")
    banned_subwords: Words = Field((), description="Strings that drop a URL containing them (punctuation removed).")
    soft_banned_words: Words = Field((), description="Words that drop a URL holding soft_word_threshold of them.")
    soft_word_threshold: int = Field(2, ge=1)
    default_lists: bool = Field(True, description="Add the built-in banned, soft-banned and subword lists.")


class URLFilter(Filter):
    """Drops documents by URL, in datatrove's order: blocked domain (a blocked domain blocks its subdomains),
    blocked URL, a banned word among the URL's tokens, >= soft_word_threshold soft-banned words, a banned subword
    inside the URL with punctuation removed. A missing or unparsable URL is kept: there is nothing to judge.

    Unlike datatrove, the URL is lowercased before its words are compared (hostnames are case-insensitive).
    """

    name = "url"
    options_type = URLOptions

    def __init__(self, options: URLOptions | None = None, /, **changes: Any):
        super().__init__(options, **changes)
        o = self.options
        self.block_domains = {d for d in map(_clean_domain, o.block_domains) if d}
        if o.block_domains_file:  # read where the filter runs: the file may exist only on the workers' machines
            self.block_domains |= _read_domain_list(o.block_domains_file)
        self.block_urls = {u.strip() for u in o.block_urls if u.strip()}
        norm = lambda words: {w for w in (_NON_ALNUM.sub("", x.lower()) for x in words) if w}
        self.banned_words = norm(o.banned_words) | (DEFAULT_BANNED_WORDS if o.default_lists else set())
        self.soft_banned_words = norm(o.soft_banned_words) | (DEFAULT_SOFT_BANNED_WORDS if o.default_lists else set())
        self.banned_subwords = norm(o.banned_subwords) | (DEFAULT_BANNED_SUBWORDS if o.default_lists else set())
        self._subword_re = (re.compile("|".join(map(re.escape, sorted(self.banned_subwords))))
                            if self.banned_subwords else None)

    def __repr__(self) -> str:  # the word and domain lists would swamp a log line
        return (f"URLFilter({len(self.block_domains)} domains, {len(self.block_urls)} urls, "
                f"{len(self.banned_words)} banned words, {len(self.soft_banned_words)} soft-banned words "
                f"(threshold {self.soft_word_threshold}), {len(self.banned_subwords)} banned subwords)")

    def _domain_blocked(self, host: str) -> bool:
        if not self.block_domains:
            return False
        if host in self.block_domains:
            return True
        if host.replace(".", "").isdigit() or ":" in host:  # an IP address has no parent domains
            return False
        parts = host.split(".")
        return any(".".join(parts[i:]) in self.block_domains for i in range(1, len(parts)))

    def reason(self, doc: Document) -> str | None:
        url = (doc.get("url") or "").strip()
        if not url:
            return None
        try:
            host = (urlsplit(url).hostname or "").rstrip(".")
        except ValueError:
            return None
        if host and self._domain_blocked(host):
            return "blocked_domain"
        if url in self.block_urls:
            return "blocked_url"
        lowered = url.lower()
        tokens = set(_NON_ALNUM.split(lowered))
        if not tokens.isdisjoint(self.banned_words):
            return "banned_word"
        if len(tokens & self.soft_banned_words) >= self.soft_word_threshold:
            return "soft_banned_words"
        if self._subword_re is not None and self._subword_re.search(_NON_ALNUM.sub("", lowered)):
            return "banned_subword"
        return None


# --- 2. language ----------------------------------------------------------------------------------------------------

class LanguageOptions(Options):
    """LanguageFilter's options (FineWeb: en > 0.65)."""

    languages: list[str] | None = Field(["en"], description="Codes to keep (one code or a list); null: any language.")
    min_score: float = Field(0.65, ge=0, le=1, description="Keep when a kept language scores above this.")
    max_chars: int | None = Field(langid.DEFAULT_MAX_CHARS, ge=0,
                                  description="Classify only the first max_chars characters (null or 0: all).")

    @field_validator("languages", mode="before")
    @classmethod
    def _one_code(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("languages")
    @classmethod
    def _known_codes(cls, value: list[str] | None) -> list[str] | None:
        # Checked only for a list given explicitly (defaults are not validated), so a config that keeps "en"
        # does not load the model just to check its options.
        unknown = sorted(set(value or ()) - set(langid.known_languages()))
        if unknown:
            raise ValueError(f"unknown language code(s) {unknown}; known: {' '.join(sorted(langid.known_languages()))}")
        return value


class LanguageFilter(Filter):
    """Keeps documents where one of `languages` scores above min_score (FineWeb: en > 0.65), and records the top
    language and its probability in meta["language"] / meta["language_score"] (data/cleaning/langid.py: py3langid).

    Only the first max_chars characters are classified (data/cleaning/langid.py says why 4,000).
    As in datatrove the comparison is strict (score > min_score). languages=None keeps any language whose top
    score passes. Reasons: "language_not_kept" (another language is the most likely), "language_below_threshold"
    (a kept language is the most likely, but not likely enough).
    """

    name = "language"
    options_type = LanguageOptions

    def _decide(self, doc: Document) -> tuple[str | None, str, float]:
        ranked = langid.language_scores(doc["text"], self.max_chars)
        top, top_score = ranked[0]
        if self.languages is None:
            keep = top_score > self.min_score
        else:
            keep = any(score > self.min_score for lang, score in ranked if lang in self.languages)
        if keep:
            return None, top, top_score
        in_list = self.languages is None or top in self.languages
        return ("language_below_threshold" if in_list else "language_not_kept"), top, top_score

    def reason(self, doc: Document) -> str | None:
        return self._decide(doc)[0]

    def apply(self, doc: Document) -> Document | str:
        why, lang, score = self._decide(doc)
        if why:
            return why
        return {**doc, "meta": {**(doc.get("meta") or {}), "language": lang, "language_score": round(score, 4)}}


# --- 3. Gopher repetition -------------------------------------------------------------------------------------------

def _ngrams(words: Sequence[str], n: int) -> Iterator[tuple[str, ...]]:
    return zip(*(words[i:] for i in range(n)), strict=False)


def _top_ngram_chars(words: Sequence[str], n: int) -> int:
    """Characters of the most frequent n-gram, written with spaces, times its count (ties: the first seen)."""
    gram, count = Counter(_ngrams(words, n)).most_common(1)[0]
    return (sum(map(len, gram)) + n - 1) * count


def _joined_ngrams(words: Sequence[str], n: int) -> list[str]:
    """n-grams as datatrove keys them for duplicates: the words concatenated without spaces."""
    return list(map("".join, _ngrams(words, n)))


def _duplicated_ngram_chars(grams: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier n-gram; after a repeat the scan jumps past it, so overlapping
    repeats are not counted twice."""
    seen: set[str] = set()
    repeated = i = 0
    while i < len(grams):
        gram = grams[i]
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


NGramThresholds = tuple[tuple[Annotated[int, Field(ge=1)], float], ...]


class GopherRepetitionOptions(Options):
    """GopherRepetition's thresholds (FineWeb: Gopher's table A1). None or 0 turns a rule off."""

    dup_line_frac: float | None = Field(0.3, ge=0)
    dup_para_frac: float | None = Field(0.3, ge=0)
    dup_line_char_frac: float | None = Field(0.2, ge=0)
    dup_para_char_frac: float | None = Field(0.2, ge=0)
    top_n_grams: NGramThresholds = Field(((2, 0.2), (3, 0.18), (4, 0.16)),
                                         description="[n, fraction] pairs: the top n-gram's share of the characters.")
    dup_n_grams: NGramThresholds = Field(((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)),
                                         description="[n, fraction] pairs: repeated n-grams' share of the characters.")


class GopherRepetition(Filter):
    """Gopher's repetition rules (Rae et al. 2021, table A1) as datatrove's GopherRepetitionFilter computes them.

    Paragraphs are the stripped text split on 2+ newlines, lines the text split on runs of newlines; a fraction is
    duplicates / items, a character fraction duplicate characters / len(text). Then, over words (see split_words:
    punctuation marks are words, as with datatrove's spaCy tokenizer): the most frequent n-gram's characters for
    n in top_n_grams, and the characters inside repeated n-grams for n in dup_n_grams, each over len(text).
    A threshold of None or 0 turns its rule off.
    """

    name = "gopher_repetition"
    options_type = GopherRepetitionOptions

    def reason(self, doc: Document) -> str | None:
        text = doc["text"]
        if not text:
            return "empty"
        size = len(text)
        paragraphs = re.split(r"\n{2,}", text.strip())
        dups, dup_chars = _duplicates(paragraphs)
        if self.dup_para_frac and dups / len(paragraphs) > self.dup_para_frac:
            return "dup_para_frac"
        if self.dup_para_char_frac and dup_chars / size > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = re.split(r"\n+", text)
        dups, dup_chars = _duplicates(lines)
        if self.dup_line_frac and dups / len(lines) > self.dup_line_frac:
            return "dup_line_frac"
        if self.dup_line_char_frac and dup_chars / size > self.dup_line_char_frac:
            return "dup_line_char_frac"

        words = split_words(text)
        for n, frac in self.top_n_grams:
            if len(words) >= n and _top_ngram_chars(words, n) / size > frac:
                return f"top_{n}_gram"
        for n, frac in self.dup_n_grams:
            grams = _joined_ngrams(words, n)
            # What the scan counts lies in repeated n-grams: when all repeats together stay within the threshold
            # (two C-speed passes), the Python scan cannot exceed it and is skipped.
            if (sum(map(len, grams)) - sum(map(len, set(grams)))) / size <= frac:
                continue
            if _duplicated_ngram_chars(grams, n) / size > frac:
                return f"duplicated_{n}_n_grams"
        return None


# --- 4. Gopher quality ----------------------------------------------------------------------------------------------

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQualityOptions(Options):
    """GopherQuality's thresholds (FineWeb: Gopher's values). None or 0 turns a rule off."""

    min_doc_words: int | None = Field(50, ge=0)
    max_doc_words: int | None = Field(100_000, ge=0)
    min_avg_word_length: float | None = Field(3, ge=0)
    max_avg_word_length: float | None = Field(10, ge=0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0)
    min_alpha_words_ratio: float | None = Field(0.8, ge=0, description="datatrove's max_non_alpha_words_ratio.")
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: tuple[str, ...] = GOPHER_STOP_WORDS


class GopherQuality(Filter):
    """Gopher's quality rules as datatrove's GopherQualityFilter computes them, over split_words tokens:
    - words that are not pure punctuation: between min_doc_words and max_doc_words, mean length in
      [min_avg_word_length, max_avg_word_length];
    - '#' per token, and '...' / '…' per token, each <= max_symbol_word_ratio;
    - lines starting with '•' or '-' <= max_bullet_lines_ratio; lines ending with an ellipsis <= ...ellipsis...;
    - tokens holding a letter >= min_alpha_words_ratio (datatrove's `max_non_alpha_words_ratio`);
    - at least min_stop_words distinct stop words, matched case-sensitively as datatrove does.
    A threshold of None or 0 turns its rule off.
    """

    name = "gopher_quality"
    options_type = GopherQualityOptions

    def __init__(self, options: GopherQualityOptions | None = None, /, **changes: Any):
        super().__init__(options, **changes)
        self.stop_words = frozenset(self.options.stop_words)

    def reason(self, doc: Document) -> str | None:
        text = doc["text"]
        words = split_words(text)
        n_words = len(words)
        if not n_words:
            return "gopher_short_doc"
        real = [w for w in words if not is_symbol_word(w)]
        if self.min_doc_words and len(real) < self.min_doc_words:
            return "gopher_short_doc"
        if self.max_doc_words and len(real) > self.max_doc_words:
            return "gopher_long_doc"
        avg = sum(map(len, real)) / len(real) if real else 0.0
        if self.min_avg_word_length and avg < self.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if self.max_avg_word_length and avg > self.max_avg_word_length:
            return "gopher_above_avg_threshold"
        if self.max_symbol_word_ratio:
            if text.count("#") / n_words > self.max_symbol_word_ratio:
                return "gopher_too_many_hashes"
            if (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
                return "gopher_too_many_ellipsis"
        lines = text.splitlines() or [""]
        if self.max_bullet_lines_ratio:
            bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return "gopher_too_many_bullets"
        if self.max_ellipsis_lines_ratio:
            ellipses = sum(line.rstrip().endswith(("...", "…")) for line in lines)
            if ellipses / len(lines) > self.max_ellipsis_lines_ratio:
                return "gopher_too_many_end_ellipsis"
        if self.min_alpha_words_ratio:
            alpha = sum(1 for w in words if any(c.isalpha() for c in w))
            if alpha / n_words < self.min_alpha_words_ratio:
                return "gopher_below_alpha_threshold"
        if self.min_stop_words and len(self.stop_words.intersection(words)) < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None


# --- 5. C4 ----------------------------------------------------------------------------------------------------------

_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
C4_POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")


class C4Options(Options):
    """C4Quality's rules (FineWeb: datatrove's C4QualityFilter without the terminal-punctuation rule)."""

    max_word_length: int | None = Field(1000, ge=0, description="Remove a line with a longer word (null or 0: off).")
    remove_citations: bool = True
    terminal_punct: bool = Field(False, description="Remove lines not ending in terminal punctuation (C4: on).")
    min_words_per_line: int | None = Field(3, ge=0)
    lorem_ipsum: bool = True
    javascript: bool = True
    curly_bracket: bool = True
    policy: bool = True
    min_sentences: int | None = Field(5, ge=0)


class C4Quality(Filter):
    """C4's heuristics (Raffel et al. 2020) as datatrove's C4QualityFilter applies them, with FineWeb's setting
    (no terminal-punctuation rule). Line by line (str.splitlines, each line stripped):
      - remove a line with a word longer than max_word_length characters (None: off);
      - strip Wikipedia-style citations "[1]", "[edit]", "[citation needed]" (remove_citations);
      - remove a line not ending in . ? ! " ' or ending in "..." (terminal_punct; off in FineWeb);
      - remove a line with fewer than min_words_per_line words (so blank lines go too; 0: off);
      - drop the document if a kept line holds "lorem ipsum" (lorem_ipsum);
      - remove a line mentioning "javascript" (javascript);
      - drop the document if a kept line holds '{' (curly_bracket);
      - remove a line with a cookie / terms-of-use phrase (policy);
    then drop the document if the kept lines hold fewer than min_sentences sentences (None or 0: off), else
    return it with only the kept lines, joined by newlines. Lines removed per rule accumulate in self.counts.
    """

    name = "c4"
    options_type = C4Options

    def __init__(self, options: C4Options | None = None, /, **changes: Any):
        super().__init__(options, **changes)
        self.counts: Counter = Counter()

    def _filter_lines(self, text: str) -> tuple[str | None, list[str], Counter]:
        kept: list[str] = []
        removed: Counter = Counter()
        sentences = 0
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            if self.max_word_length and self.max_word_length > 0 and any(len(w) > self.max_word_length
                                                                         for w in words):
                removed["line_too_long_word"] += 1
                continue
            if self.remove_citations and "[" in line:
                line = _CITATION.sub("", line)
            if self.terminal_punct and (not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")):
                removed["line_no_terminal_punct"] += 1
                continue
            if self.min_words_per_line and len(words) < self.min_words_per_line:
                removed["line_too_few_words"] += 1
                continue
            lowered = line.lower()
            if self.lorem_ipsum and "lorem ipsum" in lowered:
                return "lorem_ipsum", kept, removed
            if self.javascript and "javascript" in lowered:
                removed["line_javascript"] += 1
                continue
            if self.curly_bracket and "{" in line:
                return "curly_bracket", kept, removed
            if self.policy and any(p in lowered for p in C4_POLICY_PHRASES):
                removed["line_policy"] += 1
                continue
            if self.min_sentences and self.min_sentences > 0:
                sentences += count_sentences(line)
            kept.append(line)
        if self.min_sentences and self.min_sentences > 0 and sentences < self.min_sentences:
            return "too_few_sentences", kept, removed
        return None, kept, removed

    def reason(self, doc: Document) -> str | None:
        return self._filter_lines(doc["text"])[0]

    def apply(self, doc: Document) -> Document | str:
        why, kept, removed = self._filter_lines(doc["text"])
        if why:
            return why
        self.counts.update(removed)
        text = "\n".join(kept).strip()
        return doc if text == doc["text"] else {**doc, "text": text}


# --- 6. FineWeb -----------------------------------------------------------------------------------------------------

class FineWebOptions(Options):
    """FineWebQuality's thresholds (datatrove's FineWebQualityFilter defaults)."""

    line_punct_thr: float = Field(0.12, ge=0)
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] | None = Field(None, description="Line-ending marks (null: TERMINAL_PUNCTUATION).")
    short_line_thr: float = Field(0.67, ge=0)
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: float = Field(0.01, ge=0, description="0.01 in datatrove's code; the FineWeb blog says 0.1.")
    new_line_ratio: float = Field(0.3, ge=0)


class FineWebQuality(Filter):
    """FineWeb's own rules (datatrove's FineWebQualityFilter), over the non-blank lines of the text:
    - lines ending in terminal punctuation / lines < line_punct_thr -> "line_punct_ratio" (unless the ratio is 0 and
      line_punct_exclude_zero);
    - lines of <= short_line_length characters / lines > short_line_thr -> "short_line_ratio";
    - characters in lines that repeat an earlier line / characters outside newlines > char_duplicates_ratio
      -> "char_dup_ratio" (0.01 in datatrove's code; the FineWeb blog says 0.1);
    - newlines / words (split_words) > new_line_ratio -> "list_ratio".
    """

    name = "fineweb"
    options_type = FineWebOptions

    def __init__(self, options: FineWebOptions | None = None, /, **changes: Any):
        super().__init__(options, **changes)
        self.stop_chars = self.options.stop_chars if self.options.stop_chars is not None else TERMINAL_PUNCTUATION

    def reason(self, doc: Document) -> str | None:
        text = doc["text"]
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "empty"
        ratio = sum(line.endswith(self.stop_chars) for line in lines) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return "line_punct_ratio"
        if sum(len(line) <= self.short_line_length for line in lines) / len(lines) > self.short_line_thr:
            return "short_line_ratio"
        if _duplicates(lines)[1] / (len(text) - text.count("\n")) > self.char_duplicates_ratio:
            return "char_dup_ratio"
        words = split_words(text)
        if not words or text.count("\n") / len(words) > self.new_line_ratio:
            return "list_ratio"
        return None


# --- optional length bounds (not part of FineWeb) -------------------------------------------------------------------

class MinLength(Filter):
    """Drops documents with fewer than min_words whitespace words (the preprocess config's min_words)."""

    name = "min_length"

    def __init__(self, min_words: int):
        self.min_words = min_words

    def reason(self, doc: Document) -> str | None:
        return "too_few_words" if len(words_of(doc["text"])) < self.min_words else None


class MaxLength(Filter):
    """Drops documents longer than max_chars characters (the preprocess config's max_chars)."""

    name = "max_length"

    def __init__(self, max_chars: int):
        self.max_chars = max_chars

    def reason(self, doc: Document) -> str | None:
        return "too_many_chars" if len(doc["text"]) > self.max_chars else None


# --- config ---------------------------------------------------------------------------------------------------------

# How each step is written in a config (true: its defaults, false: off, or a dict of its options); the preprocess
# config (data/cleaning/config.py) uses these same types.
URLStep = step(URLOptions)
LanguageStep = step(LanguageOptions)
GopherRepetitionStep = step(GopherRepetitionOptions)
GopherQualityStep = step(GopherQualityOptions)
C4Step = step(C4Options)
FineWebStep = step(FineWebOptions)
# min_words / max_chars: a whole number, 0 for off (strict: `true` must not quietly mean 1)
Limit = Annotated[int, Field(ge=0, strict=True)]

# FineWeb's order; the optional length bounds come last.
OPTION_FILTERS: dict[str, type[Filter]] = {
    "url": URLFilter, "language": LanguageFilter, "gopher_repetition": GopherRepetition,
    "gopher_quality": GopherQuality, "c4": C4Quality, "fineweb": FineWebQuality,
}
LIMIT_FILTERS: dict[str, type[Filter]] = {"min_words": MinLength, "max_chars": MaxLength}
FILTER_KEYS = (*OPTION_FILTERS, *LIMIT_FILTERS)


@with_config(ConfigDict(extra="forbid"))
class FilterSteps(TypedDict, total=False):
    """The filter steps of a config, by key; build_filters builds those present and on."""

    url: URLStep
    language: LanguageStep
    gopher_repetition: GopherRepetitionStep
    gopher_quality: GopherQualityStep
    c4: C4Step
    fineweb: FineWebStep
    min_words: Limit
    max_chars: Limit


_FILTER_STEPS = TypeAdapter(FilterSteps)


def build_filters(cfg: Mapping[str, Any] | BaseModel) -> list[Filter]:
    """The filters of a config, in FineWeb's order whatever the order of its keys.

    `cfg` is the preprocess config (its other fields are ignored) or a mapping of only filter keys, such as
    {"url": True, "language": {"min_score": 0.5}, "c4": {"curly_bracket": False}, "min_words": 50}: a step is true
    (its defaults), false / null / missing (off) or a dict of its options; min_words / max_chars are a number (0:
    off). Bad keys or options raise pydantic's ValidationError naming them. PII runs after dedup: see
    data.cleaning.pii.build_pii."""
    values = {k: getattr(cfg, k) for k in FILTER_KEYS if hasattr(cfg, k)} if isinstance(cfg, BaseModel) else cfg
    steps = _FILTER_STEPS.validate_python(values)
    built = [cls(options) for key, cls in OPTION_FILTERS.items() if (options := steps.get(key)) is not None]
    return built + [cls(limit) for key, cls in LIMIT_FILTERS.items() if (limit := steps.get(key))]


def apply_filters(docs: Iterable[Document], filters: list[Filter], stats: Counter,
                  reasons: Counter | None = None) -> Iterator[Document]:
    """Yield each document every filter keeps, as the filters rewrote it. The first filter that drops a document
    counts it in stats[f"filtered_{name}"] (and, if given, reasons[f"{name}/{reason}"]); kept ones in
    stats["kept_filters"]."""
    for doc in docs:
        for f in filters:
            result = f.apply(doc)
            if isinstance(result, str):
                stats[f"filtered_{f.name}"] += 1
                if reasons is not None:
                    reasons[f"{f.name}/{result}"] += 1
                break
            doc = result
        else:
            stats["kept_filters"] += 1
            yield doc
