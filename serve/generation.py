"""One request's choices on one worker, each answered in segments: a chat answer with tools on pauses when the model
closes a call (<|tool_call_end|>). A call to a built-in tool runs in a thread of its own (asyncio.to_thread, bounded
by the toolbox's timeout), so neither the event loop nor the engine's batch waits for it, and the answer then rejoins
the batch with the result in its context (model.engine.ToolUse gives the ids). A call to a function the client
declared ends the choice with finish_reason "tool_calls" for the client to run. The text the model writes outside
its calls is the answer, streamed as it comes; with the trained models that is what follows the last result."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from model.chat import TOOL_CALL_END, TOOL_CALL_START
from model.engine import GenRequest, ToolUse
from model.tools import ToolError, parse_call
from serve import protocol
from serve.engine import TextStream, Worker, stop_ids
from serve.protocol import APIError
from serve.tools import RequestTools


class Piece(NamedTuple):
    """What a choice has to show now, in this order: its text, then a built-in call that has run, a call to a client
    function, or the reason it ended."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tool_result: dict[str, Any] | None = None  # {"name", "arguments", "content"}
    tool_call: dict[str, Any] | None = None  # OpenAI's shape, arguments as a JSON string


# The engine's reasons that OpenAI's clients do not know, as they are told: the model kept calling tools after it
# was told it had no calls left, which a limit ended.
PUBLIC_REASON = {"tool_calls_exceeded": "length"}


@dataclass(eq=False)
class Choice:
    index: int
    text: TextStream
    use: ToolUse | None  # None: no tools, a call the model writes is text
    prefix: list[int] = field(default_factory=list)  # tokens the running segment starts with, not sampled
    req: GenRequest | None = None
    in_call: bool = False  # between <|tool_call_start|> and the pause: not text to show
    unsent: str = ""  # the text of a call never closed, shown when the choice ends
    sampled: int = 0
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    engine_reason: str | None = None  # when it differs from finish_reason (PUBLIC_REASON), for the request store

    def end(self, reason: str) -> str:
        self.engine_reason = reason if reason in PUBLIC_REASON else None
        self.finish_reason = PUBLIC_REASON.get(reason, reason)
        return self.finish_reason

    @property
    def message(self) -> dict[str, Any]:
        return protocol.assistant_message(self.text.text, self.tool_calls, self.tool_results)


class Generation:
    """The choices of one request: submitted together, each with its own text stream and tool calls."""

    def __init__(self, worker: Worker, prompt: list[int], body: protocol.Sampling, max_tokens: int, chat: bool,
                 tools: RequestTools | None = None, forced: list[int] | None = None):
        self.worker, self.body, self.tools = worker, body, tools
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.prompt, self.max_tokens = list(prompt), max_tokens
        self.prompt_tokens = len(prompt)
        self.stop = stop_ids(worker.tok, chat)
        self.call_start = worker.tok.special_id(TOOL_CALL_START)
        self.call_end = worker.tok.special_id(TOOL_CALL_END)
        toolbox = tools.toolbox if tools is not None else None
        self.choices = [
            Choice(i, TextStream(worker.tok, body.stops()),
                   ToolUse(worker.tok, toolbox, prompt, max_tokens) if toolbox is not None else None)
            for i in range(body.n)
        ]
        for c in self.choices:
            c.prefix = list(forced or []) if c.use is not None else []
            c.in_call = bool(c.prefix)
            c.req = self._request(c, [*self.prompt, *c.prefix], max(1, max_tokens - len(c.prefix)))
        self._tasks: set[asyncio.Task] = set()
        self.cancelled = False

    def _request(self, c: Choice, ids: list[int], max_tokens: int) -> GenRequest:
        body = self.body
        # each segment samples from its own seed (n <= 8 choices), so a call does not replay the draws before it
        calls = len(c.use.calls) if c.use is not None else 0  # feed has counted the call this segment follows
        seed = None if body.seed is None else body.seed + c.index + 8 * calls
        return GenRequest(ids, max_tokens, body.temperature, body.top_p, body.top_k, seed, self.stop,
                          c.use.pause_ids if c.use is not None else frozenset(),
                          on_token=self._token(c.index), on_done=self._done(c.index))

    def _token(self, i: int):
        def on_token(req: GenRequest, token: int) -> None:
            self.worker.post(self.loop, self.events.put_nowait, (i, token))
        return on_token

    def _done(self, i: int):
        def on_done(req: GenRequest) -> None:
            self.worker.post(self.loop, self.events.put_nowait, (i, None))
        return on_done

    def submit(self) -> None:
        for c in self.choices:
            self.worker.submit(c.req)

    async def pieces(self) -> AsyncIterator[Piece]:
        """Each choice's pieces as tokens and tool results arrive; each choice ends with a piece that has its finish
        reason. What piled up while a client fell behind comes as one piece per choice."""
        open_ = set(range(len(self.choices)))
        while open_:
            events = [await self.events.get()]
            while not self.events.empty():
                events.append(self.events.get_nowait())
            for piece in self._handle(events, open_):
                if piece.text or piece.finish_reason or piece.tool_result or piece.tool_call:
                    yield piece

    def _handle(self, events: list[tuple[int, Any]], open_: set[int]) -> list[Piece]:
        """The pieces of a batch of events: each choice's text gathered up to its next tool result or its end."""
        pending: dict[int, str] = {}
        ready: list[Piece] = []

        def emit(i: int, **what: Any) -> None:
            ready.append(Piece(i, pending.pop(i, ""), **what))

        for i, event in events:
            if i not in open_:
                continue
            c = self.choices[i]
            if isinstance(event, int):  # a token
                pending[i] = pending.get(i, "") + self._token_text(c, event)
                if c.text.stopped:
                    c.req.finish("stop")
                    open_.discard(i)
                    emit(i, finish_reason=c.end("stop"))
            elif event is None:  # the running segment ended
                ended = self._segment_done(c)
                if ended is not None:
                    open_.discard(i)
                    pending[i] = pending.get(i, "") + c.unsent + c.text.flush()
                    emit(i, finish_reason=ended, tool_call=c.tool_calls[-1] if ended == "tool_calls" else None)
            else:  # a built-in call has run: (its result, the reason the answer ended, or None: it goes on)
                result, ended = event
                c.tool_results.append(result)
                c.in_call = False
                if ended is None:
                    emit(i, tool_result=result)
                    continue
                if ended == "error":
                    raise APIError(503, f"the model was unloaded during a tool call ({c.req.error}); retry",
                                   "model_reloading", headers={"Retry-After": "1"})
                open_.discard(i)
                pending[i] = pending.get(i, "") + c.text.flush()
                emit(i, finish_reason=c.end(ended), tool_result=result)
        for i in list(pending):
            emit(i)
        return ready

    def _token_text(self, c: Choice, token: int) -> str:
        c.sampled += 1
        if self.first_token is None:
            self.first_token = time.perf_counter()
        if c.use is not None and token == self.call_start:
            c.in_call = True
        if c.in_call:
            return ""
        return c.text.push(token)

    def _segment_done(self, c: Choice) -> str | None:
        """The reason the choice ended with its running segment, or None while a built-in call runs."""
        req = c.req
        if req.finish_reason == "error":
            raise APIError(500, f"generation failed: {req.error}", "engine_error")
        tokens = [*c.prefix, *req.tokens]
        if req.finish_reason == "tool_call" and not c.in_call:
            # an end marker without a start: no call was written, the text (marker included) is the answer
            return c.end("stop")
        if req.finish_reason != "tool_call" or c.text.stopped:
            if c.in_call and not c.text.stopped:  # a call the model never closed is not a call: it stays text
                start = max((i for i, t in enumerate(tokens) if t == self.call_start), default=0)
                c.in_call = False
                c.unsent = "".join(c.text.push(token) for token in tokens[start:])
            return c.end("stop" if c.text.stopped else req.finish_reason)
        call = self._client_call(tokens)
        if call is not None:
            c.tool_calls.append(call)
            return c.end("tool_calls")
        task = asyncio.create_task(self._run_tool(c, tokens))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    def _client_call(self, tokens: list[int]) -> dict[str, Any] | None:
        """The call that ends `tokens`, in OpenAI's shape, if it is to a function the client declared."""
        start = max((i for i, t in enumerate(tokens) if t == self.call_start), default=-1)
        try:
            call = parse_call(self.worker.tok.decode(tokens[start + 1:-1]))
        except ToolError:
            return None  # not a call anyone can run: the toolbox answers it with the error, the model reads it
        if self.tools is None or call.name not in self.tools.functions:
            return None
        return protocol.tool_call(f"call_{uuid.uuid4().hex[:24]}", call.name, call.arguments)

    async def _run_tool(self, c: Choice, tokens: list[int]) -> None:
        try:
            ids = await asyncio.to_thread(c.use.feed, tokens, "tool_call")
            call = c.use.calls[-1]
        except Exception as exc:  # never leave the choice waiting for an event that will not come
            c.req.error = f"the tool call failed: {type(exc).__name__}: {exc}"
            self.events.put_nowait((c.index, ({"name": None, "arguments": {}, "content": f"error: {exc}"}, "error")))
            return
        result = {**_named(call["name"], call["arguments"]), "content": call["result"]}
        ended = None
        if ids is None:
            ended = c.use.finish_reason  # no tokens left, or calls past the limit
        elif self.cancelled:
            ended = "cancelled"
        elif len(ids) >= self.worker.seq_len:
            ended = "length"  # the result fills the context: what was written so far is the answer
        else:
            c.prefix = []
            c.req = self._request(c, ids, c.use.budget)
            try:
                self.worker.submit(c.req)
            except RuntimeError as exc:  # the version was unloaded while the tool ran (a reload)
                c.req.error = str(exc)
                ended = "error"
        self.events.put_nowait((c.index, (result, ended)))

    def cancel(self) -> None:
        self.cancelled = True
        for task in self._tasks:
            task.cancel()
        for c in self.choices:
            if c.req is not None and c.req.finish_reason is None:
                c.req.finish("cancelled")

    @property
    def answers(self) -> list[tuple[str, str | None]]:
        return [(c.text.text, c.finish_reason) for c in self.choices]

    @property
    def completion_tokens(self) -> int:
        return sum(c.sampled for c in self.choices)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


def _named(name: str | None, arguments: Any) -> dict[str, Any]:
    """A call's name and arguments; a call refused before it was read (past the call limit) is read here."""
    if name is None and isinstance(arguments, str):
        try:
            call = parse_call(arguments)
        except ToolError:
            return {"name": None, "arguments": arguments}
        return {"name": call.name, "arguments": call.arguments}
    return {"name": name, "arguments": arguments}
