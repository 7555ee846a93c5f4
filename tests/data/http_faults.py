"""A local HTTP file server (127.0.0.1) that can answer an error status for a path, a set number of times or always,
and counts the GETs of each path: a real server for the readers' transient-error handling, no mocks."""

from __future__ import annotations

import functools
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server: FaultyServer = self.server.faulty  # type: ignore[attr-defined]
        if (status := server.answer(self.path)) is not None:
            self.send_error(status)
            return
        super().do_GET()


class FaultyServer:
    """Serves `root`; `fail(path, status, times)` makes the next `times` GETs of `path` (every one: times=None) answer
    `status`; `hits[path]` counts GETs, failed or not."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits: Counter = Counter()
        self._faults: dict[str, list] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
        self._server.faulty = self  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def fail(self, path: str, status: int, times: int | None = None) -> None:
        self._faults[path] = [status, times]

    def answer(self, path: str) -> int | None:
        with self._lock:
            self.hits[path] += 1
            fault = self._faults.get(path)
            if fault is None or fault[1] == 0:
                return None
            if fault[1] is not None:
                fault[1] -= 1
            return fault[0]

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
