"""Input fingerprints: local files by content (by stat when too big to hash), URLs and hf: specs by what they name."""

import os

import data.sources.fingerprint as fp
from data.sources.fingerprint import describe, fingerprint


def test_the_same_content_with_another_mtime_keeps_its_fingerprint(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "hello"}\n')
    before = describe([str(f)])
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))  # touched, copied with a new date...
    after = describe([str(f)])
    assert after["key"] == before["key"]
    (entry,) = after["entries"]
    assert entry["by"] == "content" and entry["bytes"] == f.stat().st_size and len(entry["blake2b"]) == 32


def test_an_edit_that_keeps_size_and_mtime_changes_the_fingerprint(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "hello"}\n')
    st = f.stat()
    before = fingerprint([str(f)])
    f.write_text('{"text": "jello"}\n')  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime back
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert fingerprint([str(f)]) != before


def test_a_file_over_the_hash_limit_is_fingerprinted_by_size_mtime_ns_and_inode(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "HASH_LIMIT_BYTES", 10)
    small, big = tmp_path / "small.jsonl", tmp_path / "big.warc.gz"
    small.write_bytes(b"0123456789")  # at the limit: still hashed
    big.write_bytes(b"x" * 11)
    d = describe([str(tmp_path)])
    by_path = {e["path"]: e for e in d["entries"]}
    assert by_path[str(small)]["by"] == "content"
    st = big.stat()
    assert by_path[str(big)] == {"path": str(big), "bytes": 11, "by": "stat", "mtime_ns": st.st_mtime_ns,
                                 "inode": st.st_ino}
    assert d["hash_limit_bytes"] == 10 and d["hash"] == "blake2b"
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # one nanosecond later is another file
    assert fingerprint([str(tmp_path)]) != d["key"]


def test_urls_hf_specs_and_missing_paths_are_fingerprinted_by_what_they_name(tmp_path):
    missing = str(tmp_path / "later.jsonl")
    d = describe(["https://data.example/x.warc.gz", "hf:org/fineweb@v1.2:sample:train", "hf:org/fineweb", missing])
    assert d["entries"] == [
        {"source": "https://data.example/x.warc.gz", "by": "url"},
        {"source": "hf:org/fineweb@v1.2:sample:train", "by": "hf_revision", "revision": "v1.2"},
        {"source": "hf:org/fineweb", "by": "hf_revision", "revision": None},
        {"source": missing, "by": "name"},
    ]
    assert fingerprint(["hf:org/fineweb@v1.3:sample:train"]) != fingerprint(["hf:org/fineweb@v1.2:sample:train"])
    (tmp_path / "later.jsonl").write_text("{}\n")  # a file that appears is a new input
    assert fingerprint([missing]) != fingerprint([])


def test_a_local_hf_dataset_folder_is_fingerprinted_by_its_files(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "a"}\n')
    before = describe([f"hf:{folder}"])
    assert [e["by"] for e in before["entries"]] == ["hf_revision", "content"]
    (folder / "train.jsonl").write_text('{"text": "b"}\n')
    assert fingerprint([f"hf:{folder}"]) != before["key"]
