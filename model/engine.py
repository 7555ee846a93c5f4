"""Sampling: prefill the prompt once into a KV cache, then one token per step; Engine adds text and chat on top.
BatchGenerator runs many requests at once (continuous batching): a request joins the running batch at the next step
and leaves it when it ends, and each step decodes one token for every running request in one forward pass.

Tools (model/tools.py): an answer that writes <|tool_call_end|> pauses; `ToolUse` runs the call and gives the context
to go on from (the call's turn closed, the result between its markers, a new assistant turn opened), the same for the
single-sequence Engine, the batch runner `answer_batch` and the server."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from model.chat import ROLE_MARKERS, TOOL_CALL_END, TOOL_CALL_START, render_prompt
from model.gpt import GPT
from model.tokenizer import Tokenizer
from model.tools import Toolbox


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> int:
    """One token id from a [vocab] logits row: argmax at temperature 0, else softmax(logits/T) over the top_k."""
    if temperature <= 0.0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate_stream(model: GPT, ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                    top_k: int | None = None, stop_ids: Iterable[int] = (), seed: int | None = None) -> Iterator[int]:
    """Yield new token ids one by one (the stop token is not yielded). The context is cropped to config.seq_len."""
    if not ids:
        raise ValueError("generate: ids is empty; start with at least <|bos|>")
    seq_len = model.config.seq_len
    device = next(model.parameters()).device
    stop = set(stop_ids)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        ids = list(ids)
        cache = model.new_kv_cache()
        logits, _ = model(torch.tensor([ids[-seq_len:]], device=device), kv_cache=cache)
        for i in range(max_new_tokens):
            token = sample_next(logits[0, -1], temperature, top_k, generator)
            if token in stop:
                return
            yield token
            ids.append(token)
            if i == max_new_tokens - 1:
                return
            if cache.pos < seq_len:
                logits, _ = model(torch.tensor([[token]], device=device), kv_cache=cache)
            else:
                # The window is full: keeping the cache would need shifted rotary positions, so recompute the cropped
                # window from scratch (exactly what a model without a cache sees).
                logits, _ = model(torch.tensor([ids[-seq_len:]], device=device))
    finally:
        model.train(was_training)


@torch.no_grad()
def generate(model: GPT, ids: list[int], max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
             stop_ids: Iterable[int] = (), seed: int | None = None) -> list[int]:
    """The NEW token ids only (stop token excluded). temperature 0 = greedy."""
    return list(generate_stream(model, ids, max_new_tokens, temperature, top_k, stop_ids, seed))


class Engine:
    """Text in, text out, for a model and its tokenizer."""

    def __init__(self, model: GPT, tokenizer: Tokenizer):
        self.model = model
        self.tok = tokenizer

    def complete(self, text: str, max_new_tokens: int = 64, temperature: float = 0.0, seed: int | None = None,
                 top_k: int | None = None) -> str:
        """Continue `text` as a document (prefixed with <|bos|>); a new <|bos|> ends it."""
        ids = [self.tok.bos_id] + self.tok.encode(text)
        new = generate(self.model, ids, max_new_tokens, temperature, top_k, [self.tok.bos_id], seed)
        return self.tok.decode(new)

    def _chat_stop_ids(self) -> list[int]:
        return [self.tok.special_id("<|assistant_end|>"), self.tok.bos_id]

    def chat(self, messages: list[dict[str, Any]], max_new_tokens: int = 128, temperature: float = 0.0,
             seed: int | None = None, top_k: int | None = None, tools: Toolbox | None = None) -> str:
        """The assistant's reply to `messages` (last one from the user), up to <|assistant_end|>; with `tools`, the
        text after the last tool result (`answer` has the calls too)."""
        return self.answer(messages, max_new_tokens, temperature, seed, top_k, tools).text

    def answer(self, messages: list[dict[str, Any]], max_new_tokens: int = 128, temperature: float = 0.0,
               seed: int | None = None, top_k: int | None = None, tools: Toolbox | None = None) -> ToolUse:
        """The reply to `messages` with its tool calls run (none when `tools` is None: a call is then plain text).
        `max_new_tokens` bounds the tokens the model writes in all, tool results not counted."""
        use = ToolUse(self.tok, tools, render_prompt(self.tok, messages), max_new_tokens)
        ids: list[int] | None = use.ids
        while ids is not None:
            if use.calls and len(ids) >= self.model.config.seq_len:
                # a tool result filled the context: stop as the batch runner does, rather than slide the question out
                ids = use.feed([], "length")
                break
            new: list[int] = []
            segment_seed = None if seed is None else seed + len(use.calls)
            for token in generate_stream(self.model, ids, use.budget, temperature, top_k, self._chat_stop_ids(),
                                         segment_seed):
                new.append(token)
                if token in use.pause_ids:
                    break
            reason = ("tool_call" if new and new[-1] in use.pause_ids
                      else "length" if len(new) >= use.budget else "stop")
            ids = use.feed(new, reason)
        return use

    def stream_chat(self, messages: list[dict[str, Any]], max_new_tokens: int = 128, temperature: float = 0.0,
                    seed: int | None = None, top_k: int | None = None) -> Iterator[str]:
        """Like chat, but yields text pieces as they are sampled (a piece is held back while it ends mid-character)."""
        ids = render_prompt(self.tok, messages)
        new: list[int] = []
        shown = ""
        for token in generate_stream(self.model, ids, max_new_tokens, temperature, top_k,
                                     self._chat_stop_ids(), seed):
            new.append(token)
            text = self.tok.decode(new)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 sequence; wait for the next token
            if len(text) > len(shown):
                yield text[len(shown):]
            shown = text
        text = self.tok.decode(new)
        if len(text) > len(shown):
            yield text[len(shown):]


@dataclass(eq=False)
class GenRequest:
    """One sequence to continue. `on_token(request, token)` sees each new token as it is sampled (the stop token is
    not shown); `finish_reason` becomes "stop" (a stop token, or finish() called), "length" (max_tokens, or the
    model's context is full), "cancelled", or "tool_call" (a token of `pause_ids` was sampled: it is kept and shown,
    and a `ToolUse` gives the ids to go on from)."""

    ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()
    pause_ids: frozenset[int] = frozenset()
    on_token: Callable[[GenRequest, int], None] | None = None
    on_done: Callable[[GenRequest], None] | None = None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None  # why the engine failed it (finish_reason "error")
    _end: str | None = None  # asked from another thread: applied at the next step

    def finish(self, reason: str = "stop") -> None:
        """End this request at the next step (a stop string was seen, or the client left: "cancelled")."""
        self._end = reason


def sample_rows(logits: torch.Tensor, requests: list[GenRequest],
                generators: list[torch.Generator | None]) -> list[int]:
    """One token per row of logits [B, vocab], each row with its own request's temperature, top_k, top_p and seed."""
    greedy = logits.argmax(dim=-1).tolist()
    out = []
    for row, (req, gen) in enumerate(zip(requests, generators, strict=True)):
        if req.temperature < 1e-5:  # below that, logits / T overflows: it is greedy anyway
            out.append(greedy[row])
            continue
        x = logits[row].float() / req.temperature
        if req.top_k is not None and req.top_k < x.numel():
            x = x.masked_fill(x < torch.topk(x, req.top_k).values[-1], float("-inf"))
        probs = torch.softmax(x, dim=-1)
        if req.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            # keep the smallest set whose mass reaches top_p (the first token always stays)
            drop = (sorted_p.cumsum(0) - sorted_p) >= req.top_p
            probs = probs.scatter(0, order[drop], 0.0)
        out.append(int(torch.multinomial(probs, 1, generator=gen)))
    return out


class BatchGenerator:
    """Continuous batching over a slot KV cache. `submit` may be called from any thread; `step` from one thread only.

    Running sequences sit in slots 0..n-1 (a finished one's slot is filled by the last one), so a decode step is one
    forward pass over the first n rows."""

    def __init__(self, model: GPT, max_batch: int = 32):
        self.model = model.eval()
        self.max_batch = max_batch
        self.seq_len = model.config.seq_len
        self.cache = model.new_slot_cache(max_batch)
        self.device = next(model.parameters()).device
        self.running: list[GenRequest] = []
        self._generators: list[torch.Generator | None] = []
        self._logits = torch.zeros(max_batch, model.config.vocab_size, device=self.device)
        self._waiting: deque[GenRequest] = deque()
        self._lock = threading.Lock()

    def submit(self, req: GenRequest) -> None:
        if not req.ids:
            raise ValueError("BatchGenerator: a request needs at least one prompt token (<|bos|>)")
        if len(req.ids) >= self.seq_len:
            raise ValueError(f"BatchGenerator: {len(req.ids)} prompt tokens leave no room in seq_len={self.seq_len}")
        with self._lock:
            self._waiting.append(req)

    def reset(self) -> list[GenRequest]:
        """Drop every running and waiting request (after a failed step); returns them. The cache is kept."""
        with self._lock:
            dropped = [*self.running, *self._waiting]
            self._waiting.clear()
        self.running.clear()
        self._generators.clear()
        self.cache.pos.zero_()
        return dropped

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def idle(self) -> bool:
        return not self.running and not self._waiting

    @torch.no_grad()
    def _admit(self) -> list[GenRequest]:
        """Prefill waiting requests into free slots; returns those cancelled before they ran."""
        dropped = []
        while len(self.running) < self.max_batch:
            with self._lock:
                if not self._waiting:
                    break
                req = self._waiting.popleft()
            if req._end is not None:
                req.finish_reason = req._end
                dropped.append(req)
                continue
            slot = len(self.running)
            self.cache.clear(slot)
            self.cache.prefill_slot = slot
            try:
                logits, _ = self.model(torch.tensor([req.ids], device=self.device), kv_cache=self.cache)
            finally:
                self.cache.prefill_slot = None
            self._logits[slot] = logits[0, -1]
            gen = None
            if req.seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(req.seed)
            self.running.append(req)
            self._generators.append(gen)
        return dropped

    def _remove(self, slot: int) -> None:
        last = len(self.running) - 1
        if slot != last:
            self.cache.move(last, slot)
            self.running[slot] = self.running[last]
            self._generators[slot] = self._generators[last]
        self.running.pop()
        self._generators.pop()
        self.cache.clear(last)

    @torch.no_grad()
    def step(self) -> list[GenRequest]:
        """Admit waiting requests, sample one token for every running one, decode; returns the requests that ended."""
        ended = self._admit()
        n = len(self.running)
        if n == 0:
            return self._done(ended)
        tokens = sample_rows(self._logits[:n], self.running, self._generators)
        for req, token in zip(self.running, tokens, strict=True):
            if req._end is not None:
                req.finish_reason = req._end
            elif token in req.stop_ids:
                req.finish_reason = "stop"
            else:
                req.tokens.append(token)
                if req.on_token is not None:
                    req.on_token(req, token)
                if req._end is not None:
                    req.finish_reason = req._end
                elif token in req.pause_ids:
                    req.finish_reason = "tool_call"
                elif len(req.tokens) >= req.max_tokens or len(req.ids) + len(req.tokens) >= self.seq_len:
                    req.finish_reason = "length"
        for slot in reversed(range(n)):
            if self.running[slot].finish_reason is not None:
                ended.append(self.running[slot])
                tokens[slot] = tokens[len(self.running) - 1]
                self._remove(slot)
        n = len(self.running)
        if n:
            self.cache.bind(n, max(len(r.ids) + len(r.tokens) for r in self.running))
            logits, _ = self.model(torch.tensor(tokens[:n], device=self.device)[:, None], kv_cache=self.cache)
            self._logits[:n] = logits[:, -1]
        return self._done(ended)

    @staticmethod
    def _done(ended: list[GenRequest]) -> list[GenRequest]:
        for req in ended:
            if req.on_done is not None:
                req.on_done(req)
        return ended

    def run(self, requests: Iterable[GenRequest]) -> list[GenRequest]:
        """Submit every request and step until all have ended (batch inference without a server)."""
        requests = list(requests)
        for req in requests:
            self.submit(req)
        while not self.idle():
            self.step()
        return requests


class ToolUse:
    """One answer's way through its tool calls. `feed` takes each segment the model wrote (up to a stop, a pause on
    <|tool_call_end|>, or the token budget); after a call it runs the tool and returns the ids to go on from: the
    context so far, <|assistant_end|>, the result between <|tool_result_start|> and <|tool_result_end|>, and a new
    <|assistant_start|>, exactly as `render_conversation` renders the same turns, so training and use agree.

    When it is done: `text` (what follows the last result), `messages` (the assistant and tool turns it added, in the
    OpenAI shape with the arguments as an object), `calls` ({"name", "arguments", "result"}), `finish_reason`."""

    def __init__(self, tok: Tokenizer, tools: Toolbox | None, prompt: list[int], max_new_tokens: int):
        self.tok, self.tools = tok, tools
        self.ids = list(prompt)
        self.budget = max_new_tokens
        self.generated = 0
        self.calls: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.text = ""
        self.finish_reason: str | None = None
        self._start, self._end = tok.special_id(TOOL_CALL_START), tok.special_id(TOOL_CALL_END)
        self.pause_ids = frozenset({self._end}) if tools is not None else frozenset()

    def feed(self, tokens: list[int], finish_reason: str) -> list[int] | None:
        """Record a segment; the ids to continue from, or None when the answer is over."""
        self.generated += len(tokens)
        self.budget = max(0, self.budget - len(tokens))
        if finish_reason != "tool_call" or self.tools is None:
            self.text = self.tok.decode(tokens)
            self.messages.append({"role": "assistant", "content": self.text})
            self.finish_reason = finish_reason
            return None
        start = max((i for i, t in enumerate(tokens) if t == self._start), default=-1)
        if start < 0:  # an end marker without a start: no call was written, the segment is text
            self.text = self.tok.decode(tokens)
            self.messages.append({"role": "assistant", "content": self.text})
            self.finish_reason = "stop"
            return None
        content = self.tok.decode(tokens[:start])
        call_text = self.tok.decode(tokens[start + 1:-1])
        refused = self.tools.over_limit(len(self.calls))
        if refused:  # named in the record, not run
            call, result = self.tools.parse(call_text), refused
        else:
            call, result = self.tools.call(call_text)
        name = call.name if call else None
        arguments = call.arguments if call else call_text
        self.calls.append({"name": name, "arguments": arguments, "result": result})
        self.messages.append({"role": "assistant", "content": content, "tool_calls": [
            {"id": f"call_{len(self.calls)}", "type": "function",
             "function": {"name": name, "arguments": arguments} if call else call_text}]})
        self.messages.append({"role": "tool", "content": result})
        if refused and len(self.calls) > self.tools.limits.max_calls + 1 or self.budget == 0:
            # it was told it had no calls left and called again, or it has no tokens left to answer with
            self.finish_reason = "tool_calls_exceeded" if self.budget else "length"
            return None
        self.ids = [*self.ids, *tokens, self.tok.special_id(ROLE_MARKERS["assistant"][1]),
                    self.tok.special_id(ROLE_MARKERS["tool"][0]), *self.tok.encode(result),
                    self.tok.special_id(ROLE_MARKERS["tool"][1]), self.tok.special_id(ROLE_MARKERS["assistant"][0])]
        return self.ids

    def transcript(self) -> str:
        """The calls, their results and the answer, for a terminal or a log."""
        lines = [f"[{c['name'] or 'call'}] {c['arguments']} -> {c['result']}" for c in self.calls]
        return "\n".join([*lines, self.text])


def answer_batch(model: GPT, tok: Tokenizer, prompts: list[list[int]], max_new_tokens: int,
                 tools: Toolbox | None = None, max_batch: int = 32) -> list[ToolUse]:
    """Greedy answers to many rendered prompts at once, each with its tool calls run (one BatchGenerator: an answer
    paused on a call rejoins the batch with the result in its context)."""
    stops = frozenset({tok.special_id(ROLE_MARKERS["assistant"][1]), tok.bos_id})
    gen = BatchGenerator(model, max_batch=max_batch)
    uses = [ToolUse(tok, tools, p, max_new_tokens) for p in prompts]
    owner: dict[int, ToolUse] = {}

    def submit(use: ToolUse, ids: list[int]) -> None:
        if len(ids) >= gen.seq_len:  # the context is full: what was written so far is the answer
            use.feed([], "length")
            return
        req = GenRequest(ids, use.budget, stop_ids=stops, pause_ids=use.pause_ids)
        owner[id(req)] = use
        gen.submit(req)

    for use in uses:
        submit(use, use.ids)
    while not gen.idle():
        for req in gen.step():
            use = owner.pop(id(req))
            ids = use.feed(req.tokens, req.finish_reason)
            if ids is not None:
                submit(use, ids)
    return uses
