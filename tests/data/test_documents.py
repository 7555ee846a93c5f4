"""Document parquet shards: schema, round trip, atomic shard files."""

import pyarrow.parquet as pq
import pytest

from data.tokens.documents import SCHEMA, ShardWriter, count_documents, read_documents


def make_doc(i: int) -> dict:
    return {"id": f"doc-{i}", "url": f"https://example.org/{i}", "text": f"text number {i} é ✓",
            "source": "test.warc.gz", "meta": {"http_status": 200, "n": i, "tags": ["a", "b"]}}


def test_shard_writer_round_trips_documents_with_meta(tmp_path):
    with ShardWriter(tmp_path, "docs", rows_per_shard=4) as writer:
        for i in range(10):
            writer.write(make_doc(i))
    paths = writer.close()
    assert [p.name for p in paths] == ["docs-00000.parquet", "docs-00001.parquet", "docs-00002.parquet"]
    assert list(read_documents(paths)) == [make_doc(i) for i in range(10)]
    assert count_documents(paths) == 10


def test_shards_use_the_documents_schema_with_meta_as_json(tmp_path):
    with ShardWriter(tmp_path, "docs") as writer:
        writer.write(make_doc(0))
    table = pq.read_table(writer.close()[0])
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.column("meta")[0].as_py() == '{"http_status": 200, "n": 0, "tags": ["a", "b"]}'


def test_no_parquet_file_is_visible_before_close(tmp_path):
    writer = ShardWriter(tmp_path, "docs", rows_per_shard=100)
    for i in range(5):
        writer.write(make_doc(i))
    assert list(tmp_path.glob("*.parquet")) == []
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["docs-00000.parquet"]  # and no .tmp left behind


def test_a_failing_stage_does_not_flush_its_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "docs", rows_per_shard=100) as writer:
            writer.write(make_doc(0))
            raise RuntimeError("stage crashed")
    assert list(tmp_path.iterdir()) == []


def test_read_documents_can_select_columns(tmp_path):
    with ShardWriter(tmp_path, "docs") as writer:
        writer.write(make_doc(1))
    rows = list(read_documents(writer.close(), columns=["id", "text"]))
    assert rows == [{"id": "doc-1", "text": "text number 1 é ✓"}]
    with pytest.raises(ValueError, match="missing column"):
        list(read_documents(writer.paths, columns=["body"]))


def test_writer_rejects_a_document_without_text(tmp_path):
    writer = ShardWriter(tmp_path, "docs")
    with pytest.raises(ValueError, match="'text' must be a string"):
        writer.write({"id": "x", "url": "", "text": None, "source": "", "meta": {}})
