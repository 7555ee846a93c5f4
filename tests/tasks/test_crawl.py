"""The crawl stage on mixed, remote and damaged sources: weights, Common Crawl paths files, charsets, bad files,
servers that fail for a while (retried) or for good (the stage fails), and how its inputs were fingerprinted."""

import gzip
import io
import json
import os

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

import data.sources.fingerprint as fp
from data.sources.errors import is_transient
from data.tokens.documents import read_documents
from flows.cycles import stage
from tasks.core.artifacts import ArtifactStore
from tasks.core.config import load_config
from tests.files import jsonl_documents
from tests.net import free_port

FRENCH = "<html><body><p>Le café est très bon, à côté de l’église. Où est-ce ? Voilà, déjà fini.</p></body></html>"


def write_warc(path, pages: list[tuple[str, str, bytes]]) -> None:
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, content_type, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          length=len(body), http_headers=headers))


def only_artifact(workdir, name: str):
    store = ArtifactStore(workdir / "artifacts")
    (key,) = store.list_keys(name)
    return store.load(name, key)


def reconciles(counts) -> bool:
    filtered = sum(v for k, v in counts.items() if k.startswith("filtered_"))
    return counts["read"] == counts["documents"] + filtered + counts["quarantined"] and counts["filtered"] == filtered


def test_a_weighted_mix_reports_documents_and_share_per_source(tmp_path, prefect_server):
    a, b = jsonl_documents(tmp_path / "a.jsonl", "a", 600), jsonl_documents(tmp_path / "b.jsonl", "b", 600)
    sources = f'crawl.sources=[{{source: "{a}", weight: 3}}, {{source: "{b}", weight: 1}}]'
    stage(name="crawl", workdir=str(tmp_path / "w"), overrides=[sources, "crawl.seed=7"])
    c = only_artifact(tmp_path / "w", "crawl").counts
    assert c["docs_source_0"] == 600 and c["exhausted_source_0"] == 1  # a ran out first: the mix stopped there
    assert c["documents"] == c["docs_source_0"] + c["docs_source_1"]
    assert abs(c["share_source_0"] - 0.75) < 0.05 and c["sources"] == 2
    assert reconciles(c)


def test_crawl_reads_a_paths_file_over_http_records_charsets_and_skips_bad_files(tmp_path, http_dir, prefect_server):
    root, base = http_dir
    (root / "seg").mkdir()
    write_warc(root / "seg" / "a.warc.gz", [
        ("https://example.org/fr", "text/html; charset=utf-8", FRENCH.encode("cp1252")),  # the header lies
        ("https://example.org/en", "text/html; charset=utf-8", b"<p>plain English</p>"),
        ("https://example.org/big", "text/html", b"<p>" + b"word " * 5000 + b"</p>"),
        ("https://example.org/png", "text/html", b"\x89PNG\r\n\x1a\n\x00\x00"),
    ])
    paths = tmp_path / "warc.paths.gz"
    paths.write_bytes(gzip.compress(b"seg/a.warc.gz\nseg/missing.warc.gz\n"))  # the second one 404s
    overrides = [f'crawl.sources=["{paths}"]', f"crawl.paths_base_url={base}", "crawl.max_page_bytes=10000"]
    stage(name="crawl", workdir=str(tmp_path / "w"), overrides=overrides)
    crawl = only_artifact(tmp_path / "w", "crawl")
    c = crawl.counts
    assert (c["documents"], c["filtered_too_large"], c["filtered_binary"], c["bad_files"]) == (2, 1, 1, 1)
    assert c["charset_fallback"] == 1 and c["files_listed"] == 2 and reconciles(c)
    docs = {d["url"]: d for d in read_documents(sorted((crawl.path / "documents").glob("*.parquet")))}
    assert docs["https://example.org/fr"]["text"] == FRENCH
    assert docs["https://example.org/fr"]["meta"]["charset_used"] == "cp1252"
    assert docs["https://example.org/en"]["meta"]["charset_used"] == "utf-8"
    assert docs["https://example.org/en"]["source"] == f"{base}/seg/a.warc.gz"
    (bad,) = [json.loads(line) for line in crawl.file("quarantine.jsonl").read_text().splitlines()]
    assert bad["source"] == f"{base}/seg/missing.warc.gz" and "FileNotFoundError" in bad["reason"]
    # A 404 is the file's fault: quarantined at once (the stage did not fail), and the manifest says a file was lost.
    info = crawl.manifest["info"]
    assert c["files_quarantined"] == 1 and [f["source"] for f in info["files_quarantined"]] == [bad["source"]]
    (warning,) = info["warnings"]
    assert warning.startswith("1 of 2 files could not be read") and bad["source"] in warning


def test_a_crawl_whose_every_file_fails_fails_and_says_why(tmp_path, prefect_server):
    overrides = [f'crawl.sources=["{tmp_path}/gone-1.warc.gz", "{tmp_path}/gone-2.jsonl"]']
    state = stage(name="crawl", workdir=str(tmp_path / "w"), overrides=overrides, return_state=True)
    message = str(state.result(raise_on_failure=False))
    assert state.is_failed() and "all 2 files failed" in message and "gone-1.warc.gz" in message


def test_the_crawl_key_fingerprints_local_files_and_url_strings(tmp_path):
    from tasks.crawl import _external

    local = jsonl_documents(tmp_path / "a.jsonl", "a", 1)
    sources = f'crawl.sources=[{{source: "{local}", weight: 2}}, "https://data.example/x.warc.gz", "file://{local}"]'
    before = _external(load_config("tiny", [sources]), tmp_path, {})
    os.utime(local, ns=(10**18, 10**18))  # touched, not changed: the same input
    assert _external(load_config("tiny", [sources]), tmp_path, {}) == before
    jsonl_documents(local, "a", 2)  # a changed local file is a new input
    assert _external(load_config("tiny", [sources]), tmp_path, {}) != before
    url_only = 'crawl.sources=["https://data.example/x.warc.gz"]'
    other_url = 'crawl.sources=["https://data.example/y.warc.gz"]'
    url_key = _external(load_config("tiny", [url_only]), tmp_path, {})
    assert url_key != _external(load_config("tiny", [other_url]), tmp_path, {})


def test_the_crawl_stage_can_crawl_the_users_own_site_politely(tmp_path, http_dir, prefect_server):
    site, base = http_dir
    body = "<p>" + "The quick brown fox jumps over the lazy dog and then it rests. " * 12 + "</p>"
    (site / "index.html").write_text(f"<html><body>{body}<a href='/two.html'>two</a></body></html>")
    (site / "two.html").write_text(f"<html><body>{body} Two.</body></html>")
    (site / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    stage(name="crawl", workdir=str(tmp_path / "w"),
          overrides=["crawl.sources=[]", f'crawl.web.seeds=["{base}/index.html"]', "crawl.web.delay_s=0.01"])
    store = ArtifactStore(tmp_path / "w" / "artifacts")
    (key,) = store.list_keys("crawl")
    crawl = store.load("crawl", key)
    assert crawl.counts["documents"] == 2 and crawl.file("web.warc.gz").exists()


@pytest.fixture
def quick_retries(monkeypatch):
    """The crawl task's retry delays (10 s then 20 s, FACTORY_RETRY_BACKOFF_S) cut to 10 ms for the test."""
    from tasks.crawl import crawl

    monkeypatch.setattr(crawl.task, "retry_delay_seconds", [0.01, 0.01])


def test_a_server_that_fails_twice_is_retried_and_the_crawl_keeps_every_document(tmp_path, faulty_server, quick_retries,
                                                                                  prefect_server):
    local = jsonl_documents(tmp_path / "a.jsonl", "a", 3)
    jsonl_documents(faulty_server.root / "b.jsonl", "b", 3)
    faulty_server.fail("/b.jsonl", 503, times=2)
    url = f"{faulty_server.base}/b.jsonl"
    # Two worker processes: the error comes back from a worker, wrapped by map_shards, and must still be retried.
    stage(name="crawl", workdir=str(tmp_path / "w"), overrides=[f'crawl.sources=["{local}", "{url}"]',
                                                                "crawl.workers=2"])
    assert faulty_server.hits["/b.jsonl"] == 3  # 503, retry, 503, retry, the file
    crawl = only_artifact(tmp_path / "w", "crawl")
    c = crawl.counts
    assert (c["documents"], c["quarantined"], c["files_quarantined"], c.get("bad_files", 0)) == (6, 0, 0, 0)
    assert crawl.file("quarantine.jsonl").read_text() == ""
    docs = read_documents(sorted((crawl.path / "documents").glob("*.parquet")))
    assert sorted(d["id"] for d in docs) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    info = crawl.manifest["info"]
    assert "warnings" not in info and "files_quarantined" not in info
    assert [(e.get("path") or e["source"], e["by"]) for e in info["inputs"]["entries"]] == [(str(local), "content"),
                                                                                           (url, "url")]


@pytest.mark.parametrize("failure", ["503 every time", "closed port"])
def test_a_source_that_keeps_failing_fails_the_stage_after_its_retries_and_nothing_is_cached(
        tmp_path, faulty_server, quick_retries, prefect_server, failure):
    local = jsonl_documents(tmp_path / "a.jsonl", "a", 3)
    if failure == "503 every time":
        jsonl_documents(faulty_server.root / "b.jsonl", "b", 3)
        faulty_server.fail("/b.jsonl", 503)
        url, workers = f"{faulty_server.base}/b.jsonl", 2
    else:
        url, workers = f"http://127.0.0.1:{free_port()}/b.jsonl", 1  # read in this process
    overrides = [f'crawl.sources=["{local}", "{url}"]', f"crawl.workers={workers}"]
    state = stage(name="crawl", workdir=str(tmp_path / "w"), overrides=overrides, return_state=True)
    error = state.result(raise_on_failure=False)
    assert state.is_failed() and is_transient(error) and url in str(error)
    if failure == "503 every time":
        assert faulty_server.hits["/b.jsonl"] == 3  # the first try and both retries
    store = ArtifactStore(tmp_path / "w" / "artifacts")
    assert not any(store.load("crawl", key) for key in store.list_keys("crawl"))  # no manifest: nothing to reuse


def test_the_manifest_says_how_each_input_was_fingerprinted_and_the_hf_revision_read(tmp_path, monkeypatch,
                                                                                     prefect_server):
    monkeypatch.setattr(fp, "HASH_LIMIT_BYTES", 200)  # big.jsonl is over it: fingerprinted by stat
    small, big = jsonl_documents(tmp_path / "small.jsonl", "s", 1), jsonl_documents(tmp_path / "big.jsonl", "b", 10)
    folder = tmp_path / "corpus"
    folder.mkdir()
    jsonl_documents(folder / "train.jsonl", "h", 2)
    sources = f'crawl.sources=["{small}", "{big}", "hf:{folder}"]'
    stage(name="crawl", workdir=str(tmp_path / "w"), overrides=[sources, "crawl.workers=1"])
    crawl = only_artifact(tmp_path / "w", "crawl")
    assert crawl.counts["documents"] == 13
    inputs = crawl.manifest["info"]["inputs"]
    by = {e.get("path") or e["source"]: e for e in inputs["entries"]}
    assert by[str(small)]["by"] == "content" and "blake2b" in by[str(small)]
    assert by[str(big)]["by"] == "stat" and by[str(big)]["mtime_ns"] == big.stat().st_mtime_ns
    assert by[f"hf:{folder}"] == {"source": f"hf:{folder}", "by": "hf_revision", "revision": None}
    assert by[str(folder / "train.jsonl")]["by"] == "content" and inputs["hash_limit_bytes"] == 200
    # A local folder has no Hub commit; an unpinned Hub dataset would also be named in info["warnings"].
    assert crawl.manifest["info"]["hf_revisions"] == {f"hf:{folder}": {"pinned": None, "read": None}}
