"""The search index (data/search): passages, BM25 ranking, save/load, a user's folder of files, and the search tool
as the toolbox runs it."""

import json
import subprocess
import sys

import pytest

from data.search import NotAnIndex, Passage, SearchIndex, SearchTool, format_results, split_passages
from model.tools import ToolLimits, make_toolbox

PAGES = [
    ("https://docs.python.org/3/library/json.html",
     "JSON encoder and decoder. The json module exposes an API familiar to users of the marshal and pickle modules. "
     "Use dumps to serialize an object to a JSON formatted string and loads to deserialize a string. The indent "
     "argument pretty-prints arrays and objects with that many spaces; sort_keys orders the keys of dictionaries."),
    ("https://docs.python.org/3/library/csv.html",
     "CSV file reading and writing. The csv module implements classes to read and write tabular data in comma "
     "separated values format. A reader iterates over lines in the given file; a writer converts the user's data "
     "into delimited strings. Dialects describe the delimiter, the quote character and how lines end."),
    ("https://docs.python.org/3/library/heapq.html",
     "Heap queue algorithm. This module provides an implementation of the heap queue algorithm, also known as the "
     "priority queue algorithm. Heaps are binary trees for which every parent node has a value less than or equal to "
     "any of its children. heappush pushes an item onto the heap, heappop pops the smallest item."),
    ("https://example.org/travel/rivers/",
     "Rivers of the north. The Tay is the longest river in Scotland and carries more water than any other river in "
     "Britain. Salmon climb its weirs in spring, and ferries once crossed it at Dundee before the bridges were built. "
     "Kayakers paddle the upper reaches below the loch when the snowmelt is high."),
]
DOCS = [{"url": url, "text": text} for url, text in PAGES]
LONG = " ".join(f"w{i}" for i in range(130))  # a page of 130 distinct words


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex.build(DOCS + [{"url": "https://example.org/long", "title": "Counting", "text": LONG}],
                             passage_words=20, overlap_words=5)


def test_a_distinctive_query_finds_its_page_first(index):
    best = index.search("salmon weirs ferries")[0]
    assert best.url == "https://example.org/travel/rivers/" and "Salmon climb its weirs" in best.text
    assert index.search("priority queue smallest item")[0].url.endswith("heapq.html")


def test_results_come_best_first_with_one_passage_per_page(index):
    found = index.search("module read write json csv", k=5)
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert len({p.url for p in found}) == len(found) >= 2


def test_pages_are_cut_into_overlapping_passages_from_their_beginning():
    passages = split_passages(LONG, passage_words=50, overlap_words=10)
    assert [p.split()[0] for p in passages] == ["w0", "w40", "w80"]
    assert passages[0].split()[-10:] == passages[1].split()[:10]
    assert passages[-1].split()[-1] == "w129" and len(passages[0].split()) == 50
    assert split_passages("just five words right here", 50, 10) == ["just five words right here"]
    with pytest.raises(ValueError, match="overlap_words"):
        split_passages(LONG, passage_words=10, overlap_words=10)


def test_a_passage_keeps_its_page_url_and_the_title_taken_from_the_url(index):
    (found,) = index.search("pretty-prints indent", k=1)
    assert found == Passage("https://docs.python.org/3/library/json.html", "json", found.text, found.score)
    assert index.search("rivers", k=1)[0].title == "rivers"  # the last segment of a URL ending in '/'
    assert index.search("counting", k=1)[0].title == "Counting"  # a given title is kept
    # pages of 53, 50, 53, 53 and 130 words, in passages of 20 words starting every 15
    assert (index.documents, len(index)) == (5, 4 + 3 + 4 + 4 + 9)


def test_a_query_of_stopwords_unknown_words_or_nothing_finds_nothing(index):
    assert index.search("the of and it is") == []
    assert index.search("zyzzyva quokka") == []
    assert index.search("") == [] and index.search("   ") == []
    assert SearchIndex.build([]).search("json") == []


def test_the_same_documents_give_the_same_index(tmp_path):
    a, b = SearchIndex.build(DOCS), SearchIndex.build(list(DOCS))
    for query in ("json string", "river water", "read lines"):
        assert a.search(query, k=3) == b.search(query, k=3)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_a_saved_index_loads_with_the_same_results(index, tmp_path):
    index.save(tmp_path / "ix")
    loaded = SearchIndex.load(tmp_path / "ix")
    assert (loaded.documents, len(loaded)) == (index.documents, len(index))
    for query in ("salmon", "json dumps indent", "heap parent node children", "w64 w65", "the"):
        assert loaded.search(query, k=3) == index.search(query, k=3)


def test_a_folder_that_is_not_an_index_is_named_in_the_error(tmp_path):
    with pytest.raises(NotAnIndex, match=str(tmp_path / "none")):
        SearchIndex.load(tmp_path / "none")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(NotAnIndex, match=f"{tmp_path / 'notes'}.*no index.json"):
        SearchIndex.load(tmp_path / "notes")


CRASHING_SAVE = """
import os, sys
import data.search.index as ix

real = ix._write_jsonl
def write_then_die(path, rows):
    real(path, rows)
    if path.name == "passages.jsonl":
        os._exit(3)  # killed half-way: nothing cleans up
ix._write_jsonl = write_then_die
docs = [{"url": "https://new.example/page", "text": "a newer page about zeppelins " * 20}]
ix.SearchIndex.build(docs).save(sys.argv[1])
"""


def crash_while_saving(folder) -> None:
    done = subprocess.run([sys.executable, "-c", CRASHING_SAVE, str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr


def test_an_interrupted_save_leaves_nothing_that_loads(tmp_path):
    crash_while_saving(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and (leftovers[0] / "passages.jsonl").exists()  # the crash came late in the save
    for folder in [tmp_path / "ix", *leftovers]:
        with pytest.raises(NotAnIndex):
            SearchIndex.load(folder)


def test_an_interrupted_save_over_an_index_keeps_the_old_one(index, tmp_path):
    index.save(tmp_path / "ix")
    crash_while_saving(tmp_path / "ix")
    kept = SearchIndex.load(tmp_path / "ix")
    assert kept.search("salmon", k=1)[0].url == "https://example.org/travel/rivers/"
    assert kept.search("zeppelins") == []


def test_a_folder_of_files_is_indexed_and_what_cannot_be_read_is_listed(tmp_path):
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "kayak.md").write_text("# Kayaking\n\nAlways carry a spare paddle and a whistle.\n")
    (tmp_path / "tea.txt").write_text("Oolong tea is partly oxidised, between green and black tea.")
    (tmp_path / "page.html").write_text(
        "<html><head><title>Bread</title></head><body><article><h1>Sourdough</h1><p>A sourdough starter is flour "
        "and water fermented by wild yeast and lactobacilli; feed it daily and keep it warm.</p>"
        "<p>Bake the loaf in a covered pot so the crust stays thin.</p></article></body></html>")
    (tmp_path / "records.jsonl").write_text(
        json.dumps({"text": "Lighthouses guide ships past reefs at night.", "url": "https://sea.example/lights"})
        + "\n{broken\n" + json.dumps({"text": "Tides rise twice a day."}) + "\n" + json.dumps({"url": "x"}) + "\n")
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4 binary")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02 not text")
    (tmp_path / ".hidden.txt").write_text("private notes about oolong")

    index = SearchIndex.from_folder(tmp_path, passage_words=30, overlap_words=5)
    assert index.documents == 5
    assert index.search("spare paddle")[0].url == "guides/kayak.md"
    assert index.search("oolong")[0].url == "tea.txt"
    assert len(index.search("oolong", k=5)) == 1  # the hidden file is not read
    assert index.search("sourdough starter lactobacilli")[0].url == "page.html"
    assert index.search("lighthouses reefs")[0].url == "https://sea.example/lights"
    tides = index.search("tides")[0]
    assert tides.url == "records.jsonl#3" and tides.title == "records"
    reasons = dict(index.skipped)
    assert set(reasons) == {"records.jsonl:2", "records.jsonl:4", "scan.pdf", "blob.txt"}
    assert "JSON" in reasons["records.jsonl:2"] and "binary" in reasons["blob.txt"] and ".txt" in reasons["scan.pdf"]


def test_the_tool_returns_the_best_passage_first_and_whole(index):
    result = SearchTool(index, k=2).run({"query": "json dumps module"})
    best = index.search("json dumps module", k=2)
    assert result == format_results(best)
    assert result.startswith(f"[1] json (https://docs.python.org/3/library/json.html)\n{best[0].text}\n\n[2] ")
    assert len(format_results(best[:1])) < ToolLimits().max_result_chars  # the toolbox's cut never reaches it


def test_the_tool_says_when_nothing_matches_and_refuses_a_missing_query(index):
    tool = SearchTool(index)
    assert tool.run({"query": "zyzzyva"}) == "no results for 'zyzzyva'"
    for arguments in ({}, {"query": ""}, {"query": "  "}, {"query": 3}):
        with pytest.raises(ValueError, match="query"):
            tool.run(arguments)


def test_the_toolbox_loads_a_saved_index_and_searches_it(index, tmp_path):
    index.save(tmp_path / "ix")
    box = make_toolbox(["search"], tmp_path / "ix")
    call, result = box.call(json.dumps({"name": "search", "arguments": {"query": "Tay salmon"}}))
    assert call.name == "search" and result.startswith("[1] rivers (https://example.org/travel/rivers/)\n")
    assert len(result) <= box.limits.max_result_chars
    _, error = box.call(json.dumps({"name": "search", "arguments": {}}))
    assert error.startswith("error: search needs")
