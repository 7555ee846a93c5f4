"""A network or I/O error while reading is raised as TransientReadError and quarantines nothing; a file that is
itself bad (404, 410, corrupt) is quarantined and reading goes on."""

import errno
import gzip
import json
import pickle
import urllib.error
import zlib
from collections import Counter

import pytest

from data.sources.errors import TransientReadError, is_transient
from data.sources.quarantine import Quarantine
from data.sources.readers import expand_sources, read_sources
from tests.files import jsonl_documents
from tests.net import free_port


def write_jsonl(path, prefix: str, n: int = 2) -> str:
    return str(jsonl_documents(path, prefix, n))


def read(sources, tmp_path):
    stats = Counter()
    with Quarantine(tmp_path / "q.jsonl") as quarantine:
        try:
            docs = list(read_sources(sources, quarantine, stats))
        finally:
            bad = list(quarantine.bad_files)
    return docs, stats, bad, (tmp_path / "q.jsonl").read_text()


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_a_server_error_raises_a_transient_error_and_quarantines_nothing(tmp_path, faulty_server, status):
    local = write_jsonl(tmp_path / "a.jsonl", "a")
    write_jsonl(faulty_server.root / "b.jsonl", "b")
    faulty_server.fail("/b.jsonl", status)
    with pytest.raises(TransientReadError, match=f"{faulty_server.base}/b.jsonl: ClientResponseError: {status}"):
        read([local, f"{faulty_server.base}/b.jsonl"], tmp_path)
    assert (tmp_path / "q.jsonl").read_text() == ""
    assert faulty_server.hits["/b.jsonl"] == 1


@pytest.mark.parametrize("status", [404, 410, 403])
def test_a_file_the_server_refuses_for_good_is_quarantined_as_a_bad_file(tmp_path, faulty_server, status):
    write_jsonl(faulty_server.root / "b.jsonl", "b")
    faulty_server.fail("/b.jsonl", status)
    url = f"{faulty_server.base}/b.jsonl"
    docs, stats, bad, quarantined = read([url, write_jsonl(tmp_path / "z.jsonl", "z")], tmp_path)
    assert [d.id for d in docs] == ["z0", "z1"]
    assert stats["bad_files"] == 1 and [f["source"] for f in bad] == [url] and bad[0]["reason"].startswith(url)
    assert json.loads(quarantined)["source"] == url


def test_a_closed_port_is_a_transient_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/a.warc.gz"
    with pytest.raises(TransientReadError, match="ClientConnectorError") as caught:
        read([url], tmp_path)
    assert caught.value.__cause__.errno == errno.ECONNREFUSED


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz", "a.warc.gz", "a.warc.wet.gz"])
def test_a_local_io_error_is_a_transient_error_not_a_bad_file(tmp_path, name):
    # Reading /proc/self/mem at offset 0 fails with a real EIO, as a failing disk or network mount would.
    (tmp_path / name).symlink_to("/proc/self/mem")
    with pytest.raises(TransientReadError, match="Input/output error"):
        read([str(tmp_path / name)], tmp_path)
    assert (tmp_path / "q.jsonl").read_text() == ""


def test_a_paths_listing_that_answers_503_is_transient_not_missing(faulty_server):
    (faulty_server.root / "wet.paths").write_text("seg/a.warc.wet.gz\n")
    faulty_server.fail("/wet.paths", 503, times=1)
    with pytest.raises(TransientReadError, match="503"):
        expand_sources([f"{faulty_server.base}/wet.paths"], paths_base_url=faulty_server.base)
    # the next try reads it
    listed = expand_sources([f"{faulty_server.base}/wet.paths"], paths_base_url=faulty_server.base)
    assert listed == [f"{faulty_server.base}/seg/a.warc.wet.gz"]


def test_which_errors_are_transient():
    wrapped = RuntimeError("ingest_file 3 failed (x.warc.gz)")
    wrapped.__cause__ = TransientReadError("x.warc.gz: ClientResponseError: 503")
    transient = [ConnectionRefusedError(), ConnectionResetError(), BrokenPipeError(), TimeoutError(),
                 OSError(errno.EIO, "Input/output error"), OSError(errno.ESTALE, "Stale file handle"),
                 OSError("Failed to read: Detail: [errno 5] Input/output error"),  # pyarrow's style
                 urllib.error.HTTPError("https://x", 503, "Service Unavailable", None, None),
                 urllib.error.HTTPError("https://x", 429, "Too Many Requests", None, None),
                 TransientReadError("x"), wrapped]
    lasting = [FileNotFoundError(errno.ENOENT, "gone"), PermissionError(), IsADirectoryError(),
               gzip.BadGzipFile("Not a gzipped file"), OSError("not a parquet file"), EOFError(), zlib.error(),
               ValueError("bad column"), urllib.error.HTTPError("https://x", 404, "Not Found", None, None),
               urllib.error.HTTPError("https://x", 501, "Not Implemented", None, None), RuntimeError("a bug"), None]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in lasting if is_transient(e)] == []


def test_a_transient_error_pickles_as_itself():
    # Worker processes send their errors back pickled: the type and message must survive, or no retry would fire.
    err = pickle.loads(pickle.dumps(TransientReadError("x.warc.gz: ClientResponseError: 503")))
    assert type(err) is TransientReadError and str(err) == "x.warc.gz: ClientResponseError: 503"
