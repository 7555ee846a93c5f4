"""Crawl readers: every record counted, broken input quarantined with a reason, every input format read."""

import gzip
import importlib.util
import io
import json
import random
import tempfile
import uuid
from collections import Counter

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data.cleaning.extract import decode_with_charset
from data.samples.warc import build_sample_warc
from data.sources.quarantine import Quarantine
from data.sources.readers import READ_OUTCOMES, expand_sources, mix_sources, read_sources
from data.tokens.documents import ShardWriter


def read_all(sources, tmp_path, name="q.jsonl", **options):
    stats = Counter()
    with Quarantine(tmp_path / name) as quarantine:
        docs = list(read_sources([str(s) for s in sources], quarantine, stats, **options))
    lines = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
    return docs, stats, lines


def reconciles(stats):
    return stats["read"] == sum(stats[k] for k in READ_OUTCOMES)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("crawl") / "sample.warc.gz"
    return path, build_sample_warc(path, max_pages=20, seed=0)


def write_warc(path, responses, record_type="response"):
    """responses: (url, status, content_type or None, body) tuples, each a request + response like Common Crawl."""
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
            headers = StatusAndHeaders(status, [("Content-Type", content_type)] if content_type is not None else [],
                                       protocol="HTTP/1.1")
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
    write_warc(path, [("https://example.org/1", "", "", b"First page text."),
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


def test_expand_sources_sorts_globs_keeps_hf_specs_and_names_what_is_missing(tmp_path):
    for name in ["b.warc.gz", "a.warc.gz", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert expand_sources([str(tmp_path / "*.warc.gz"), "hf:HuggingFaceFW/fineweb:sample-10BT:train"]) == [
        str(tmp_path / "a.warc.gz"), str(tmp_path / "b.warc.gz"), "hf:HuggingFaceFW/fineweb:sample-10BT:train"]
    assert expand_sources([str(tmp_path)]) == [str(tmp_path / "a.warc.gz"), str(tmp_path / "b.warc.gz")]
    assert expand_sources([f"file://{tmp_path}/a.warc.gz"]) == [str(tmp_path / "a.warc.gz")]  # read as a local path
    assert expand_sources([str(tmp_path / "*.warc.gz")], max_files=1) == [str(tmp_path / "a.warc.gz")]
    with pytest.raises(FileNotFoundError, match=r"\*\.wet\.gz' matched no files"):
        expand_sources([str(tmp_path / "*.wet.gz")])
    with pytest.raises(FileNotFoundError, match="nope' does not exist"):
        expand_sources([str(tmp_path / "nope")])
    # A named file is not checked here: one that is missing when read is a bad file, counted, not a crash.
    assert expand_sources([str(tmp_path / "nope.warc.gz")]) == [str(tmp_path / "nope.warc.gz")]


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


def test_hf_specs_parse_name_revision_config_and_split():
    from data.sources.readers import hf_revision, parse_hf_spec

    assert parse_hf_spec("hf:HuggingFaceFW/fineweb") == ("HuggingFaceFW/fineweb", None, "train")
    assert parse_hf_spec("hf:HuggingFaceFW/fineweb:sample-10BT") == ("HuggingFaceFW/fineweb", "sample-10BT", "train")
    assert parse_hf_spec("hf:wikitext:wikitext-2-raw-v1:validation") == ("wikitext", "wikitext-2-raw-v1", "validation")
    pinned = "hf:HuggingFaceFW/fineweb@v1.3.0:sample-10BT:train"
    assert parse_hf_spec(pinned) == ("HuggingFaceFW/fineweb", "sample-10BT", "train")
    assert hf_revision(pinned) == "v1.3.0" and hf_revision("hf:HuggingFaceFW/fineweb:sample-10BT") is None
    for bad in ("hf:", "hf:@v1", "hf:a:b:c:d"):
        with pytest.raises(ValueError, match="hf:NAME"):
            parse_hf_spec(bad)


ARTICLE = ("<p>The pathlib module offers classes representing filesystem paths with semantics appropriate for "
           "different operating systems. Path classes are divided between pure paths, which provide purely "
           "computational operations without I/O, and concrete paths.</p>"
           "<p>If you have never used this module before, or just are not sure which class is right for your task, "
           "Path is most likely what you need. It instantiates a concrete path for the platform the code runs on.</p>")


def test_hf_source_streams_a_local_dataset_folder_through_datasets(tmp_path, monkeypatch):
    # The same datasets code path as for hub datasets (what `load_dataset(..., streaming=True)` runs), on a folder it
    # can read offline; one row lacks text and is quarantined with its row number.
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
    assert not any("hf_revision" in d.meta for d in docs)  # a local folder has no Hub commit to record
    assert stats["read"] == 5 and stats["quarantined"] == 1
    bad = json.loads((tmp_path / "q.jsonl").read_text())
    assert bad["source"] == f"hf:{folder}" and "row 2" in bad["reason"]


@pytest.mark.parametrize("engine", ["resiliparse", "trafilatura"])
def test_html_to_text_keeps_the_article_and_drops_navigation(engine):
    from data.cleaning.extract import ExtractOptions, html_to_text

    page = (f"<html><body><nav><a href='/'>Home</a> | <a href='/blog'>Blog</a> | <a href='/login'>Log in</a></nav>"
            f"<article><h1>pathlib</h1>{ARTICLE}<table><tr><td>Path.cwd()</td><td>current directory</td></tr>"
            f"</table></article><footer>Copyright 2024 Example Corp. All rights reserved.</footer></body></html>")
    text = html_to_text(page.encode(), url="https://example.org/pathlib", options=ExtractOptions(engine=engine))
    assert "pure paths" in text and "Path is most likely what you need" in text
    assert "Path.cwd() | current directory" in text  # tables are kept, as cells
    assert "Log in" not in text and "All rights reserved" not in text
    assert html_to_text(b"   ") is None and html_to_text("<html><body></body></html>") is None


def test_resiliparse_options_change_what_it_keeps():
    from data.cleaning.extract import ExtractOptions, html_to_text

    page = (f"<html><body><nav><a href='/'>Home</a> | <a href='/blog'>Blog</a> | <a href='/login'>Log in</a></nav>"
            f"<main><h1>pathlib</h1>{ARTICLE}<img src='x.png' alt='a diagram of the path classes'>"
            f"<ul><li>PurePath</li><li>Path</li></ul></main></body></html>")
    default = html_to_text(page, options=ExtractOptions())
    assert "pure paths" in default and "Log in" not in default  # main content only
    assert "Log in" in html_to_text(page, options=ExtractOptions(main_content=False))
    assert "a diagram of the path classes" in default
    assert "a diagram" not in html_to_text(page, options=ExtractOptions(alt_texts=False))
    everything = ExtractOptions(main_content=False)  # (its main-content rules drop a list this short)
    assert "\u2022 PurePath" in html_to_text(page, options=everything)
    assert "\u2022" not in html_to_text(page, options=everything.model_copy(update={"list_bullets": False}))


def test_html_is_decoded_with_the_declared_charset_and_falls_back_to_utf8():
    from data.cleaning.extract import decode

    assert decode("café".encode("latin-1"), "iso-8859-1") == "café"
    assert decode("café".encode(), None) == "café"
    assert decode("café".encode(), "no-such-charset") == "café"
    assert decode(b"x" * 3000 + b"caf\xe9", "utf-8").endswith("caf\ufffd")  # one stray byte: still UTF-8


def test_raw_to_document_passes_plain_text_through_and_keeps_reader_meta():
    from data.cleaning.extract import ExtractOptions, raw_to_document
    from data.sources.readers import RawDocument

    raw = RawDocument(id="r1", url="https://x.org", content=b"  plain text  ", content_type="text/plain",
                      source="s.wet.gz", meta={"warc_date": "2024-01-01T00:00:00Z"})
    assert raw_to_document(raw) == {"id": "r1", "url": "https://x.org", "text": "plain text", "source": "s.wet.gz",
                                    "meta": {"warc_date": "2024-01-01T00:00:00Z", "content_type": "text/plain"}}
    empty = RawDocument(id="r2", url="", content=b"<html></html>", content_type="text/html", source="s", meta={})
    assert raw_to_document(empty) is None
    with pytest.raises(ValueError, match="favor"):
        raw_to_document(empty, ExtractOptions(favor="speed"))


# --- robust to the web: damaged files, wrong charsets, binary and huge bodies, bad files among good ones -------


def warc_member(url, body, content_type="text/html", gz=True):
    """One response record as bytes of its own (a gzip member when gz), to splice damaged files from."""
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gz)
    headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body),
                                                  http_headers=headers))
    return buf.getvalue()


def page(i):
    return f"<html><body><p>Page number {i} has a few words on it.</p></body></html>".encode()


def write_jsonl(path, prefix, n, gz=False):
    data = "".join(json.dumps({"id": f"{prefix}{i}", "text": f"document {prefix}{i}"}) + "\n" for i in range(n))
    path.write_bytes(gzip.compress(data.encode()) if gz else data.encode())
    return path


def test_a_gzip_member_cut_mid_file_loses_that_record_only(tmp_path):
    members = [warc_member(f"https://example.org/{i}", page(i)) for i in range(5)]
    members[2] = members[2][: len(members[2]) // 2]
    path = tmp_path / "cut-member.warc.gz"
    path.write_bytes(b"".join(members))
    docs, stats, lines = read_all([path], tmp_path)
    assert [d.url for d in docs] == [f"https://example.org/{i}" for i in (0, 1, 3, 4)]
    (bad,) = lines
    assert bad["reason"].startswith(f"{path} offset {len(members[0]) + len(members[1])}")
    assert reconciles(stats)


def test_a_cut_member_is_found_whatever_bytes_follow_it(tmp_path):
    # Depending on the record ids and dates (random), the cut member's deflate stream sometimes runs on into the
    # next member without a zlib error and warcio ends quietly; the reader must notice the unread rest of the file.
    for attempt in range(150):  # about 1 in 30 of these files ended the read early before the fix
        members = [warc_member(f"https://example.org/{i}", page(i)) for i in range(5)]
        members[2] = members[2][: len(members[2]) // 2]
        path = tmp_path / f"cut-{attempt}.warc.gz"
        path.write_bytes(b"".join(members))
        docs, stats, lines = read_all([path], tmp_path / str(attempt))
        assert [d.url for d in docs] == [f"https://example.org/{i}" for i in (0, 1, 3, 4)], attempt
        assert len(lines) == 1 and reconciles(stats)


@pytest.mark.parametrize("gz", [False, True])
def test_a_broken_record_header_is_quarantined_and_the_records_after_it_are_read(tmp_path, gz):
    members = [warc_member(f"https://example.org/{i}", page(i), gz=gz) for i in range(3)]
    broken = [b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: banana\r\n\r\ngarbage\r\n\r\n",
              b"WARC/1.0\r\nthis is no header line\r\n\r\n"]  # no Content-Length: warcio would read to the end
    if gz:
        broken = [gzip.compress(b) for b in broken]
    path = tmp_path / ("broken.warc.gz" if gz else "broken.warc")
    path.write_bytes(members[0] + broken[0] + members[1] + broken[1] + members[2])
    docs, stats, lines = read_all([path], tmp_path)
    assert [d.url for d in docs] == [f"https://example.org/{i}" for i in range(3)]
    offsets = [len(members[0]), len(members[0]) + len(broken[0]) + len(members[1])]
    assert [line["reason"] for line in lines] == [
        f"{path} offset {offset}: broken WARC record header (Content-Length {value!r}); skipped to the next record"
        for offset, value in zip(offsets, ["banana", ""], strict=True)]
    assert reconciles(stats)


FRENCH = ("<html><body><p>Le café est très bon, à côté de l’église. Où est-ce ? Voilà, déjà fini, « merci ».</p>"
          "</body></html>")
JAPANESE = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS"></head><body><p>'
            + "日本語のテキストです。これはテストのページです。" * 5 + "</p></body></html>")


def test_a_wrong_or_missing_charset_is_recovered_and_says_which_charset_was_used(tmp_path):
    path = tmp_path / "charsets.warc.gz"
    write_warc(path, [
        ("https://example.org/fr", "200 OK", "text/html; charset=utf-8", FRENCH.encode("cp1252")),  # the header lies
        ("https://example.org/ja", "200 OK", "text/html", JAPANESE.encode("shift_jis")),  # only <meta> says
        ("https://example.org/mb4", "200 OK", "text/html; charset=utf8mb4", "<p>naïve</p>".encode()),  # unknown
    ])
    docs, stats, _ = read_all([path], tmp_path)
    decoded = [decode_with_charset(d.content, d.meta["charset"]) for d in docs]
    assert [d.text for d in decoded] == [FRENCH, JAPANESE, "<p>naïve</p>"]
    assert [(d.charset, d.fallback) for d in decoded] == [("cp1252", True), ("shift_jis", False), ("utf-8", True)]
    assert reconciles(stats)


def test_decode_follows_bom_header_meta_utf8_then_a_guess():
    russian = "Привет, как дела? Это тестовая страница на русском языке, и она довольно длинная.".encode("cp1251")
    assert decode_with_charset("Größe".encode(), "iso-8859-1") == ("Größe", "utf-8", True)  # valid UTF-8 wins
    assert decode_with_charset("café".encode("latin-1"), "iso-8859-1") == ("café", "cp1252", False)
    assert decode_with_charset(russian, None).charset == "cp1251"
    meta = b'<meta charset="windows-1251">'
    assert decode_with_charset(meta + russian, "utf-8") == ((meta + russian).decode("cp1251"), "cp1251", True)
    cut = "中文网页".encode() * 50 + "中".encode()[:2]  # Common Crawl's 1 MiB cap cuts a character in two
    assert decode_with_charset(cut, "utf-8") == ("中文网页" * 50 + "\ufffd", "utf-8", False)
    assert decode_with_charset(b"\xef\xbb\xbfhello", "latin-1") == ("hello", "utf-8-sig", False)
    assert decode_with_charset("already text", "utf-8") == ("already text", None, False)


def test_binary_bodies_declared_as_text_are_filtered(tmp_path):
    rng = random.Random(0)
    noise = bytes(rng.randrange(1, 256) for _ in range(5000))  # no NUL byte: caught by the undecodable share
    controls = bytes(rng.choice(b"\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0e\x0f\x10") for _ in range(2000))
    path = tmp_path / "binary.warc.gz"
    write_warc(path, [
        ("https://example.org/png", "200 OK", "text/html", b"\x89PNG\r\n\x1a\n" + noise),
        ("https://example.org/pdf", "200 OK", "text/html", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
        ("https://example.org/zip", "200 OK", "text/html; charset=utf-8", b"PK\x03\x04" + noise),
        ("https://example.org/nul", "200 OK", "text/plain", b"almost text\x00\x00 but for NUL bytes"),
        ("https://example.org/noise", "200 OK", "text/html", noise),
        ("https://example.org/controls", "200 OK", "text/html", controls + b"<p>a little text</p>" * 20),
        ("https://example.org/sjis", "200 OK", "text/html", JAPANESE.encode("shift_jis")),  # legacy text: kept
        ("https://example.org/utf16", "200 OK", "text/html; charset=utf-16", "<p>hello</p>".encode("utf-16")),
    ])
    docs, stats, _ = read_all([path], tmp_path)
    assert [d.url for d in docs] == ["https://example.org/sjis", "https://example.org/utf16"]
    assert stats["filtered_binary"] == 6 and reconciles(stats)


def test_a_page_over_max_page_bytes_is_filtered_without_being_held_in_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "huge.warc.gz"
    body = b"<p>" + random.Random(0).randbytes(6_000_000).hex().encode() + b"</p>"  # as incompressible as real pages
    write_warc(path, [("https://example.org/huge", "200 OK", "text/html", body),
                      ("https://example.org/small", "200 OK", "text/html", page(1))])
    tracemalloc.start()
    try:
        docs, stats, _ = read_all([path], tmp_path, max_page_bytes=1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [d.url for d in docs] == ["https://example.org/small"]
    assert stats["filtered_too_large"] == 1 and reconciles(stats)
    assert peak < 4_000_000  # the page is 12 MB; we stop reading it at the 1 MB limit


def test_huge_jsonl_lines_and_wet_records_are_filtered_too(tmp_path):
    lines = [json.dumps({"text": "small"}), json.dumps({"text": "x" * 5000}), json.dumps({"text": "last"})]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    wet = tmp_path / "t.warc.wet.gz"
    write_warc(wet, [("https://example.org/1", "", "", b"short text"), ("https://example.org/2", "", "", b"y" * 5000)],
               record_type="conversion")
    docs, stats, _ = read_all([tmp_path / "docs.jsonl", wet], tmp_path, max_page_bytes=1000)
    assert [d.content for d in docs] == ["small", "last", b"short text"]
    assert stats["filtered_too_large"] == 2 and reconciles(stats)


def test_non_html_content_types_and_a_missing_content_type_are_filtered(tmp_path):
    path = tmp_path / "types.warc.gz"
    write_warc(path, [
        ("https://example.org/doc.pdf", "200 OK", "application/pdf", b"%PDF-1.7\n"),
        ("https://example.org/logo.png", "200 OK", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("https://example.org/api", "200 OK", "application/json", b'{"a": 1}'),
        ("https://example.org/unknown", "200 OK", None, page(0)),  # HTML bytes, no header: not sniffed, counted
        ("https://example.org/page", "200 OK", "text/html", page(1)),
    ])
    docs, stats, _ = read_all([path], tmp_path)
    assert [d.url for d in docs] == ["https://example.org/page"]
    assert stats["filtered_content_type"] == 4 and reconciles(stats)


def make_bad_file(kind, tmp_path, base_url):
    """A source that cannot be read (or not to its end), as each kind of bad file looks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "missing":
        return str(tmp_path / "gone.warc.gz")
    if kind == "parquet without text":
        pq.write_table(pa.table({"body": ["x"]}), tmp_path / "notext.parquet")
        return str(tmp_path / "notext.parquet")
    if kind == "corrupt parquet":
        pq.write_table(pa.table({"text": ["x"] * 100}), tmp_path / "corrupt.parquet")
        data = (tmp_path / "corrupt.parquet").read_bytes()
        (tmp_path / "corrupt.parquet").write_bytes(data[: len(data) // 2])
        return str(tmp_path / "corrupt.parquet")
    if kind == "gzip jsonl cut mid-stream":
        data = write_jsonl(tmp_path / "cut.jsonl.gz", "cut", 2000, gz=True).read_bytes()
        (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
        return str(tmp_path / "cut.jsonl.gz")
    assert kind == "url that 404s"
    return f"{base_url}/nowhere.warc.gz"


@pytest.mark.parametrize("kind", ["missing", "parquet without text", "corrupt parquet", "gzip jsonl cut mid-stream",
                                  "url that 404s"])
def test_one_bad_file_is_counted_and_the_files_after_it_are_read(tmp_path, http_dir, kind):
    bad = make_bad_file(kind, tmp_path, http_dir[1])
    first, last = write_jsonl(tmp_path / "a.jsonl", "a", 3), write_jsonl(tmp_path / "z.jsonl", "z", 3)
    docs, stats, lines = read_all([first, bad, last], tmp_path)
    ids = [d.id for d in docs]
    assert ids[:3] == ["a0", "a1", "a2"] and ids[-3:] == ["z0", "z1", "z2"]
    assert all(i.startswith("cut") for i in ids[3:-3])  # what a cut file held before the cut is kept
    assert (len(ids) > 6) == (kind == "gzip jsonl cut mid-stream")
    assert stats["bad_files"] == 1 and stats["files"] == 3
    (line,) = [line for line in lines if line["source"] == bad]
    assert line["reason"].startswith(bad)
    assert reconciles(stats)


def test_https_sources_are_copied_read_and_named_by_their_url(tmp_path, http_dir, monkeypatch):
    root, base = http_dir
    members = [warc_member(f"https://example.org/{i}", page(i)) for i in range(3)]
    broken = gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\n\r\n")
    (root / "crawl.warc.gz").write_bytes(members[0] + broken + members[1] + members[2])
    write_jsonl(root / "docs.jsonl.gz", "j", 2, gz=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    url = f"{base}/crawl.warc.gz"
    docs, stats, lines = read_all([url, f"{base}/docs.jsonl.gz"], tmp_path)
    assert [d.url or d.id for d in docs] == ["https://example.org/0", "https://example.org/1",
                                             "https://example.org/2", "j0", "j1"]
    assert docs[0].source == url and docs[0].meta["warc_file"] == url
    (line,) = lines
    assert line["source"] == url and line["reason"].startswith(f"{url} offset {len(members[0])}: ")
    assert list(scratch.iterdir()) == []  # the temporary copies are gone
    assert reconciles(stats)


def test_memory_urls_and_globs_are_read_through_fsspec(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    folder = f"/readers-test-{uuid.uuid4().hex}"
    fs.pipe(f"{folder}/a.jsonl", b'{"id": "m1", "text": "from memory"}\n')
    fs.pipe(f"{folder}/b.warc.gz", warc_member("https://example.org/m", page(7)))
    fs.pipe(f"{folder}/notes.txt", b"not a source")
    try:
        docs, stats, _ = read_all([f"memory://{folder}/*.jsonl", f"memory://{folder}/b.warc.gz"], tmp_path)
    finally:
        fs.rm(folder, recursive=True)
    assert [(d.id, d.source) for d in docs][0] == ("m1", f"memory://{folder}/a.jsonl")
    assert docs[1].url == "https://example.org/m" and docs[1].source == f"memory://{folder}/b.warc.gz"
    assert reconciles(stats)


def test_a_common_crawl_paths_file_lists_files_under_the_base_url(tmp_path, http_dir):
    root, base = http_dir
    rel = [f"crawl-data/CC-MAIN-2024-10/segments/17/wet/part-{i}.warc.wet.gz" for i in range(3)]
    for i, name in enumerate(rel):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_warc(root / name, [(f"https://example.org/{i}", "", "", f"text of page {i}".encode())],
                   record_type="conversion")
    paths = tmp_path / "wet.paths.gz"
    paths.write_bytes(gzip.compress(("\n".join(rel) + "\n").encode()))
    (root / "wet.paths").write_text("\n".join(rel) + "\n")
    assert expand_sources([str(paths)]) == [f"https://data.commoncrawl.org/{name}" for name in rel]  # the default
    assert expand_sources([str(paths)], paths_base_url=base + "/") == [f"{base}/{name}" for name in rel]
    assert expand_sources([f"{base}/wet.paths"], paths_base_url=base, max_files=2) == [f"{base}/{n}" for n in rel[:2]]
    docs, stats, _ = read_all([paths], tmp_path, paths_base_url=base, max_files=2)
    assert [d.content for d in docs] == [b"text of page 0", b"text of page 1"]
    assert docs[0].source == f"{base}/{rel[0]}" and reconciles(stats)


def test_s3_urls_without_s3fs_say_what_to_install():
    if importlib.util.find_spec("s3fs"):
        pytest.skip("s3fs is installed")
    with pytest.raises(ImportError, match="pip install s3fs"):
        expand_sources(["s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/*/wet/*.warc.wet.gz"])


def test_a_weighted_mix_draws_by_weight_deterministically_until_a_source_runs_out(tmp_path):
    a, b = write_jsonl(tmp_path / "a.jsonl", "a", 1500), write_jsonl(tmp_path / "b.jsonl", "b", 1500)

    def mix(seed):
        stats = Counter()
        with Quarantine(tmp_path / f"q{seed}.jsonl") as quarantine:
            docs = list(mix_sources([([str(a)], 3.0), ([str(b)], 1.0)], quarantine, stats, seed))
        return [d.id for d in docs], stats

    ids, stats = mix(0)
    assert abs(sum(i.startswith("a") for i in ids) / len(ids) - 0.75) < 0.03
    assert stats["docs_source_0"] == 1500 and stats["exhausted_source_0"] == 1  # a ran out first: the mix ends
    assert stats["docs_source_1"] == len(ids) - 1500 < 1500
    assert [i for i in ids if i.startswith("a")] == [f"a{i}" for i in range(1500)]  # each source read in order
    assert reconciles(stats)
    assert mix(0)[0] == ids and mix(1)[0] != ids


# --- the FastWARC reader gives what warcio alone gives, on every damaged file above ------------------------------

def _encoded(url: str, body: bytes, gz: bool = True) -> bytes:
    """A response stored as sent: gzip content-encoding and chunked transfer (warcio decodes both)."""
    packed = gzip.compress(body)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gz)
    headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                                          ("Transfer-Encoding", "chunked")], protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(chunked), length=len(chunked),
                                                  http_headers=headers))
    return buf.getvalue()


def damaged_files(folder, sample_path):
    """Each damage the tests above read, as files: the sample (its broken records), cut, zeroed, cut members,
    broken headers (gzip and plain), binary, huge and non-HTML bodies, an encoded payload, a 404."""
    folder.mkdir()
    data = sample_path.read_bytes()
    files = {"sample.warc.gz": data, "cut.warc.gz": data[: int(len(data) * 0.6)]}
    zeroed = bytearray(data)
    zeroed[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    files["zeroed.warc.gz"] = bytes(zeroed)
    for seed in range(12):
        members = [warc_member(f"https://example.org/{seed}/{i}", page(i)) for i in range(5)]
        members[2] = members[2][: len(members[2]) // 2]
        files[f"cut-member-{seed}.warc.gz"] = b"".join(members)
    for gz in (False, True):
        members = [warc_member(f"https://example.org/{i}", page(i), gz=gz) for i in range(3)]
        broken = [b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: banana\r\n\r\ngarbage\r\n\r\n",
                  b"WARC/1.0\r\nthis is no header line\r\n\r\n"]
        broken = [gzip.compress(b) for b in broken] if gz else broken
        name = "broken.warc.gz" if gz else "broken.warc"
        files[name] = members[0] + broken[0] + members[1] + broken[1] + members[2]
        plain = b"".join(warc_member(f"https://example.org/p{i}", page(i) * 50, gz=gz) for i in range(3))
        files["cut-body.warc" + (".gz" if gz else "")] = plain[: len(plain) - 700]
    files["encoded.warc.gz"] = b"".join([warc_member("https://example.org/a", page(1)),
                                         _encoded("https://example.org/b", page(2)),
                                         warc_member("https://example.org/c", page(3))])
    for name, content in files.items():
        (folder / name).write_bytes(content)
    rng = random.Random(0)
    write_warc(folder / "mixed.warc.gz", [
        ("https://example.org/png", "200 OK", "text/html", b"\x89PNG\r\n\x1a\n" + rng.randbytes(3000)),
        ("https://example.org/huge", "200 OK", "text/html", b"<p>" + rng.randbytes(40_000).hex().encode()),
        ("https://example.org/pdf", "200 OK", "application/pdf", b"%PDF-1.7\n"),
        ("https://example.org/none", "200 OK", None, page(0)),
        ("https://example.org/gone", "404 Not Found", "text/html", page(4)),
        ("https://example.org/page", "200 OK", "text/html", page(5)),
    ])
    return sorted(folder.iterdir())


def test_the_fastwarc_reader_gives_what_warcio_gives_on_every_damaged_file(sample, tmp_path):
    from data.sources.readers import read_warc_with_warcio

    path, _ = sample
    handed_over = Counter()
    for warc in damaged_files(tmp_path / "files", path):
        results = []
        for name, read in (("fast", None), ("warcio", read_warc_with_warcio)):
            stats = Counter()
            with Quarantine(tmp_path / f"{warc.name}-{name}.jsonl") as quarantine:
                if read is None:
                    docs = list(read_sources([str(warc)], quarantine, stats, max_page_bytes=50_000))
                else:
                    docs = list(read(str(warc), quarantine, stats, 50_000))
                    stats.update(files=1, yielded=len(docs), docs_source_0=len(docs))  # read_sources' own counts
            lines = (tmp_path / f"{warc.name}-{name}.jsonl").read_text()
            results.append(([d.__dict__ for d in docs], stats, lines))
        (fast, fast_stats, fast_lines), (slow, slow_stats, slow_lines) = results
        handed_over += {k: v for k, v in fast_stats.items() if k.startswith("warcio_fallback_")}
        assert fast == slow, warc.name
        assert fast_lines == slow_lines, warc.name  # the same records quarantined, for the same reasons
        assert {k: v for k, v in fast_stats.items() if not k.startswith("warcio_fallback")} == slow_stats, warc.name
        assert reconciles(fast_stats)
    # every kind of damage reached warcio, and nothing else did: the clean records were FastWARC's
    assert set(handed_over) == {"warcio_fallback_" + why for why in
                                ("unreadable", "record_header", "http_header", "http_length", "truncated",
                                 "encoded_payload")}, handed_over
