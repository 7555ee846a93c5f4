"""A tiny assistant (random weights, a real BPE tokenizer) registered in a real MLflow registry, and the server over
it on a free loopback port, stopped after each test."""

import contextlib
import threading
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import train_bpe

TEXT = ("The quick brown fox jumps over the lazy dog. 12 + 30 = 42. Paris is the capital of France. "
        "How many letters are in the word banana? There are six letters. ") * 40


def make_model_dir(folder: Path, seed: int = 0, seq_len: int = 128) -> Path:
    tok = train_bpe([TEXT], vocab_size=400)
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=tok.vocab_size, seq_len=seq_len, n_layer=2, n_embd=64, n_head=4, n_kv_head=2,
                    mlp_hidden=160)
    model = GPT(cfg)
    with torch.no_grad():  # sharpen the random model: greedy choices far from ties, answers that vary
        model.lm_head.weight.mul_(8)
        model.lm_head.weight[tok.special_id("<|assistant_end|>")] *= 0.05  # answers long enough to stream
        model.lm_head.weight[tok.special_id("<|user_start|>")] *= 0.05
        model.lm_head.weight[tok.bos_id] *= 0.05
    save_model(model, folder)
    tok.save(folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> list[Path]:
    """Two different tiny assistants (different seeds), as a finetune stage would leave them."""
    root = tmp_path_factory.mktemp("models")
    return [make_model_dir(root / f"m{seed}", seed) for seed in (0, 1)]


def register(workdir: Path, folder: Path, alias: str = "production") -> str:
    """Register `folder` as a new `assistant` version in the workdir's MLflow store and point `alias` at it."""
    from tasks.core import model_registry
    from tasks.core.tracking import client, experiment_id

    c = client(workdir)
    run = c.create_run(experiment_id(c, "serve-tests", workdir))
    version = model_registry.register(c, "assistant", folder, run.info.run_id, {})
    c.set_terminated(run.info.run_id)
    model_registry.move_alias(c, "assistant", alias, version)
    return version


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
