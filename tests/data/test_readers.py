"""Crawl readers: every record counted, broken input quarantined with a reason, every input format read."""

import gzip
import io
import json
from collections import Counter

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data.documents import ShardWriter
from data.quarantine import Quarantine
from data.readers import READ_OUTCOMES, expand_sources, read_sources
from data.samples.warc import build_sample_warc


def read_all(sources, tmp_path, name="q.jsonl"):
    stats = Counter()
    with Quarantine(tmp_path / name) as quarantine:
        docs = list(read_sources([str(s) for s in sources], quarantine, stats))
    lines = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
    return docs, stats, lines


def reconciles(stats):
    return stats["read"] == sum(stats[k] for k in READ_OUTCOMES)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("crawl") / "sample.warc.gz"
    return path, build_sample_warc(path, max_pages=20, seed=0)


def write_warc(path, responses, record_type="response"):
    """responses: (url, status, content_type, body) tuples, each a request + response like Common Crawl."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=str(path).endswith(".gz"))
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for url, status, content_type, body in responses:
            if record_type == "conversion":
                writer.write_record(writer.create_warc_record(
                    url, "conversion", payload=io.BytesIO(body), length=len(body), warc_content_type="text/plain"))
                continue
            writer.write_record(writer.create_warc_record(
                url, "request", payload=io.BytesIO(b""), length=0,
                http_headers=StatusAndHeaders("GET / HTTP/1.1", [("Host", "example.org")], is_http_request=True)))
            headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                url, "response", payload=io.BytesIO(body), length=len(body), http_headers=headers))


def test_sample_warc_counts_reconcile(sample, tmp_path):
    path, counts = sample
    docs, stats, _ = read_all([path], tmp_path)
    assert reconciles(stats)
    assert stats["read"] == counts["response"]
    assert stats["yielded"] == len(docs)
    assert stats["filtered_status"] == counts["pages_not_found"] + counts["pages_redirect"] == 4
    assert stats["filtered_content_type"] == counts["pages_image"] + counts["pages_binary"] == 3
    assert stats["quarantined"] == 3
    # request/warcinfo/metadata records are not documents: skipped, not read
    assert stats["skipped_request"] == counts["request"]
    assert stats["skipped_warcinfo"] == 1 and stats["skipped_metadata"] == counts["metadata"]


def test_broken_sample_records_are_quarantined_with_file_offset_and_reason(sample, tmp_path):
    path, _ = sample
    _, _, lines = read_all([path], tmp_path)
    reasons = sorted(line["reason"] for line in lines)
    assert all(r.startswith(f"{path} offset ") for r in reasons)
    assert sum("unparseable HTTP status line" in r for r in reasons) == 1
    assert sum("HTTP Content-Length" in r for r in reasons) == 2  # short payload; WARC length cut the block
    assert {line["record"]["url"].rsplit("/", 1)[1] for line in lines} == {
        "logging-garbage.html", "logging-truncated.html", "logging-short.html"}
    assert all(line["source"] == str(path) for line in lines)


def test_truncated_warc_file_keeps_what_it_can_and_says_where_it_stopped(sample, tmp_path):
    path, _ = sample
    full_docs, _, _ = read_all([path], tmp_path, "full.jsonl")
    cut = tmp_path / "cut.warc.gz"
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    docs, stats, lines = read_all([cut], tmp_path)
    assert reconciles(stats)
    assert 0 < len(docs) < len(full_docs)
    assert any("truncated" in line["reason"] or "unreadable" in line["reason"] for line in lines)
    assert all(str(cut) in line["reason"] for line in lines)


def test_corrupt_bytes_inside_a_gzip_member_lose_one_stretch_and_reading_resumes(sample, tmp_path):
    path, _ = sample
    full_docs, _, _ = read_all([path], tmp_path, "full.jsonl")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\x00" * 64
    bad = tmp_path / "bad.warc.gz"
    bad.write_bytes(bytes(data))
    docs, stats, lines = read_all([bad], tmp_path)
    assert reconciles(stats)
    assert len(docs) >= len(full_docs) - 2  # only the damaged record (and a neighbour at worst) is lost
    assert docs[-1].id == full_docs[-1].id  # reading went on to the end of the file
    assert any(line["reason"].startswith(f"{bad} offset ") and "unreadable WARC data" in line["reason"]
               for line in lines)


def test_status_and_content_type_come_from_http_headers_without_sniffing(tmp_path):
    html = b"<html><body><p>Hello there, this is a page.</p></body></html>"
    path = tmp_path / "t.warc.gz"
    write_warc(path, [
        ("https://example.org/a", "200 OK", "text/html; charset=utf-8", html),
        ("https://example.org/b", "200 OK", "application/octet-stream", html),  # HTML bytes, binary header
        ("https://example.org/c", "404 Not Found", "text/html", html),
        ("https://example.org/d", "200 OK", "text/plain", b"plain words"),
    ])
    docs, stats, _ = read_all([path], tmp_path)
    assert [(d.url, d.content_type) for d in docs] == [("https://example.org/a", "text/html"),
                                                        ("https://example.org/d", "text/plain")]
    assert docs[0].meta["http_status"] == 200 and docs[0].meta["charset"] == "utf-8"
    assert docs[0].meta["warc_record_id"].startswith("<urn:uuid:") and docs[0].meta["warc_date"]
    assert stats["filtered_content_type"] == 1 and stats["filtered_status"] == 1 and reconciles(stats)


def test_wet_reader_yields_conversion_records_as_text(tmp_path):
    path = tmp_path / "CC-MAIN-test.warc.wet.gz"
    write_warc(path, [("https://example.org/1", "", "", "First page text.".encode()),
                      ("https://example.org/2", "", "", "Zweite Seite – ü".encode())], record_type="conversion")
    docs, stats, _ = read_all([path], tmp_path)
    assert [(d.url, d.content, d.content_type) for d in docs] == [
        ("https://example.org/1", b"First page text.", "text/plain"),
        ("https://example.org/2", "Zweite Seite – ü".encode(), "text/plain")]
    assert stats["read"] == 2 and stats["skipped_warcinfo"] == 1 and reconciles(stats)


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz"])
def test_jsonl_reader_quarantines_bad_lines_by_line_number(tmp_path, name):
    lines = [json.dumps({"text": "first", "id": "a", "url": "https://x.org/a"}), "{not json", "",
             json.dumps({"id": "b"}), json.dumps({"text": "fourth", "meta": {"lang": "en"}}), "<invalid utf-8>"]
    raw = "\n".join(lines[:-1]).encode("utf-8") + b"\n\xff\xfe{}"  # last line: not UTF-8
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    docs, stats, quarantined = read_all([path], tmp_path)
    assert [(d.id, d.content, d.url) for d in docs] == [("a", "first", "https://x.org/a"), (f"{name}:5", "fourth", "")]
    assert docs[1].meta == {"lang": "en", "line": 5}
    assert [q["reason"].split(":")[0] for q in quarantined] == [f"{path} line 2", f"{path} line 4", f"{path} line 6"]
    assert "missing 'text'" in quarantined[1]["reason"]
    assert stats["read"] == 5 and reconciles(stats)  # the blank line is not a record


def test_parquet_reader_reads_document_shards(tmp_path):
    with ShardWriter(tmp_path, "docs") as writer:
        writer.write({"id": "p1", "url": "https://x.org/1", "text": "one", "source": "s", "meta": {"k": 1}})
        writer.write({"id": "p2", "url": "", "text": "two", "source": "s", "meta": {}})
    docs, stats, _ = read_all(writer.close(), tmp_path)
    assert [(d.id, d.content, d.content_type) for d in docs] == [("p1", "one", "text/plain"),
                                                                  ("p2", "two", "text/plain")]
    assert docs[0].meta["k"] == 1 and reconciles(stats)


def test_parquet_without_text_column_is_an_error_naming_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(ValueError, match=r"bad\.parquet: parquet input needs a 'text' column"):
        read_all([path], tmp_path)


def test_expand_sources_sorts_globs_keeps_hf_specs_and_names_what_is_missing(tmp_path):
    for name in ["b.warc.gz", "a.warc.gz", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert expand_sources([str(tmp_path / "*.warc.gz"), "hf:HuggingFaceFW/fineweb:sample-10BT:train"]) == [
        str(tmp_path / "a.warc.gz"), str(tmp_path / "b.warc.gz"), "hf:HuggingFaceFW/fineweb:sample-10BT:train"]
    assert expand_sources([str(tmp_path)]) == [str(tmp_path / "a.warc.gz"), str(tmp_path / "b.warc.gz")]
    with pytest.raises(FileNotFoundError, match=r"\*\.wet\.gz' matched no files"):
        expand_sources([str(tmp_path / "*.wet.gz")])
    with pytest.raises(FileNotFoundError, match="nope.warc.gz"):
        expand_sources([str(tmp_path / "nope.warc.gz")])


def test_unknown_file_type_is_refused_by_name(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"notes\.txt.*unsupported file type"):
        read_all([tmp_path / "notes.txt"], tmp_path)


def test_quarantine_is_jsonl_renamed_into_place_on_close_with_json_safe_records(tmp_path):
    path = tmp_path / "q.jsonl"
    quarantine = Quarantine(path)
    quarantine.add(b"\x00\xff" * 5000, "crawl.warc.gz", "binary junk")
    quarantine.add({"url": "u", "payload": b"abc"}, "crawl.warc.gz", "bad record")
    assert not path.exists() and quarantine.count == 2
    quarantine.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["reason"] for line in lines] == ["binary junk", "bad record"]
    assert lines[0]["record"].startswith("b'\\x00\\xff") and lines[0]["record"].endswith("[truncated]")
    assert lines[1]["record"] == {"url": "u", "payload": "b'abc'"} and lines[1]["source"] == "crawl.warc.gz"


def test_hf_specs_parse_name_config_and_split():
    from data.readers import parse_hf_spec

    assert parse_hf_spec("hf:HuggingFaceFW/fineweb") == ("HuggingFaceFW/fineweb", None, "train")
    assert parse_hf_spec("hf:HuggingFaceFW/fineweb:sample-10BT") == ("HuggingFaceFW/fineweb", "sample-10BT", "train")
    assert parse_hf_spec("hf:wikitext:wikitext-2-raw-v1:validation") == ("wikitext", "wikitext-2-raw-v1", "validation")
    with pytest.raises(ValueError, match="hf:NAME"):
        parse_hf_spec("hf:")


ARTICLE = ("<p>The pathlib module offers classes representing filesystem paths with semantics appropriate for "
           "different operating systems. Path classes are divided between pure paths, which provide purely "
           "computational operations without I/O, and concrete paths.</p>"
           "<p>If you have never used this module before, or just are not sure which class is right for your task, "
           "Path is most likely what you need. It instantiates a concrete path for the platform the code runs on.</p>")


def test_hf_source_streams_a_local_dataset_folder_through_datasets(tmp_path, monkeypatch):
    # The same `datasets.load_dataset(..., streaming=True)` path users take for hub datasets, on a folder it can read
    # offline; one row lacks text and is quarantined with its row number.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "my_corpus"
    folder.mkdir()
    rows = [{"id": f"d{i}", "url": f"https://example.org/{i}", "text": f"document {i} " * 20} for i in range(4)]
    rows.insert(2, {"id": "bad", "url": "https://example.org/bad", "text": None})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = Counter()
    with Quarantine(tmp_path / "q.jsonl") as q:
        docs = list(read_sources([f"hf:{folder}"], q, stats))
    assert [d.url for d in docs] == [f"https://example.org/{i}" for i in range(4)]
    assert stats["read"] == 5 and stats["quarantined"] == 1
    bad = json.loads((tmp_path / "q.jsonl").read_text())
    assert bad["source"] == f"hf:{folder}" and "row 2" in bad["reason"]


def test_html_to_text_keeps_the_article_and_drops_navigation():
    from data.extract import html_to_text

    page = (f"<html><body><nav><a href='/'>Home</a> | <a href='/blog'>Blog</a> | <a href='/login'>Log in</a></nav>"
            f"<article><h1>pathlib</h1>{ARTICLE}<table><tr><td>Path.cwd()</td><td>current directory</td></tr>"
            f"</table></article><footer>Copyright 2024 Example Corp. All rights reserved.</footer></body></html>")
    text = html_to_text(page.encode(), url="https://example.org/pathlib")
    assert "pure paths" in text and "Path is most likely what you need" in text
    assert "Path.cwd() | current directory" in text  # tables are kept, as cells
    assert "Log in" not in text and "All rights reserved" not in text
    assert html_to_text(b"   ") is None and html_to_text("<html><body></body></html>") is None


def test_html_is_decoded_with_the_declared_charset_and_falls_back_to_utf8():
    from data.extract import decode

    assert decode("café".encode("latin-1"), "iso-8859-1") == "café"
    assert decode("café".encode("utf-8"), None) == "café"
    assert decode("café".encode("utf-8"), "no-such-charset") == "café"
    assert decode(b"caf\xe9", "utf-8") == "caf\ufffd"


def test_raw_to_document_passes_plain_text_through_and_keeps_reader_meta():
    from data.extract import raw_to_document
    from data.readers import RawDocument

    raw = RawDocument(id="r1", url="https://x.org", content="  plain text  ".encode(), content_type="text/plain",
                      source="s.wet.gz", meta={"warc_date": "2024-01-01T00:00:00Z"})
    assert raw_to_document(raw) == {"id": "r1", "url": "https://x.org", "text": "plain text", "source": "s.wet.gz",
                                    "meta": {"warc_date": "2024-01-01T00:00:00Z", "content_type": "text/plain"}}
    empty = RawDocument(id="r2", url="", content=b"<html></html>", content_type="text/html", source="s", meta={})
    assert raw_to_document(empty) is None
    with pytest.raises(ValueError, match="favor"):
        raw_to_document(empty, favor="speed")
