"""Quality filters at both sides of every threshold (datatrove's FineWeb values), the filter config, exact dedup and
the train/val split.

Threshold tests switch the step's other rules off, so that each pair of documents shows one rule: the document at
the limit is kept, the one just past it is dropped with that rule's reason.
"""

import math
from collections import Counter

import pytest
from pydantic import ValidationError

from data.cleaning.filters import (
    C4Options,
    C4Quality,
    FineWebQuality,
    GopherQuality,
    GopherQualityOptions,
    GopherRepetition,
    LanguageFilter,
    MaxLength,
    MinLength,
    URLFilter,
    apply_filters,
    build_filters,
    count_sentences,
    sentence_spans,
    split_words,
)
from data.cleaning.split import normalize_for_dedup, split_of, text_hash

PROSE = (
    "The json module can serialize Python objects to a string and read them back again. It is used by many "
    "programs to exchange data with web services, because the format is simple and widely supported.\n"
    "When you call the dumps function, the result is a string that other languages can parse without trouble. "
    "The loads function does the opposite and returns dictionaries, lists and numbers.\n"
    "Errors in the input are reported with the line and column where parsing failed, which makes it easier to "
    "find a missing comma or an extra bracket in a large configuration file that was written by hand."
)
GERMAN = (
    "Die Standardbibliothek von Python ist sehr umfangreich und bietet eine Vielzahl von Modulen an. Diese Seite "
    "erklärt, wie man mit dem Modul für reguläre Ausdrücke arbeitet und welche Fehler dabei häufig auftreten. "
    "Zuerst muss das Modul importiert werden, danach kann man ein Muster kompilieren. Die Funktion sucht dann nach "
    "dem ersten Treffer in der Zeichenkette und gibt ein Objekt zurück. Wenn kein Treffer gefunden wird, ist das "
    "Ergebnis leer, und das Programm sollte diesen Fall prüfen."
)


def doc(text: str, id: str = "d", url: str = "") -> dict:
    return {"id": id, "url": url, "text": text, "source": "test", "meta": {}}


def filler(n_chars: int, prefix: str = "f") -> str:
    """Distinct words ("fa0 fa1 ...") exactly n_chars long: no n-gram, line or word repeats."""
    words, size = [], -1
    while size + len(f"{prefix}a{len(words)}") + 1 <= n_chars:
        words.append(f"{prefix}a{len(words)}")
        size += len(words[-1]) + 1
    text = " ".join(words)
    return text + "z" * (n_chars - len(text))


def lengths_around(chars: int, frac: float) -> tuple[int, int]:
    """Text lengths putting chars / length just above frac (dropped) and at or just below it (kept)."""
    at = math.floor(chars / frac) - 2
    while chars / at > frac:
        at += 1
    return at - 1, at


def test_ordinary_english_prose_passes_every_default_filter():
    filters = build_filters({"url": True, "language": True, "gopher_repetition": True, "gopher_quality": True,
                             "c4": True, "fineweb": True})
    assert [f.name for f in filters] == ["url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb"]
    d = doc(PROSE, url="https://docs.python.org/3/library/json.html")
    assert {f.name: f.reason(d) for f in filters} == {f.name: None for f in filters}


# --- word and sentence splitting ------------------------------------------------------------------------------------

def test_words_split_punctuation_into_tokens_but_keep_numbers_urls_and_dotted_names_whole():
    assert list(split_words("Hello, world... it's 3.14 in os.path (see https://x.org/a).")) == [
        "Hello", ",", "world", "...", "it", "'s", "3.14", "in", "os.path", "(", "see", "https://x.org/a", ")", "."]


@pytest.mark.parametrize("line, n", [
    ("", 0), ("No terminal mark", 1), ("One sentence.", 1), ("One. Two! Three? Four", 4),
    ("Use e.g. this one. Mr. Smith agreed.", 2), ("Pi is 3.14 and os.path is a module.", 1),
    ("Wait... then go.", 1), ('He said "stop." Then left.', 2),
])
def test_count_sentences_splits_after_terminal_marks_but_not_abbreviations_or_numbers(line, n):
    assert count_sentences(line) == n


def test_sentence_spans_cover_the_line_one_sentence_each():
    line = 'One. Mr. Smith said "two!" Then three? Four'
    spans = sentence_spans(line)
    assert [line[a:b].strip() for a, b in spans] == ["One.", 'Mr. Smith said "two!"', "Then three?", "Four"]
    assert spans[0][0] == 0 and spans[-1][1] == len(line)
    assert all(end == start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    assert sentence_spans("   ") == []


# --- URL ------------------------------------------------------------------------------------------------------------

def test_url_blocked_domain_blocks_its_subdomains_but_not_lookalikes():
    f = URLFilter(block_domains=["example.com"])
    assert f.reason(doc("", url="https://example.com/page")) == "blocked_domain"
    assert f.reason(doc("", url="http://a.b.EXAMPLE.com:8080/x")) == "blocked_domain"
    assert f.reason(doc("", url="https://notexample.com/")) is None
    assert f.reason(doc("", url="https://example.com.evil.org/")) is None


def test_url_block_domains_file_reads_one_domain_per_line_with_comments(tmp_path):
    path = tmp_path / "domains"
    path.write_text("# adult list\nbad.example\n\n*.worse.example  # wildcard\n")
    f = URLFilter(block_domains_file=str(path))
    assert f.reason(doc("", url="https://www.bad.example/")) == "blocked_domain"
    assert f.reason(doc("", url="https://x.worse.example/")) == "blocked_domain"
    assert f.reason(doc("", url="https://good.example/")) is None
    with pytest.raises(ValueError, match="missing"):
        URLFilter(block_domains_file=str(tmp_path / "missing"))


def test_url_banned_words_match_whole_tokens_only():
    f = URLFilter()
    assert f.reason(doc("", url="https://site.org/PORN/page")) == "banned_word"
    assert f.reason(doc("", url="https://site.org/history-of-pornography")) is None
    assert f.reason(doc("", url="https://site.org/blog?tag=xxx")) == "banned_word"


def test_url_banned_subwords_match_inside_the_url_without_punctuation():
    f = URLFilter()
    assert f.reason(doc("", url="https://www.pornhubmirror.net/")) == "banned_subword"
    assert f.reason(doc("", url="https://my-porn-hub.net/")) == "banned_word"  # 'porn' is a whole token here
    assert f.reason(doc("", url="https://x.org/free-sex-video")) == "banned_subword"


def test_url_soft_banned_words_drop_at_the_threshold_count():
    assert URLFilter().reason(doc("", url="https://shop.org/sexy-nude-shoes")) == "soft_banned_words"
    assert URLFilter().reason(doc("", url="https://shop.org/sexy-shoes")) is None
    assert URLFilter(soft_word_threshold=3).reason(doc("", url="https://shop.org/sexy-nude-shoes")) is None


def test_url_extra_lists_add_to_the_defaults_and_defaults_can_be_turned_off():
    f = URLFilter(banned_words=["Casino-Royale"], banned_subwords=["spamspam"], block_urls=["https://a.org/x"])
    assert f.reason(doc("", url="https://a.org/casinoroyale")) == "banned_word"
    assert f.reason(doc("", url="https://a.org/eggspamspamham")) == "banned_subword"
    assert f.reason(doc("", url="https://a.org/x")) == "blocked_url"
    assert f.reason(doc("", url="https://a.org/porn")) == "banned_word"
    assert URLFilter(default_lists=False).reason(doc("", url="https://a.org/porn")) is None


def test_url_missing_or_malformed_urls_are_kept():
    f = URLFilter(block_domains=["example.com"])
    assert f.reason(doc("", url="")) is None
    assert f.reason(doc("", url="http://[::1/porn-not-parsed")) is None
    assert f.reason(doc("", url="not a url at all")) is None


# --- Gopher repetition ----------------------------------------------------------------------------------------------

REPETITION_OFF = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
                      top_n_grams=(), dup_n_grams=())


def repetition(**rule) -> GopherRepetition:
    return GopherRepetition(**{**REPETITION_OFF, **rule})


def test_gopher_repetition_defaults_are_fineweb_values():
    f = GopherRepetition()
    assert (f.dup_line_frac, f.dup_para_frac, f.dup_line_char_frac, f.dup_para_char_frac) == (0.3, 0.3, 0.2, 0.2)
    assert f.top_n_grams == ((2, 0.2), (3, 0.18), (4, 0.16))
    assert f.dup_n_grams == ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


@pytest.mark.parametrize("sep, rule, reason", [("\n\n", "dup_para_frac", "dup_para_frac"),
                                               ("\n", "dup_line_frac", "dup_line_frac")])
def test_gopher_duplicate_paragraph_and_line_fractions(sep, rule, reason):
    f = repetition(**{rule: 0.3})
    unique = [f"unique {i}" for i in range(10)]
    assert f.reason(doc(sep.join(unique[:5] + ["again"] * 5))) == reason  # 4 repeats of 10
    assert f.reason(doc(sep.join(unique[:6] + ["again"] * 4))) is None  # 3 of 10: at the limit


@pytest.mark.parametrize("sep, rule, reason", [("\n\n", "dup_para_char_frac", "dup_para_char_frac"),
                                               ("\n", "dup_line_char_frac", "dup_line_char_frac")])
def test_gopher_duplicate_paragraph_and_line_character_fractions(sep, rule, reason):
    f = repetition(**{rule: 0.2})
    repeated = "r" * 20  # counted once, over len(text)
    above, at = lengths_around(20, 0.2)
    for length, expected in ((above, reason), (at, None)):
        text = sep.join([repeated, filler(length - 40 - 2 * len(sep)), repeated])
        assert len(text) == length
        assert f.reason(doc(text)) == expected


@pytest.mark.parametrize("n, frac, phrase", [(2, 0.2, "buy now"), (3, 0.18, "buy it now"),
                                             (4, 0.16, "buy it right now")])
def test_gopher_top_ngram_character_fraction(n, frac, phrase):
    f = repetition(top_n_grams=((n, frac),))
    start = " ".join([phrase] * 4) + " "
    above, at = lengths_around(4 * len(phrase), frac)
    for length, expected in ((above, f"top_{n}_gram"), (at, None)):
        text = start + filler(length - len(start))
        assert len(text) == length
        assert f.reason(doc(text)) == expected


DUP_PHRASES = {5: "alpha beta gamma delta omega", 6: "one two three four five six",
               7: "a bb ccc dddd eeeee ffffff ggggggg", 8: "the cat sat on the red mat today",
               9: "we will meet at nine near the old bridge", 10: "every good boy does fine when the sun is up"}


@pytest.mark.parametrize("n, frac", [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])
def test_gopher_duplicated_ngram_character_fraction(n, frac):
    f = repetition(dup_n_grams=((n, frac),))
    phrase = DUP_PHRASES[n]
    assert len(phrase.split()) == n
    chars = len(phrase.replace(" ", ""))  # the second copy's words, without spaces, over len(text)
    above, at = lengths_around(chars, frac)
    for length, expected in ((above, f"duplicated_{n}_n_grams"), (at, None)):
        text = f"{phrase} {filler(length - 2 * len(phrase) - 2)} {phrase}"
        assert len(text) == length
        assert f.reason(doc(text)) == expected


def test_gopher_duplicated_ngrams_skip_past_each_repeat():
    # "a b c d e" x3: the 2nd copy counts 5 chars, the scan jumps over it, the 3rd copy counts 5 more.
    words = "a b c d e a b c d e a b c d e".split()
    from data.cleaning.filters import _duplicated_ngram_chars, _joined_ngrams
    assert _duplicated_ngram_chars(_joined_ngrams(words, 5), 5) == 10


def test_gopher_repetition_drops_empty_text_and_real_repetitive_pages():
    assert GopherRepetition().reason(doc("")) == "empty"
    assert GopherRepetition().reason(doc("\n".join(["Subscribe to our newsletter today"] * 6 + [PROSE]))) == \
        "dup_line_frac"
    assert GopherRepetition().reason(doc(PROSE + "\n" + PROSE.replace("\n", " "))) == "duplicated_5_n_grams"


# --- Gopher quality -------------------------------------------------------------------------------------------------

QUALITY_OFF = dict(min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
                   max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
                   min_alpha_words_ratio=None, min_stop_words=None)


def quality(**rule) -> GopherQuality:
    return GopherQuality(**{**QUALITY_OFF, **rule})


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def test_gopher_quality_defaults_are_fineweb_values():
    f = GopherQuality()
    assert (f.min_doc_words, f.max_doc_words, f.min_avg_word_length, f.max_avg_word_length) == (50, 100_000, 3, 10)
    assert (f.max_symbol_word_ratio, f.max_bullet_lines_ratio, f.max_ellipsis_lines_ratio) == (0.1, 0.9, 0.3)
    assert (f.min_alpha_words_ratio, f.min_stop_words) == (0.8, 2)
    assert f.stop_words == {"the", "be", "to", "of", "and", "that", "have", "with"}


def test_gopher_min_words_counts_words_not_punctuation_tokens():
    f = quality(min_doc_words=50)
    assert f.reason(doc(words(49) + " . -- !")) == "gopher_short_doc"
    assert f.reason(doc(words(50))) is None


def test_gopher_max_words():
    f = quality(max_doc_words=100_000)
    assert f.reason(doc(words(100_001, "w"))) == "gopher_long_doc"
    assert f.reason(doc(words(100_000, "w"))) is None


def test_gopher_mean_word_length_bounds():
    f = quality(min_avg_word_length=3, max_avg_word_length=10)
    assert f.reason(doc(words(49, "abc") + " ab")) == "gopher_below_avg_threshold"
    assert f.reason(doc(words(50, "abc") + " , .")) is None  # punctuation tokens do not lower the mean
    assert f.reason(doc(words(49, "abcdefghij") + " abcdefghijk")) == "gopher_above_avg_threshold"
    assert f.reason(doc(words(50, "abcdefghij"))) is None


def test_gopher_hash_and_ellipsis_per_token_ratios():
    f = quality(max_symbol_word_ratio=0.1)
    assert f.reason(doc(words(7) + " #tag")) == "gopher_too_many_hashes"  # 1 '#' / 9 tokens
    assert f.reason(doc(words(8) + " #tag")) is None  # 1 / 10
    assert f.reason(doc(words(8) + "…")) == "gopher_too_many_ellipsis"  # 1 / 9
    assert f.reason(doc(words(9) + "...")) is None  # 1 / 10


def test_gopher_bullet_lines_ratio():
    f = quality(max_bullet_lines_ratio=0.9)
    assert f.reason(doc("\n".join(["- item"] * 91 + ["text"] * 9))) == "gopher_too_many_bullets"
    assert f.reason(doc("\n".join(["• item"] * 90 + ["text"] * 10))) is None


def test_gopher_end_ellipsis_lines_ratio():
    f = quality(max_ellipsis_lines_ratio=0.3)
    assert f.reason(doc("\n".join(["read more..."] * 31 + ["text"] * 69))) == "gopher_too_many_end_ellipsis"
    assert f.reason(doc("\n".join(["read more…"] * 30 + ["text"] * 70))) is None


def test_gopher_alphabetic_tokens_ratio_counts_punctuation_as_non_alphabetic():
    f = quality(min_alpha_words_ratio=0.8)
    assert f.reason(doc(words(79) + " 1" * 21)) == "gopher_below_alpha_threshold"
    assert f.reason(doc(words(80) + " 1" * 20)) is None
    assert f.reason(doc(words(80) + " ," * 21)) == "gopher_below_alpha_threshold"


def test_gopher_stop_words_are_distinct_and_case_sensitive():
    f = quality(min_stop_words=2)
    assert f.reason(doc("the cat and the dog")) is None
    assert f.reason(doc("the cat the dog the end")) == "gopher_enough_stop_words"
    assert f.reason(doc("The cat And the dog")) == "gopher_enough_stop_words"


# --- C4 -------------------------------------------------------------------------------------------------------------

FIVE_SENTENCES = "One two three. Four five six. Seven eight nine. Ten eleven twelve. Thirteen fourteen fifteen."


def test_c4_removes_lines_and_returns_a_rewritten_copy():
    text = "\n".join([
        "Welcome to the page about cats.",
        "Menu",  # fewer than 3 words
        "Please enable JavaScript to see the comments.",
        "Read our privacy policy before you continue.",
        "Cats sleep a lot[1] and they purr[citation needed] when happy.",
        "",
        FIVE_SENTENCES,
    ])
    d = doc(text)
    c4 = C4Quality()
    out = c4.apply(d)
    assert out["text"] == ("Welcome to the page about cats.\nCats sleep a lot and they purr when happy.\n"
                           + FIVE_SENTENCES)
    assert d["text"] == text  # the input is not modified
    assert c4.counts == Counter({"line_too_few_words": 2, "line_javascript": 1, "line_policy": 1})


def test_c4_min_words_per_line():
    c4 = C4Quality(min_sentences=None)
    assert c4.apply(doc("two words\nthree words here"))["text"] == "three words here"
    assert C4Quality(min_sentences=None, min_words_per_line=None).apply(doc("two words\n\nok"))["text"] == \
        "two words\n\nok"


def test_c4_max_word_length_removes_the_line():
    c4 = C4Quality(min_sentences=None)
    assert c4.apply(doc(f"a long {'x' * 1001} word\nkeep this line"))["text"] == "keep this line"
    assert c4.apply(doc(f"a long {'x' * 1000} word"))["text"] == f"a long {'x' * 1000} word"


def test_c4_too_few_sentences_after_line_removal():
    assert C4Quality().apply(doc(FIVE_SENTENCES))["text"] == FIVE_SENTENCES
    four = FIVE_SENTENCES.rsplit(" Thirteen", 1)[0]
    assert C4Quality().apply(doc(four)) == "too_few_sentences"
    assert C4Quality().apply(doc(four + "\nEnable javascript for the fifth one.")) == "too_few_sentences"
    assert C4Quality(min_sentences=None).apply(doc(four))["text"] == four


def test_c4_lorem_ipsum_and_curly_brackets_drop_the_document():
    assert C4Quality().apply(doc(FIVE_SENTENCES + "\nLorem ipsum dolor sit amet.")) == "lorem_ipsum"
    assert C4Quality().apply(doc(FIVE_SENTENCES + "\nUse d = {'a': 1} here.")) == "curly_bracket"
    kept = C4Quality(curly_bracket=False).apply(doc(FIVE_SENTENCES + "\nUse d = {'a': 1} here."))
    assert kept["text"].endswith("Use d = {'a': 1} here.")
    # only lines that survive the line rules count: a lone brace line is removed first
    assert C4Quality().apply(doc(FIVE_SENTENCES + "\n{"))["text"] == FIVE_SENTENCES


def test_c4_each_rule_can_be_turned_off():
    text = "\n".join([FIVE_SENTENCES, "Please enable JavaScript now.", "We use cookies on this site.",
                      "Cats purr[1] softly."])
    out = C4Quality(javascript=False, policy=False, remove_citations=False).apply(doc(text))
    assert out["text"] == text
    assert C4Quality(lorem_ipsum=False).apply(doc(FIVE_SENTENCES + "\nlorem ipsum dolor sit")) != "lorem_ipsum"


def test_c4_terminal_punctuation_rule_is_off_as_in_fineweb_and_can_be_turned_on():
    text = FIVE_SENTENCES + "\nno final mark here\nends with dots..."
    assert C4Quality().apply(doc(text))["text"] == text
    assert C4Quality(terminal_punct=True).apply(doc(text))["text"] == FIVE_SENTENCES


# --- FineWeb --------------------------------------------------------------------------------------------------------

FINEWEB_OFF = dict(line_punct_thr=0.0, short_line_thr=1.0, char_duplicates_ratio=1.0, new_line_ratio=100.0)


def fineweb(**rule) -> FineWebQuality:
    return FineWebQuality(**{**FINEWEB_OFF, **rule})


def long_line(i: int, end: str = "") -> str:
    return f"this is line number {i} of a fairly long page{end}"


def test_fineweb_defaults_are_datatrove_values():
    f = FineWebQuality()
    assert (f.line_punct_thr, f.line_punct_exclude_zero, f.short_line_thr, f.short_line_length) == \
        (0.12, False, 0.67, 30)
    assert (f.char_duplicates_ratio, f.new_line_ratio) == (0.01, 0.3)


def test_fineweb_line_punctuation_ratio():
    f = fineweb(line_punct_thr=0.12)
    lines = lambda k: "\n".join(long_line(i, "." if i < k else "") for i in range(100))
    assert f.reason(doc(lines(11))) == "line_punct_ratio"
    assert f.reason(doc(lines(12))) is None
    assert fineweb(line_punct_thr=0.12, line_punct_exclude_zero=True).reason(doc(lines(0))) is None
    assert f.reason(doc(lines(0))) == "line_punct_ratio"


def test_fineweb_short_line_ratio():
    f = fineweb(short_line_thr=0.67)
    lines = lambda k: "\n".join((f"short {i}" if i < k else long_line(i)) for i in range(100))
    assert f.reason(doc(lines(68))) == "short_line_ratio"
    assert f.reason(doc(lines(67))) is None
    assert f.reason(doc("\n".join(f"{i:03d}" + "y" * 27 for i in range(100)))) == "short_line_ratio"  # 30 chars
    assert f.reason(doc("\n".join(f"{i:03d}" + "y" * 28 for i in range(100)))) is None  # 31 chars


def test_fineweb_duplicated_line_characters_ratio():
    f = fineweb(char_duplicates_ratio=0.01)
    repeated = "r" * 31  # its second copy counts, over the characters outside newlines
    above, at = lengths_around(31, 0.01)
    for length, expected in ((above, "char_dup_ratio"), (at, None)):
        text = "\n".join([repeated, filler(length - 62), repeated])
        assert len(text) - text.count("\n") == length
        assert f.reason(doc(text)) == expected


def test_fineweb_newlines_per_word_ratio():
    f = fineweb(new_line_ratio=0.3)
    assert f.reason(doc("a b\nc d e\nf g h\ni j")) is None  # 3 newlines / 10 words
    assert f.reason(doc("a b\nc d\ne f g\nh i")) == "list_ratio"  # 3 / 9


def test_fineweb_empty_text():
    assert FineWebQuality().reason(doc(" \n\n ")) == "empty"


# --- length bounds --------------------------------------------------------------------------------------------------

def test_min_and_max_length():
    assert MinLength(min_words=50).reason(doc(words(49))) == "too_few_words"
    assert MinLength(min_words=50).reason(doc(words(50))) is None
    assert MaxLength(max_chars=100).reason(doc("x" * 101)) == "too_many_chars"
    assert MaxLength(max_chars=100).reason(doc("x" * 100)) is None


# --- config and the runner ------------------------------------------------------------------------------------------

def test_build_filters_orders_steps_as_fineweb_whatever_the_key_order():
    filters = build_filters({"max_chars": 1000, "min_words": 20, "fineweb": True, "c4": {"curly_bracket": False},
                             "gopher_quality": False, "gopher_repetition": True, "language": None,
                             "url": {"block_domains": ["spam.example"]}})
    assert [f.name for f in filters] == ["url", "gopher_repetition", "c4", "fineweb", "min_length", "max_length"]
    assert filters[0].block_domains == {"spam.example"} and filters[2].curly_bracket is False
    assert filters[-2].min_words == 20 and filters[-1].max_chars == 1000
    assert [f.name for f in build_filters({"min_words": 0, "max_chars": 5, "c4": C4Options()})] == ["c4", "max_length"]


def test_build_filters_accepts_yaml_lists_for_ngram_thresholds():
    f = build_filters({"gopher_repetition": {"dup_n_grams": [[5, 0.25], [6, 0.24]]}})[0]
    assert f.dup_n_grams == ((5, 0.25), (6, 0.24))


@pytest.mark.parametrize("steps, where", [
    ({"gopher_qualty": True}, "gopher_qualty"),
    ({"c4": {"no_such_option": 1}}, "c4.no_such_option"),
    ({"gopher_quality": {"min_doc_words": "fifty"}}, "gopher_quality.min_doc_words"),
    ({"language": {"languages": ["xx"]}}, "language.languages"),
    ({"min_words": "fifty"}, "min_words"),
    ({"max_chars": True}, "max_chars"),  # strict: true must not quietly mean a limit of 1
    ({"fineweb": "yes"}, "fineweb"),
    ({"gopher_repetition": {"dup_n_grams": [[0, 0.1]]}}, "gopher_repetition.dup_n_grams.0.0"),
    ({"url": {"block_domains": "spam.example"}}, "url.block_domains"),  # a string is not a list of domains
])
def test_build_filters_names_the_bad_key_or_option(steps, where):
    with pytest.raises(ValidationError) as err:
        build_filters(steps)
    assert [".".join(map(str, e["loc"])) for e in err.value.errors()] == [where]


def test_a_step_takes_its_options_model_or_changes_to_its_defaults():
    assert GopherQuality().options == GopherQualityOptions()  # the defaults live in the options model only
    assert GopherQuality(min_doc_words=10).min_doc_words == 10
    base = GopherQualityOptions(min_stop_words=None)
    f = GopherQuality(base, min_doc_words=10)
    assert (f.min_doc_words, f.min_stop_words, f.max_doc_words) == (10, None, 100_000)
    assert base.min_doc_words == 50  # the options given are not changed
    with pytest.raises(ValidationError, match="min_doc_wordz"):
        GopherQuality(min_doc_wordz=10)
    with pytest.raises(TypeError, match="GopherQualityOptions"):
        GopherQuality(C4Options())


def test_apply_filters_passes_rewritten_documents_on_and_counts_the_first_drop():
    c4_noise = PROSE + "\nPlease enable JavaScript to comment on this page."
    short = "This is a short English sentence about the weather we had in London today."
    docs = [doc(c4_noise, "good", "https://docs.example/json"), doc(short, "short"), doc(GERMAN, "german"),
            doc(PROSE, "blocked", "https://porn.example/x")]
    stats, reasons = Counter(), Counter()
    filters = build_filters({"url": True, "language": True, "c4": True, "min_words": 50})
    kept = list(apply_filters(docs, filters, stats, reasons))
    assert [d["id"] for d in kept] == ["good"]
    assert kept[0]["text"] == PROSE and kept[0]["meta"]["language"] == "en"
    assert docs[0]["text"] == c4_noise and docs[0]["meta"] == {}
    assert stats == Counter({"kept_filters": 1, "filtered_url": 1, "filtered_language": 1, "filtered_c4": 1})
    assert reasons == Counter({"url/banned_word": 1, "language/language_not_kept": 1, "c4/too_few_sentences": 1})


def test_language_filter_is_built_once_per_process():
    from data.cleaning import langid
    LanguageFilter()
    before = langid.identifier.cache_info().misses
    LanguageFilter(languages="fr")
    assert langid.identifier.cache_info().misses == before


# --- dedup and split ------------------------------------------------------------------------------------------------

def test_normalize_for_dedup_ignores_case_punctuation_digits_and_spacing():
    assert normalize_for_dedup("Hello,   World!\n2024 edition") == normalize_for_dedup("hello world - 2025 EDITION")
    assert normalize_for_dedup("Hello, World!") == "hello world"


def test_the_exact_dedup_key_matches_a_recased_copy_only():
    assert text_hash(PROSE) == text_hash(PROSE.upper())
    assert text_hash(PROSE) != text_hash(GERMAN)


def test_split_is_stable_and_close_to_the_requested_fraction():
    ids = [f"urn:uuid:{i}" for i in range(4000)]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    assert 0.08 < splits.count("val") / len(ids) < 0.12
    assert splits != [split_of(i, 0.1, seed=1) for i in ids]
    assert {split_of(i, 0.0) for i in ids[:50]} == {"train"} and {split_of(i, 1.0) for i in ids[:50]} == {"val"}
