"""Language identification (py3langid, shipped model) and the language filter: FineWeb keeps en > 0.65."""

import socket

import pytest

from data.cleaning import langid
from data.cleaning.filters import LanguageFilter

ENGLISH = ("The json module can serialize Python objects to a string and read them back again. It is used by many "
           "programs to exchange data with web services, because the format is simple and widely supported.")
FRENCH = ("La bibliothèque standard de Python est très riche et propose de nombreux modules. Cette page explique "
          "comment utiliser le module de journalisation et quelles erreurs apparaissent souvent.")
GERMAN = ("Die Standardbibliothek von Python ist sehr umfangreich und bietet eine Vielzahl von Modulen an. Diese "
          "Seite erklärt, wie man mit dem Modul für reguläre Ausdrücke arbeitet.")
JAPANESE = ("Pythonの標準ライブラリは非常に充実しており、多くのモジュールを提供しています。このページでは、"
            "正規表現モジュールの使い方と、よくある間違いについて説明します。")
CODE = "def f(x):\n    return {k: v for k, v in x.items() if v}\n\nfor i in range(10):\n    print(f({i: i * 2}))\n"
CODE_WITH_NAMES = ("import os\nimport sys\n\nx = os.path.join(sys.argv[1], 'a.txt')\nwith open(x) as fh:\n"
                   "    data = fh.read()\n")


def doc(text: str) -> dict:
    return {"id": "d", "url": "", "text": text, "source": "test", "meta": {"source_meta": 1}}


@pytest.mark.parametrize("text, lang", [(ENGLISH, "en"), (FRENCH, "fr"), (GERMAN, "de"), (JAPANESE, "ja")])
def test_detect_names_the_language_with_high_probability(text, lang):
    found, score = langid.detect(text)
    assert found == lang and score > 0.99


def test_scores_are_normalised_probabilities():
    scores = langid.language_scores(ENGLISH)
    assert scores[0][0] == "en"
    assert sum(s for _, s in scores) == pytest.approx(1.0, abs=1e-4)
    assert [s for _, s in scores] == sorted((s for _, s in scores), reverse=True)


def test_english_is_kept_with_its_language_recorded_in_a_copy():
    d = doc(ENGLISH)
    out = LanguageFilter().apply(d)
    assert out["meta"] == {"source_meta": 1, "language": "en", "language_score": pytest.approx(1.0, abs=1e-3)}
    assert d["meta"] == {"source_meta": 1}
    assert out["text"] is d["text"]


@pytest.mark.parametrize("text", [FRENCH, GERMAN, JAPANESE, CODE])
def test_other_languages_and_code_are_not_kept(text):
    assert LanguageFilter().apply(doc(text)) == "language_not_kept"


def test_code_that_looks_a_little_english_is_below_the_threshold():
    lang, score = langid.detect(CODE_WITH_NAMES)
    assert lang == "en" and score < 0.65
    assert LanguageFilter().reason(doc(CODE_WITH_NAMES)) == "language_below_threshold"


def test_threshold_is_strict_as_in_datatrove():
    _, score = langid.detect(CODE_WITH_NAMES)
    assert LanguageFilter(min_score=score - 1e-6).reason(doc(CODE_WITH_NAMES)) is None
    assert LanguageFilter(min_score=score).reason(doc(CODE_WITH_NAMES)) == "language_below_threshold"


def test_fineweb_defaults_and_other_language_lists():
    f = LanguageFilter()
    assert (f.languages, f.min_score, f.max_chars) == (["en"], 0.65, langid.DEFAULT_MAX_CHARS)
    assert LanguageFilter(languages="fr").reason(doc(FRENCH)) is None
    assert LanguageFilter(languages=["en", "de"]).reason(doc(GERMAN)) is None
    assert LanguageFilter(languages=None).reason(doc(JAPANESE)) is None
    assert LanguageFilter(languages=None).reason(doc(CODE)) == "language_below_threshold"


def test_unknown_language_codes_are_refused():
    with pytest.raises(ValueError, match="'english'"):
        LanguageFilter(languages=["english"])


def test_only_the_first_max_chars_are_classified():
    text = ENGLISH + " " + FRENCH * 20
    assert langid.detect(text, max_chars=len(ENGLISH))[0] == "en"
    assert langid.detect(text, max_chars=0)[0] == "fr"
    assert LanguageFilter(max_chars=len(ENGLISH)).reason(doc(text)) is None


def test_the_model_loads_once_and_without_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("py3langid tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    langid.identifier.cache_clear()
    assert langid.detect(ENGLISH)[0] == "en"
    first = langid.identifier()
    LanguageFilter()
    LanguageFilter(languages="de")
    assert langid.identifier() is first
    assert langid.identifier.cache_info().misses == 1
