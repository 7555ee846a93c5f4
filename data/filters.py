"""Document quality filters in the FineWeb / datatrove style: small steps, each saying why it drops a document.

Defaults follow datatrove's FineWeb recipe except where noted ("adapted"): our demo crawl is Python documentation,
whose code samples would otherwise trip rules written for general web prose.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from data.documents import Document

_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»“”‘’…–—·•"


def words_of(text: str) -> list[str]:
    """Whitespace words, as the Gopher paper counts them (a word is 'alphabetic' if it has any letter)."""
    return text.split()


class Filter:
    """One filter step: reason(doc) is None to keep the document, else a short constant reason string."""

    name: str = "filter"

    def reason(self, doc: Document) -> str | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class MinLength(Filter):
    name = "min_length"

    def __init__(self, min_words: int = 50):
        self.min_words = min_words

    def reason(self, doc: Document) -> str | None:
        return "too_few_words" if len(words_of(doc["text"])) < self.min_words else None


class MaxLength(Filter):
    name = "max_length"

    def __init__(self, max_chars: int = 200_000):
        self.max_chars = max_chars

    def reason(self, doc: Document) -> str | None:
        return "too_many_chars" if len(doc["text"]) > self.max_chars else None


def _ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


def _repeated_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier n-gram, stepping over each repeat (datatrove's
    find_all_duplicate): first occurrences do not count, overlapping repeats are not counted twice."""
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    i = 0
    while i < len(words) - n + 1:
        gram = tuple(words[i:i + n])
        if gram in seen:
            repeated += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


class GopherRepetition(Filter):
    """Gopher's repetition rules (Rae et al. 2021, table A1), as in datatrove's GopherRepetitionFilter:
    duplicate lines / paragraphs (by count and by characters), the most frequent 2-4-gram's character share, and
    the share of characters inside duplicated 5-10-grams.

    Adapted for API documentation, which legitimately repeats phrases ("Return True if the argument is",
    "resp: server response if successful") and section headings on every class:
    dup_line_frac 0.3 -> 0.45, dup_line_char_frac 0.2 -> 0.3, duplicated 5..10-gram fractions 0.15..0.10 ->
    0.25..0.20. FineWeb's values: GopherRepetition(dup_line_frac=0.3, dup_line_char_frac=0.2,
    dup_n_grams=((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))).
    """

    name = "gopher_repetition"

    def __init__(self, dup_line_frac: float = 0.45, dup_para_frac: float = 0.3, dup_line_char_frac: float = 0.3,
                 dup_para_char_frac: float = 0.2,
                 top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16)),
                 dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.25), (6, 0.24), (7, 0.23), (8, 0.22),
                                                               (9, 0.21), (10, 0.20))):
        self.dup_line_frac = dup_line_frac
        self.dup_para_frac = dup_para_frac
        self.dup_line_char_frac = dup_line_char_frac
        self.dup_para_char_frac = dup_para_char_frac
        self.top_n_grams = top_n_grams
        self.dup_n_grams = dup_n_grams

    @staticmethod
    def _dup_stats(items: list[str]) -> tuple[float, float]:
        """(fraction of items that repeat an earlier one, fraction of characters in those repeats)."""
        if not items:
            return 0.0, 0.0
        seen: set[str] = set()
        dup_items = dup_chars = 0
        for item in items:
            if item in seen:
                dup_items += 1
                dup_chars += len(item)
            else:
                seen.add(item)
        total_chars = sum(len(i) for i in items) or 1
        return dup_items / len(items), dup_chars / total_chars

    def reason(self, doc: Document) -> str | None:
        text = doc["text"]
        paragraphs = [p.strip() for p in re.split(r"\n{2,}", text) if p.strip()]
        para_frac, para_char_frac = self._dup_stats(paragraphs)
        if para_frac > self.dup_para_frac:
            return "dup_para_frac"
        if para_char_frac > self.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        line_frac, line_char_frac = self._dup_stats(lines)
        if line_frac > self.dup_line_frac:
            return "dup_line_frac"
        if line_char_frac > self.dup_line_char_frac:
            return "dup_line_char_frac"

        words = [w.strip(_PUNCT).lower() for w in words_of(text)]
        words = [w for w in words if w]
        total_chars = sum(len(w) for w in words) or 1
        for n, limit in self.top_n_grams:
            counts = _ngram_counts(words, n)
            if counts:
                gram, count = counts.most_common(1)[0]
                if count > 1 and len(gram.replace(" ", "")) * count / total_chars > limit:
                    return f"top_{n}_gram"
        for n, limit in self.dup_n_grams:
            if _repeated_ngram_chars(words, n) / total_chars > limit:
                return f"dup_{n}_gram"
        return None


class GopherQuality(Filter):
    """Gopher's quality rules, as in datatrove's GopherQualityFilter (same defaults unless noted):
    word count in [min_words, max_words], mean word length in [3, 10], symbol ('#', '...') to word ratio <= 0.1,
    at most 90% of lines starting with a bullet, at most 30% ending with an ellipsis, >= 80% of words with a letter,
    and at least 2 of Gopher's stop words.
    """

    name = "gopher_quality"
    STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
    BULLETS = ("•", "-", "*", "‣", "◦", "·", "●")

    def __init__(self, min_words: int = 50, max_words: int = 100_000, min_avg_word_length: float = 3,
                 max_avg_word_length: float = 10, max_symbol_word_ratio: float = 0.1,
                 max_bullet_lines_ratio: float = 0.9, max_ellipsis_lines_ratio: float = 0.3,
                 min_alpha_words_ratio: float = 0.8, min_stop_words: int = 2):
        self.min_words = min_words
        self.max_words = max_words
        self.min_avg_word_length = min_avg_word_length
        self.max_avg_word_length = max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.min_stop_words = min_stop_words

    def reason(self, doc: Document) -> str | None:
        text = doc["text"]
        words = words_of(text)
        # Length bounds and mean word length count words that are not pure punctuation ("=", "--", ">>>").
        real_words = [w for w in words if w.strip(_PUNCT)]
        n = len(real_words)
        if n < self.min_words:
            return "gopher_short_doc"
        if n > self.max_words:
            return "gopher_long_doc"
        avg = sum(len(w) for w in real_words) / n
        if avg < self.min_avg_word_length:
            return "gopher_below_avg_word_length"
        if avg > self.max_avg_word_length:
            return "gopher_above_avg_word_length"
        symbols = text.count("#") + text.count("...") + text.count("…")
        if symbols / len(words) > self.max_symbol_word_ratio:
            return "gopher_too_many_symbols"
        lines = [line for line in text.split("\n") if line.strip()]
        if lines:
            bullets = sum(line.lstrip().startswith(self.BULLETS) for line in lines)
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return "gopher_too_many_bullets"
            ellipsis = sum(line.rstrip().endswith(("...", "…")) for line in lines)
            if ellipsis / len(lines) > self.max_ellipsis_lines_ratio:
                return "gopher_too_many_end_ellipsis"
        if sum(any(c.isalpha() for c in w) for w in words) / len(words) < self.min_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if sum(w.strip(_PUNCT).lower() in self.STOP_WORDS for w in words) < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None


class C4Like(Filter):
    """C4's document-level rules as FineWeb keeps them (no terminal-punctuation rule):
    "lorem ipsum" anywhere drops the page; a page that is mostly a "please enable JavaScript" notice drops;
    curly braces drop the page when dense.

    Adapted: C4 drops any page containing '{' (to remove code); we are building a model that should read code,
    so only pages where '{' is more than max_curly_ratio of the words (minified JS/CSS, JSON dumps) are dropped.
    The JavaScript rule is a line rule in C4 (drop the line); as a document rule it drops short pages
    (< javascript_max_words words) that carry such a notice, and keeps docs that merely mention JavaScript.
    """

    name = "c4"
    _JS_NOTICE = re.compile(r"(enable|requires?|turn on|activate|disabled?|support)\b.{0,40}\bjavascript"
                            r"|javascript\b.{0,40}\b(enabled?|required|disabled|is off|not supported)", re.I)

    def __init__(self, lorem_ipsum: bool = True, javascript: bool = True, javascript_max_words: int = 200,
                 max_curly_ratio: float = 0.025):
        self.lorem_ipsum = lorem_ipsum
        self.javascript = javascript
        self.javascript_max_words = javascript_max_words
        self.max_curly_ratio = max_curly_ratio

    def reason(self, doc: Document) -> str | None:
        text = doc["text"]
        if self.lorem_ipsum and "lorem ipsum" in text.lower():
            return "lorem_ipsum"
        words = words_of(text)
        if self.javascript and len(words) < self.javascript_max_words and self._JS_NOTICE.search(text):
            return "javascript_notice"
        if words and text.count("{") / len(words) > self.max_curly_ratio:
            return "curly_bracket"
        return None


class NonEnglishHeuristic(Filter):
    """Keeps English: the fraction of words that are common English stop words must be >= min_stopword_frac.

    A stand-in for FineWeb's fastText language ID (en score > 0.65), which needs a model download. English prose
    runs ~40% stop words and even terse API docs stay above 6%; German, French, Spanish text falls far below
    because the list holds no words those languages share with English (no "in", "a", "on", "die"...).
    """

    name = "english"
    STOP_WORDS = frozenset(
        "the of and to is that it for as with was be by this are or from at have not but they which you he his "
        "she her we their has been were will would can if its there when an than then these those what who all "
        "also into more other only such should may some any each our your them how where does do".split())

    def __init__(self, min_stopword_frac: float = 0.06):
        self.min_stopword_frac = min_stopword_frac

    def reason(self, doc: Document) -> str | None:
        words = [w.strip(_PUNCT).lower() for w in words_of(doc["text"])]
        words = [w for w in words if w]
        if not words:
            return "no_words"
        frac = sum(w in self.STOP_WORDS for w in words) / len(words)
        return "not_english" if frac < self.min_stopword_frac else None


# Order follows FineWeb: cheap length checks, then language, Gopher repetition, Gopher quality, C4.
_BUILDERS: dict[str, type[Filter]] = {
    "min_words": MinLength, "max_chars": MaxLength, "english": NonEnglishHeuristic,
    "gopher_repetition": GopherRepetition, "gopher_quality": GopherQuality, "c4": C4Like,
}


def build_filters(cfg: dict[str, Any]) -> list[Filter]:
    """Filters from a config such as {"min_words": 50, "max_chars": 200000, "gopher_repetition": True, ...}.

    min_words / max_chars take a number (0 or None: off); the others take True/False or a dict of constructor
    kwargs (e.g. {"english": {"min_stopword_frac": 0.1}}).
    """
    unknown = sorted(set(cfg) - set(_BUILDERS))
    if unknown:
        raise ValueError(f"filter config: unknown key(s) {unknown}; known keys are {sorted(_BUILDERS)}")
    filters: list[Filter] = []
    for key, cls in _BUILDERS.items():
        value = cfg.get(key)
        if value is None or value is False or (key in ("min_words", "max_chars") and value == 0):
            continue
        if key in ("min_words", "max_chars"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"filter config: '{key}' must be an integer, got {value!r}")
            filters.append(cls(value))
        elif value is True:
            filters.append(cls())
        elif isinstance(value, dict):
            try:
                filters.append(cls(**value))
            except TypeError as err:
                raise ValueError(f"filter config: bad options for '{key}': {err}") from err
        else:
            raise ValueError(f"filter config: '{key}' must be true/false or a dict of options, got {value!r}")
    return filters


def apply_filters(docs: Iterable[Document], filters: list[Filter], stats: Counter,
                  reasons: Counter | None = None) -> Iterator[Document]:
    """Yield the documents every filter keeps. The first filter that drops a document counts it in
    stats[f"filtered_{name}"] (and, if given, reasons[f"{name}/{reason}"]); kept ones in stats["kept_filters"]."""
    for doc in docs:
        for f in filters:
            why = f.reason(doc)
            if why is not None:
                stats[f"filtered_{f.name}"] += 1
                if reasons is not None:
                    reasons[f"{f.name}/{why}"] += 1
                break
        else:
            stats["kept_filters"] += 1
            yield doc
