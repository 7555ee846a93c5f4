"""Writing files so that a reader never sees half of one: temp file in the same folder, fsync, rename; and the one
count of the cores this process may use. Shared by checkpoints, artifacts, manifests and the data stages."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def commit(tmp: Path | str, path: Path | str) -> None:
    """Make the finished temp file `tmp` the file `path`: on disk (fsync), readable by all (0644: mkstemp makes
    owner-only files, and artifacts are meant to be shared), then renamed over `path` in one step."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside `path` for a writer that opens files by name (pyarrow, safetensors, matplotlib): on
    success it becomes `path`, on an error it is removed, so `path` is complete or absent, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """An open file that appears at `path` only once it is closed without an error (see atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_bytes(path: Path | str, data: bytes | memoryview) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def replace_dir(new: Path, out: Path) -> None:
    """Rename the directory `new` to `out`. An existing `out` is first renamed aside (and put back if the swap
    fails), then deleted, so no one ever sees a half-deleted `out`."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old_"))
    os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def cpu_count() -> int:
    """The cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
