"""Documents and their parquet shards: the `id, url, text, source, meta` table every text stage reads and writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from model.files import commit


class Document(TypedDict):
    id: str
    url: str
    text: str
    source: str
    meta: dict[str, Any]


# meta is stored as a JSON string: its keys differ by source (WARC date, HF split...) and a struct column
# would force one schema on all of them.
SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("meta", pa.string()),
    ]
)


def _to_row(doc: Document) -> dict[str, Any]:
    for key in ("id", "text"):
        if not isinstance(doc.get(key), str):
            raise ValueError(f"document {doc.get('id')!r}: '{key}' must be a string, got {type(doc.get(key)).__name__}")
    return {
        "id": doc["id"],
        "url": doc.get("url") or "",
        "text": doc["text"],
        "source": doc.get("source") or "",
        "meta": json.dumps(doc.get("meta") or {}, ensure_ascii=False, sort_keys=True, default=str),
    }


class ShardWriter:
    """Writes documents into parquet shards `{prefix}-{i:05d}.parquet`, each renamed into place only when complete.

    Memory stays bounded whatever the shard size: rows are written one row group at a time (every
    `row_group_size` rows or `row_group_chars` characters of text, whichever comes first) into the shard's temp file.
    """

    def __init__(self, out_dir: str | os.PathLike[str], prefix: str, rows_per_shard: int = 50_000,
                 row_group_size: int = 10_000, row_group_chars: int = 64 << 20):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.rows_per_shard = rows_per_shard
        self.row_group_size = row_group_size
        self.row_group_chars = row_group_chars
        self.paths: list[Path] = []
        self.num_rows = 0
        self._rows: list[dict[str, Any]] = []
        self._buffered_chars = 0
        self._shard_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._closed = False

    def _shard_path(self) -> Path:
        return self.out_dir / f"{self.prefix}-{len(self.paths):05d}.parquet"

    def write(self, doc: Document) -> None:
        if self._closed:
            raise ValueError(f"ShardWriter {self.out_dir}/{self.prefix}: write() after close()")
        row = _to_row(doc)
        self._rows.append(row)
        self._buffered_chars += len(row["text"])
        self.num_rows += 1
        self._shard_rows += 1
        if len(self._rows) >= self.row_group_size or self._buffered_chars >= self.row_group_chars:
            self._write_row_group()
        if self._shard_rows >= self.rows_per_shard:
            self._finish_shard()

    def _write_row_group(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            tmp = self._shard_path().with_name(self._shard_path().name + ".tmp")
            self._writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd")
        self._writer.write_table(pa.Table.from_pylist(self._rows, schema=SCHEMA), row_group_size=len(self._rows))
        self._rows = []
        self._buffered_chars = 0

    def _finish_shard(self) -> None:
        self._write_row_group()
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        path = self._shard_path()
        commit(path.with_name(path.name + ".tmp"), path)
        self.paths.append(path)
        self._shard_rows = 0

    def close(self) -> list[Path]:
        if not self._closed:
            self._finish_shard()
            self._closed = True
        return list(self.paths)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On an exception, keep what is already complete but never rename a partial shard into place.
        if exc_type is None:
            self.close()
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            tmp = self._shard_path().with_name(self._shard_path().name + ".tmp")
            tmp.unlink(missing_ok=True)


def _row_to_document(row: dict[str, Any]) -> Document:
    meta = row.get("meta")
    if isinstance(meta, str):
        meta = json.loads(meta) if meta else {}
    doc: dict[str, Any] = dict(row)
    if "meta" in row:
        doc["meta"] = meta or {}
    return doc  # type: ignore[return-value]


def document_batches(path: Path | str, columns: list[str] | None = None,
                     batch_size: int = 1_024) -> Iterator[pa.RecordBatch]:
    """Arrow batches of one parquet shard, with `columns` only (all when None); a missing column is an error."""
    pf = pq.ParquetFile(path)
    missing = [c for c in (columns or []) if c not in pf.schema_arrow.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {pf.schema_arrow.names}")
    return pf.iter_batches(batch_size=batch_size, columns=columns)


def read_documents(paths: Iterable[Path | str], columns: list[str] | None = None,
                   batch_size: int = 1_024) -> Iterator[Document]:
    """Stream documents from parquet shards batch by batch (never a whole file in memory)."""
    for path in paths:
        for batch in document_batches(path, columns, batch_size):
            for row in batch.to_pylist():
                yield _row_to_document(row)


def count_documents(paths: Iterable[Path | str]) -> int:
    """Number of rows in the given parquet shards, read from their footers only."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
