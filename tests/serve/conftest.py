"""A tiny assistant (random weights, a real BPE tokenizer) registered in a real MLflow registry, and the server over
it on a free loopback port, stopped after each test."""

import contextlib
import threading
import time
from pathlib import Path

import pytest

from tests.models import make_model_dir, register

__all__ = ["make_model_dir", "register", "running"]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> list[Path]:
    """Two different tiny assistants (different seeds), as a finetune stage would leave them."""
    root = tmp_path_factory.mktemp("models")
    return [make_model_dir(root / f"m{seed}", seed) for seed in (0, 1)]


@contextlib.contextmanager
def running(app):
    """Serve `app` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL; stops it after."""
    import uvicorn

    from tests.net import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.served.close()
        app.state.store.close()


@pytest.fixture
def workdir(tmp_path, model_dirs) -> Path:
    """A workdir whose registry has assistant v1 (@production)."""
    wd = tmp_path / "work"
    wd.mkdir()
    register(wd, model_dirs[0])
    return wd


def serve(workdir: Path, poll_s: float = 0.0, **settings):
    from flows.serving import build_app
    from serve.app import ServeSettings

    return running(build_app(workdir, "assistant@production", ServeSettings(**settings), poll_s=poll_s))


@pytest.fixture
def server(workdir):
    """The base URL of a server for assistant@production with default settings."""
    with serve(workdir) as url:
        yield url
