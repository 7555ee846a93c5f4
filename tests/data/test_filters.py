"""Quality filters (one example per rule), the filter config, exact dedup and the train/val split."""

from collections import Counter

import pytest

from data.dedup import ExactDedup, normalize_for_dedup, split_of
from data.filters import (
    C4Like, GopherQuality, GopherRepetition, MaxLength, MinLength, NonEnglishHeuristic, apply_filters, build_filters,
)

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


def doc(text: str, id: str = "d") -> dict:
    return {"id": id, "url": "", "text": text, "source": "test", "meta": {}}


ALL = [MinLength(), MaxLength(), GopherRepetition(), GopherQuality(), C4Like(), NonEnglishHeuristic()]


def test_ordinary_english_prose_passes_every_filter():
    assert {f.name: f.reason(doc(PROSE)) for f in ALL} == {f.name: None for f in ALL}


def test_min_and_max_length():
    assert MinLength(min_words=50).reason(doc("too short to be a page")) == "too_few_words"
    assert MaxLength(max_chars=100).reason(doc("x" * 101)) == "too_many_chars"
    assert MaxLength(max_chars=100).reason(doc("x" * 100)) is None


@pytest.mark.parametrize("text, reason", [
    ("\n".join(["Subscribe to our newsletter today"] * 6 + [PROSE]), "dup_line_frac"),
    ("\n\n".join([PROSE.split("\n")[0]] * 3 + [PROSE]), "dup_para_frac"),
    (PROSE + "\n" + " ".join(["buy cheap"] * 60), "top_2_gram"),
    (PROSE + "\n" + PROSE.replace("\n", " "), "dup_5_gram"),  # the same text again, reflowed: no duplicate line
])
def test_gopher_repetition_drops_repetitive_text(text, reason):
    assert GopherRepetition().reason(doc(text)) == reason


@pytest.mark.parametrize("text, reason", [
    ("the cat and the dog " * 5, "gopher_short_doc"),
    ("the of and to be " * 30, "gopher_below_avg_word_length"),
    ("the internationalization of administrative responsibilities with characteristically " * 10,
     "gopher_above_avg_word_length"),
    (PROSE + " #tag" * 30, "gopher_too_many_symbols"),
    ("\n".join(f"- item number {i} of the list with to and of" for i in range(40)), "gopher_too_many_bullets"),
    ("\n".join(f"read more about the story of line {i} in the weekly letter for all our readers ..."
               for i in range(40)), "gopher_too_many_end_ellipsis"),
    (PROSE + " " + " ".join(str(i) for i in range(1000, 1100)), "gopher_below_alpha_threshold"),
    ("python module function value return string object class method list " * 8, "gopher_enough_stop_words"),
])
def test_gopher_quality_rules(text, reason):
    assert GopherQuality().reason(doc(text)) == reason


def test_c4_drops_lorem_ipsum_javascript_walls_and_brace_heavy_text_but_keeps_code_mentions():
    c4 = C4Like()
    assert c4.reason(doc(PROSE + " Lorem ipsum dolor sit amet.")) == "lorem_ipsum"
    assert c4.reason(doc("Please enable JavaScript to view this site. Coming soon!")) == "javascript_notice"
    assert c4.reason(doc('{"a": {"b": {"c": [1, 2, {"d": {}}]}}} ' * 20)) == "curly_bracket"
    assert c4.reason(doc(PROSE + " JSON stands for JavaScript Object Notation. For example {'a': 1}.")) is None


def test_english_heuristic_drops_german_and_keeps_english():
    english = NonEnglishHeuristic()
    assert english.reason(doc(GERMAN)) == "not_english"
    assert english.reason(doc(PROSE)) is None


def test_build_filters_reads_the_config_and_names_unknown_keys():
    filters = build_filters({"min_words": 20, "max_chars": 1000, "gopher_repetition": True, "gopher_quality": False,
                             "c4": {"max_curly_ratio": 0.5}, "english": True})
    assert [f.name for f in filters] == ["min_length", "max_length", "english", "gopher_repetition", "c4"]
    assert filters[0].min_words == 20 and filters[-1].max_curly_ratio == 0.5
    with pytest.raises(ValueError, match="'gopher_qualty'"):
        build_filters({"gopher_qualty": True})
    with pytest.raises(ValueError, match="bad options for 'c4'"):
        build_filters({"c4": {"no_such_option": 1}})


def test_apply_filters_counts_only_the_first_filter_that_drops():
    docs = [doc(PROSE, "good"), doc("short", "short"), doc(GERMAN, "german"), doc("Lorem ipsum " * 60, "lorem")]
    stats, reasons = Counter(), Counter()
    kept = list(apply_filters(docs, build_filters({"min_words": 50, "english": True, "c4": True}), stats, reasons))
    assert [d["id"] for d in kept] == ["good"]
    assert stats == Counter({"kept_filters": 1, "filtered_min_length": 1, "filtered_english": 2})
    assert reasons["english/not_english"] == 2  # lorem ipsum is not English either, and english runs before c4


def test_normalize_for_dedup_ignores_case_punctuation_digits_and_spacing():
    assert normalize_for_dedup("Hello,   World!\n2024 edition") == normalize_for_dedup("hello world - 2025 EDITION")
    assert normalize_for_dedup("Hello, World!") == "hello world"


def test_exact_dedup_flags_second_copy_only():
    dedup = ExactDedup()
    assert not dedup.is_duplicate(PROSE)
    assert dedup.is_duplicate(PROSE.upper())
    assert not dedup.is_duplicate(GERMAN)
    assert len(dedup) == 2


def test_split_is_stable_and_close_to_the_requested_fraction():
    ids = [f"urn:uuid:{i}" for i in range(4000)]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    assert 0.08 < splits.count("val") / len(ids) < 0.12
    assert splits != [split_of(i, 0.1, seed=1) for i in ids]
    assert {split_of(i, 0.0) for i in ids[:50]} == {"train"} and {split_of(i, 1.0) for i in ids[:50]} == {"val"}
