"""The crawl stage on mixed, remote and damaged sources: weights, Common Crawl paths files, charsets, bad files."""

import gzip
import io
import json

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data.tokens.documents import read_documents
from flows.cycles import stage
from tasks.core.artifacts import ArtifactStore
from tasks.core.config import load_config

FRENCH = "<html><body><p>Le café est très bon, à côté de l’église. Où est-ce ? Voilà, déjà fini.</p></body></html>"


def write_jsonl(path, prefix: str, n: int):
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": f"text {prefix}{i}"}) + "\n" for i in range(n)))
    return path


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
    a, b = write_jsonl(tmp_path / "a.jsonl", "a", 600), write_jsonl(tmp_path / "b.jsonl", "b", 600)
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


def test_a_crawl_whose_every_file_fails_fails_and_says_why(tmp_path, prefect_server):
    overrides = [f'crawl.sources=["{tmp_path}/gone-1.warc.gz", "{tmp_path}/gone-2.jsonl"]']
    state = stage(name="crawl", workdir=str(tmp_path / "w"), overrides=overrides, return_state=True)
    message = str(state.result(raise_on_failure=False))
    assert state.is_failed() and "all 2 files failed" in message and "gone-1.warc.gz" in message


def test_the_crawl_key_fingerprints_local_files_and_url_strings(tmp_path):
    from tasks.crawl import _external

    local = write_jsonl(tmp_path / "a.jsonl", "a", 1)
    sources = f'crawl.sources=[{{source: "{local}", weight: 2}}, "https://data.example/x.warc.gz", "file://{local}"]'
    before = _external(load_config("tiny", [sources]), tmp_path)
    write_jsonl(local, "a", 2)  # a changed local file is a new input
    assert _external(load_config("tiny", [sources]), tmp_path) != before
    url_only = 'crawl.sources=["https://data.example/x.warc.gz"]'
    other_url = 'crawl.sources=["https://data.example/y.warc.gz"]'
    assert _external(load_config("tiny", [url_only]), tmp_path) != _external(load_config("tiny", [other_url]), tmp_path)


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
