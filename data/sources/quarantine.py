"""Quarantine: a JSONL file of records a stage could not use, each with where it came from and why.

Lines are appended to `<path>.tmp` as they come and renamed to `path` on close, so readers never see
a half-written file; whether a stage finished is told by its artifact manifest, not by this file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from model.files import atomic_file, commit

MAX_FIELD_CHARS = 2_000  # a broken 5 MB payload must not blow up the quarantine file
_LINE_BREAKS = ("\x85", "\u2028", "\u2029")  # json.dumps escapes the ASCII line breaks, not these


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Turn a record into something json.dumps accepts: bytes -> truncated repr, unknown objects -> str."""
    if depth > 8:
        return repr(value)[:MAX_FIELD_CHARS]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "...[truncated]"
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        text = repr(raw[:MAX_FIELD_CHARS])
        return text + ("...[truncated]" if len(raw) > MAX_FIELD_CHARS else "")
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v, depth + 1) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _json_safe(getattr(value, k), depth + 1) for k in value.__dataclass_fields__}
    return _json_safe(str(value), depth + 1)


class Quarantine:
    """Collects rejected records as JSONL lines {"record", "source", "reason"}; renamed into place on close."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._file = open(self._tmp, "w", encoding="utf-8")
        self._count = 0
        self._closed = False
        # Files that could not be read (in full), {"source", "reason"}: the readers add them so that a stage can say
        # which files it lost whole, not only how many records.
        self.bad_files: list[dict[str, str]] = []

    def add(self, record: Any, source: str, reason: str) -> None:
        if self._closed:
            raise ValueError(f"quarantine {self.path}: add() after close()")
        line = {"record": _json_safe(record), "source": str(source), "reason": str(reason)}
        text = json.dumps(line, ensure_ascii=False)
        # Keep one record per line for readers that split on Unicode line breaks too (str.splitlines).
        for sep in _LINE_BREAKS:
            text = text.replace(sep, f"\\u{ord(sep):04x}")
        self._file.write(text + "\n")
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._file.close()
        commit(self._tmp, self.path)

    def __enter__(self) -> Quarantine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_quarantine(parts: list[Path], path: Path) -> None:
    """Concatenate per-shard quarantine files, in the given order, into `path` (renamed into place); the parts
    are removed."""
    with atomic_file(path, "wb") as out:
        for part in parts:
            if part.exists():
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out)
    for part in parts:
        part.unlink(missing_ok=True)
