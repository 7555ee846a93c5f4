"""The model behind the server: a worker thread per loaded version that steps the batch generator (with the version's
built-in tools and identity beside it), a follower that loads the new version when the served alias moves (requests
in flight finish on the old one), and the incremental detokenizer that turns tokens into text pieces, holding back
what may be the start of a stop string."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from model.engine import BatchGenerator, GenRequest
from model.evaluate import load_assistant
from model.identity import load_identity
from model.tokenizer import Tokenizer
from model.tools import TOOL_NAMES, Tool, ToolsConfig, make_toolbox

log = logging.getLogger("factory.serve")


@dataclass(frozen=True)
class ModelSource:
    """Where the served model's files are: `name` as clients ask for it, the registry version, a local folder."""

    name: str
    version: str
    path: Path
    alias: str | None = None  # the alias it was found through (assistant@production), which clients may name too
    index: Path | None = None  # the search index of its yearly cycle (the version's `index_path` tag)


class Worker:
    """One loaded model version and the thread that runs its batch: requests join at the next step. `tools` are the
    built-in tools by name (search only where the version has an index), `identity` its system message, `notes`
    what a person starting it should know (a tool left out, and why)."""

    def __init__(self, source: ModelSource, max_batch: int, device: str | None = None,
                 tools: ToolsConfig | None = None):
        self.source = source
        self.version = source.version
        self.identity = load_identity(source.path)
        self.notes: list[str] = []
        self.tools = self._tools(tools or ToolsConfig())
        model, self.tok = load_assistant(source.path, device=device)
        self.seq_len = model.config.seq_len
        self.gen = BatchGenerator(model, max_batch=max_batch)
        self.steps = 0
        self._wake = threading.Event()
        self._draining = False
        self._ended = False
        self._lock = threading.Lock()  # a request submitted while the worker drains is run before it ends
        self._pending: set[GenRequest] = set()  # submitted and not ended: all of them fail if a step raises
        self._outbox: list[tuple] = []  # (event loop, function, argument) posted during a step, delivered after it
        self._thread = threading.Thread(target=self._loop, name=f"engine-v{self.version}", daemon=True)
        self._thread.start()

    def _tools(self, config: ToolsConfig) -> dict[str, Tool]:
        index = self.source.index
        if index is not None:
            try:
                return make_toolbox(TOOL_NAMES, index, config.limits, config.search_k).tools
            except (OSError, ValueError) as exc:  # keep serving without search; say why
                self.notes.append(f"search is off for v{self.version}: its index {index} does not load: {exc}")
        elif "search" in config.enabled:
            self.notes.append(f"search is off for v{self.version}: it has no search index (deploy records the "
                              "yearly cycle's index as the version's index_path tag; --index gives one)")
        return make_toolbox(TOOL_NAMES, None, config.limits, config.search_k).tools

    def submit(self, req: GenRequest) -> None:
        with self._lock:
            if self._ended:
                raise RuntimeError(f"model version {self.version} is unloaded")
            self.gen.submit(req)
            self._pending.add(req)
        self._wake.set()

    @property
    def queued(self) -> int:
        return self.gen.waiting

    @property
    def running(self) -> int:
        return len(self.gen.running)

    def post(self, loop, fn: Callable, arg) -> None:
        """Call `fn(arg)` on `loop` after the current step (engine thread only): one wake-up of the event loop per
        step for all the tokens of all the requests, not one per token."""
        self._outbox.append((loop, fn, arg))

    def _deliver(self) -> None:
        batch, self._outbox = self._outbox, []
        by_loop: dict = {}
        for loop, fn, arg in batch:
            by_loop.setdefault(loop, []).append((fn, arg))
        for loop, calls in by_loop.items():
            try:
                loop.call_soon_threadsafe(_call_all, calls)
            except RuntimeError:  # that event loop is closed: nobody is waiting any more
                pass

    def drain(self) -> None:
        """Finish what was submitted, then let the thread end (the model is freed with the worker)."""
        self._draining = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # the thread ends: refuse new requests and answer those it held
            log.exception(f"engine of v{self.version} stopped")
            with self._lock:
                self._ended = True
            self._fail(exc)
            raise

    def _run(self) -> None:
        while True:
            if self.gen.idle():
                with self._lock:
                    self._ended = self._draining and self.gen.idle()
                if self._ended:
                    log.info(f"model v{self.version}: unloaded")
                    return
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                ended = self.gen.step()
                self.steps += 1
                with self._lock:
                    self._pending.difference_update(ended)
            except Exception as exc:  # a failing step (e.g. out of memory) must not leave clients waiting forever
                log.exception(f"engine step failed on v{self.version}")
                self._fail(exc)
            self._deliver()

    def _fail(self, exc: BaseException) -> None:
        """End every request held (running, being admitted, waiting) with an error; the cache is reused, not
        reallocated (after an out-of-memory error a second cache would fail too)."""
        with self._lock:
            failed, self._pending = self._pending, set()
            self.gen.reset()
        for req in failed:
            req.finish_reason = "error"
            req.error = str(exc)
            if req.on_done is not None:
                req.on_done(req)
        self._deliver()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def _call_all(calls: list[tuple[Callable, object]]) -> None:
    for fn, arg in calls:
        fn(arg)


class Served:
    """The version being served: resolves the model reference now and every `poll_s`, and swaps workers when it
    moves. `resolve()` returns a ModelSource (e.g. the registry's assistant@production)."""

    def __init__(self, resolve: Callable[[], ModelSource], max_batch: int = 32, poll_s: float = 5.0,
                 device: str | None = None, tools: ToolsConfig | None = None):
        self.resolve = resolve
        self.max_batch = max_batch
        self.device = device
        self.tools = tools
        self.poll_s = poll_s
        self.current = Worker(resolve(), max_batch, device, tools)
        self._old: list[Worker] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, name="model-follower", daemon=True)
        if poll_s > 0:
            self._thread.start()

    @property
    def name(self) -> str:
        return self.current.source.name

    def reload(self) -> bool:
        """Serve the version the reference points at now; True if it changed."""
        with self._lock:
            source = self.resolve()
            if source == self.current.source:
                return False
            new = Worker(source, self.max_batch, self.device, self.tools)
            for note in new.notes:
                log.warning(note)
            old, self.current = self.current, new
            old.drain()
            self._old = self._unloading() + [old]
            log.info(f"serving {source.name} v{source.version} (was v{old.version})")
            return True

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                self._old = self._unloading()
            try:
                self.reload()
            except Exception as exc:  # keep serving the loaded version; say why the new one is not loaded
                log.warning(f"could not follow the model reference: {exc}")

    def _unloading(self) -> list[Worker]:
        """The old workers still finishing their requests (an ended one is dropped, and its model freed)."""
        return [w for w in self._old if w._thread.is_alive()]

    def queued(self) -> int:
        return sum(w.queued for w in [self.current, *self._unloading()])

    def running(self) -> int:
        return sum(w.running for w in [self.current, *self._unloading()])

    def close(self) -> None:
        self._stop.set()
        for w in [self.current, *self._old]:
            w.drain()


class TextStream:
    """Tokens in, text out: each call returns the text that is safe to show now. Text ending in a partial UTF-8
    character waits for the next token; text that may begin a stop string is held until it can be decided; a stop
    string found ends the text before it (`stopped` becomes True)."""

    def __init__(self, tok: Tokenizer, stops: list[str]):
        self.tok = tok
        self.stops = stops
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far (cut at a stop string)
        self.shown = 0
        self.stopped = False
        self._decoded = ""  # the text of ids[:self._done], which ends on a whole character
        self._done = 0

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(token)
        tail = self.tok.decode(self.ids[self._done:])  # byte-level BPE: pieces cut between characters concatenate
        if tail.endswith("\ufffd"):
            return ""
        self._decoded += _visible(tail)
        self._done = len(self.ids)
        self._cut(self._decoded)
        end = len(self.text) if self.stopped else len(self.text) - self._held(self.text)
        return self._advance(max(end, self.shown))

    def flush(self) -> str:
        """The rest, when generation has ended."""
        if not self.stopped:
            self._cut(self._decoded + _visible(self.tok.decode(self.ids[self._done:])))
        return self._advance(len(self.text))

    def _cut(self, text: str) -> None:
        """Keep `text` up to the earliest stop string in it."""
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        self.text = text[:min(found)] if found else text
        self.stopped = bool(found)

    def _held(self, text: str) -> int:
        """How many trailing characters could be the beginning of a stop string."""
        held = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    held = max(held, k)
                    break
        return held

    def _advance(self, end: int) -> str:
        piece = self.text[self.shown:end]
        self.shown = max(self.shown, end)
        return piece


def _visible(text: str) -> str:
    """A sampled NUL byte is shown (and stored) as U+FFFD, as any other byte that is not text: clients and databases
    (PostgreSQL text) choke on it."""
    return text.replace("\x00", "\ufffd")


def stop_ids(tok: Tokenizer, chat: bool) -> frozenset[int]:
    """A chat answer ends at <|assistant_end|> (or when the model starts another turn); a completion at <|bos|>."""
    ids = {tok.bos_id}
    if chat:
        ids |= {tok.special_id("<|assistant_end|>"), tok.special_id("<|user_start|>")}
    return frozenset(ids)


def set_threads(threads: int | None) -> int:
    """Torch's CPU threads for the engine: `threads`, or by default one core less than the machine has (at least
    one), so the HTTP side keeps a core: on 2 cores that is 1.5x the tokens/s of torch's default at 32 clients."""
    import os

    n = threads or max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    return n


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def elapsed(since: float) -> float:
    return time.perf_counter() - since
