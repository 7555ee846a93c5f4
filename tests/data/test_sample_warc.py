"""The built-in sample crawl: Common Crawl shape, realistic noise, determinism, and what the pipeline makes of it."""

import gzip
import json
import subprocess
import sys
from collections import Counter

import pytest
from warcio.archiveiterator import ArchiveIterator

from data.cleaning.extract import ExtractOptions, raw_to_document
from data.cleaning.filters import apply_filters, build_filters
from data.cleaning.pipeline import FILTER_KEYS
from data.cleaning.split import text_hash
from data.samples.warc import build_sample_warc
from data.sources.quarantine import Quarantine
from data.sources.readers import read_sources
from tasks.core.config import load_config

# The demo's filters: FineWeb's steps with the tiny preset's thresholds for documentation pages.
FILTERS = {k: v for k, v in load_config("tiny").preprocess.model_dump(mode="json").items() if k in FILTER_KEYS}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("crawl") / "sample.warc.gz"
    return path, build_sample_warc(path, max_pages=20, seed=0)


# both engines on the same real pages: Resiliparse (the default) and trafilatura as the tiny preset runs it
ENGINES = {"resiliparse": ExtractOptions(), "trafilatura": ExtractOptions(engine="trafilatura", favor="recall")}


@pytest.fixture(scope="module", params=list(ENGINES))
def documents(sample, tmp_path_factory, request):
    path, _ = sample
    stats = Counter()
    with Quarantine(tmp_path_factory.mktemp("q") / "quarantine.jsonl") as quarantine:
        docs = [raw_to_document(raw, ENGINES[request.param]) for raw in read_sources([str(path)], quarantine, stats)]
    return {d["url"]: d for d in docs if d is not None}


def records(path):
    """Readable records as (type, WARC headers, HTTP headers or None); stops at the deliberately broken ones."""
    out = []
    with open(path, "rb") as fh:
        try:
            for record in ArchiveIterator(fh):
                out.append((record.rec_type, record.rec_headers, record.http_headers))
        except Exception:  # noqa: BLE001 - the broken records are part of the sample
            pass
    return out


def test_counts_describe_the_pages_and_the_noise(sample):
    _, counts = sample
    assert counts["warcinfo"] == 1 and counts["pages_page"] == 20
    assert counts["request"] == counts["response"] == 20 + sum(
        n for k, n in counts.items() if k.startswith("pages_") and k != "pages_page")
    assert counts["pages_mirror"] == 3 and counts["pages_broken"] == 3 and counts["pages_other_language"] == 2
    assert counts["metadata"] > 0


def test_the_file_looks_like_a_common_crawl_warc(sample):
    path, _ = sample
    with open(path, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # gzip, one member per record
    recs = records(path)
    assert recs[0][0] == "warcinfo"
    responses = [(w, h) for t, w, h in recs if t == "response" and h is not None and h.get_statuscode() == "200"]
    requests = {w.get_header("WARC-Concurrent-To") for t, w, _ in recs if t == "request"}
    assert len(responses) >= 20
    for warc, http in responses:
        assert warc.get_header("WARC-Record-ID") in requests
        assert warc.get_header("WARC-Date").startswith("2024-") and warc.get_header("WARC-Payload-Digest")
        assert warc.get_header("WARC-Target-URI").startswith("https://")
        assert http.get_header("Server") and http.get_header("Date") and http.get_header("Content-Length")
    urls = [w.get_header("WARC-Target-URI") for w, _ in responses]
    assert any(u.startswith("https://docs.python.org/3/library/") for u in urls)
    assert any(u.startswith("https://docs.python.org/3/reference/") for u in urls)


def test_same_seed_same_bytes_and_another_seed_another_crawl(tmp_path, sample):
    path, _ = sample
    again = tmp_path / ".sample.warc.gz.4242.tmp"  # a caller's temp name must not change the bytes
    build_sample_warc(again, max_pages=20, seed=0)
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other" / "sample.warc.gz"
    build_sample_warc(other, max_pages=20, seed=1)
    assert other.read_bytes() != path.read_bytes()


def test_pages_do_not_carry_this_machines_environment_or_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMF_TEST_SECRET", "s3cr3t-value-that-must-not-leak")
    path = tmp_path / "sample.warc.gz"
    build_sample_warc(path, max_pages=40, seed=2)
    text = gzip.decompress(path.read_bytes())
    assert b"s3cr3t-value-that-must-not-leak" not in text
    assert sys.prefix.encode() not in text and b" at 0x" not in text


def test_pydoc_pages_extract_to_english_text_that_mostly_passes_the_filters(documents):
    pages = [d for url, d in documents.items() if url.startswith(("https://docs.python.org/3/library/",
                                                                  "https://docs.python.org/3/reference/",
                                                                  "https://pypi-docs.example/"))]
    assert len(pages) >= 17
    kept = list(apply_filters(pages, build_filters(FILTERS), Counter()))
    assert len(kept) >= 0.4 * len(pages)  # the demo keeps ~half of its documentation pages
    assert sum(len(d["text"]) for d in kept) > 20_000


def test_noise_pages_are_dropped_by_the_filter_meant_for_them(documents):
    filters = build_filters(FILTERS)
    by_url = {}
    for url, doc in documents.items():
        stats = Counter()
        list(apply_filters([doc], filters, stats))
        by_url[url] = [k for k in stats if k.startswith("filtered_")] or ["kept"]
    assert by_url["https://docs-python.example/de/3/howto/regex.html"] == ["filtered_language"]
    assert by_url["https://docs-python.example/fr/3/howto/logging.html"] == ["filtered_language"]
    assert by_url["https://python-snippets.example/blog/template"] == ["filtered_c4"]  # lorem ipsum
    # a stub page, dropped by a Gopher rule: quality with trafilatura, repetition with Resiliparse (which puts the
    # header's links on one line)
    assert by_url["https://python-snippets.example/blog/welcome"] in (["filtered_gopher_quality"],
                                                                      ["filtered_gopher_repetition"])
    assert by_url["https://docs.python.org/robots.txt"] == ["filtered_language"]  # not prose in any language
    assert by_url.get("https://docs.python.org/3/genindex-empty.html", ["filtered_language"]) == ["filtered_language"]


def test_declared_latin1_and_invalid_utf8_pages_decode_sensibly(documents):
    french = documents["https://docs-python.example/fr/3/howto/logging.html"]["text"]
    assert "La bibliothèque standard" in french
    broken = documents["https://docs.python.org/3/howto/logging-invalid-utf8.html"]["text"]
    assert "flexible \ufffd\ufffd event" in broken and "logging module" in broken


def test_mirrored_pages_are_exact_duplicates(documents):
    mirrors = [d for url, d in documents.items() if url.startswith("https://mirror.docs-python.example/")]
    assert len(mirrors) == 3
    originals = [text_hash(d["text"]) for url, d in documents.items() if not url.startswith("https://mirror.")]
    assert len(set(originals)) == len(originals)  # the exact-dedup key tells every original page apart
    assert all(text_hash(d["text"]) in originals for d in mirrors)


def test_cli_builds_a_sample(tmp_path):
    out = tmp_path / "cli.warc.gz"
    proc = subprocess.run([sys.executable, "-m", "data.samples.warc", str(out), "--max-pages", "5"],
                          capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(proc.stdout)["pages_page"] == 5 and out.exists()
