"""A lock per artifact being built, so two runs of the same key (a scheduled one and a manual one) never build into
the same directory at once. An OS file lock (flock) dies with its holder: a killed run leaves no stale lock."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

WAIT_LOG_EVERY_S = 30.0


class ArtifactLocked(RuntimeError):
    """Another run holds the lock of this artifact and `timeout_s` ran out."""


@contextmanager
def artifact_lock(path: Path, timeout_s: float | None = None,
                  on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold `<path>.lock` (beside the artifact directory, so removing the directory never removes the lock).

    Waits while another process holds it, saying so through `on_wait` now and then; with `timeout_s`, gives up with
    ArtifactLocked naming the holder's pid."""
    lock = path.parent / f"{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        last_said = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                if timeout_s is not None and waited >= timeout_s:
                    raise ArtifactLocked(f"{path} is being built by another run (pid {holder}); "
                                         f"waited {waited:.0f}s") from None
                if on_wait and (last_said is None or time.monotonic() - last_said >= WAIT_LOG_EVERY_S):
                    on_wait(f"{path.parent.name}/{path.name} is being built by another run (pid {holder}): waiting")
                    last_said = time.monotonic()
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
