"""A tiny assistant (random weights, a real BPE tokenizer) registered in a real MLflow registry, and the server over
it on a free loopback port, stopped after each test."""

import contextlib
import threading
from pathlib import Path

import pytest

from flows.serving import running
from tests.models import make_model_dir, register

__all__ = ["make_model_dir", "register", "running", "stalled"]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> list[Path]:
    """Two different tiny assistants (different seeds), as a finetune stage would leave them."""
    root = tmp_path_factory.mktemp("models")
    return [make_model_dir(root / f"m{seed}", seed) for seed in (0, 1)]


@contextlib.contextmanager
def stalled(worker, steps: int = 0):
    """Let `worker`'s engine run only `steps` more steps (the test releases more through the yielded semaphore);
    everything runs freely again after the block."""
    permits = threading.Semaphore(steps)
    step = worker.gen.step

    def gated():
        permits.acquire()
        return step()

    worker.gen.step = gated
    try:
        yield permits
    finally:
        del worker.gen.step
        permits.release(1_000_000)


@pytest.fixture(scope="session")
def tool_model_dir(tmp_path_factory) -> Path:
    """The tiny assistant that has memorised tool-calling conversations (tests/serve/tool_model.py), trained once a
    session (tests/flows uses the same folder)."""
    from tests.serve.tool_model import make_tool_model

    return make_tool_model(tmp_path_factory.getbasetemp() / "tool-model")


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
