"""The OpenAI-compatible HTTP server: chat and text completions (streamed or not), models, feedback, health,
Prometheus metrics, the web chat page, and admin routes (reload, export). A thin layer: the engine batches, the store
keeps every request and feedback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.chat import render_prompt
from model.engine import GenRequest
from serve import protocol
from serve.engine import Served, TextStream, Worker, stop_ids
from serve.store import Store

log = logging.getLogger("factory.serve")
STATIC = Path(__file__).parent / "static"
disable_created_metrics()  # the *_created series only repeat the start time
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeSettings(BaseModel):
    """Limits and keys of one server (the `factory serve` options)."""

    model_config = ConfigDict(extra="forbid")

    api_keys: dict[str, str] = Field(default_factory=dict, description="key -> client name; empty = no auth.")
    admin_key: str | None = Field(None, description="Key for /admin/reload and /admin/export.")
    max_batch: int = Field(32, ge=1, description="Requests decoded together in one step.")
    max_queue: int = Field(64, ge=0, description="Requests waiting for a slot before new ones get 429.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body (413 above).")
    max_prompt_tokens: int | None = Field(None, ge=1, description="Longest prompt; default: the context minus one.")
    max_tokens: int = Field(1024, ge=1, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request gives none.")


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("factory_requests", "HTTP requests to the API, by route and status.",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter("factory_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generated_tokens = Counter("factory_generated_tokens", "Tokens generated.", registry=r)
        self.ttft = Histogram("factory_time_to_first_token_seconds", "From request to first generated token.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("factory_request_latency_seconds", "From request to last generated token.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("factory_queue_depth", "Requests waiting for a batch slot.", registry=r)
        self.running = Gauge("factory_running_requests", "Requests being decoded.", registry=r)
        self.model = Gauge("factory_model_version", "The model version served (value 1 on its labels).",
                           ["model", "version"], registry=r)
        self.feedback = Counter("factory_feedback", "Ratings received, by rating.", ["rating"], registry=r)


class Generation:
    """One request's choices on one worker: submitted together, each with its own text stream."""

    def __init__(self, worker: Worker, prompt: list[int], body: protocol.Sampling, max_tokens: int, chat: bool):
        self.worker = worker
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.texts = [TextStream(worker.tok, body.stops()) for _ in range(body.n)]
        self.requests = [
            GenRequest(list(prompt), max_tokens, body.temperature, body.top_p, body.top_k,
                       None if body.seed is None else body.seed + i, stop_ids(worker.tok, chat),
                       on_token=self._token(i), on_done=self._done(i))
            for i in range(body.n)
        ]
        self.prompt_tokens = len(prompt)

    def _token(self, i: int):
        def on_token(req: GenRequest, token: int) -> None:
            self.worker.post(self.loop, self.events.put_nowait, (i, token))
        return on_token

    def _done(self, i: int):
        def on_done(req: GenRequest) -> None:
            self.worker.post(self.loop, self.events.put_nowait, (i, None))
        return on_done

    def submit(self) -> None:
        for req in self.requests:
            self.worker.submit(req)

    async def pieces(self) -> AsyncIterator[tuple[int, str, str | None]]:
        """(choice, text piece, finish_reason or None) as tokens arrive; each choice ends with its finish reason."""
        open_ = set(range(len(self.requests)))
        while open_:
            events = [await self.events.get()]
            while not self.events.empty():  # a client that fell behind gets what piled up as one piece
                events.append(self.events.get_nowait())
            out: dict[int, list] = {}
            for i, token in events:
                if i not in open_:
                    continue
                req, text = self.requests[i], self.texts[i]
                piece, reason = "", None
                if token is None:
                    open_.discard(i)
                    if req.finish_reason == "error":
                        raise APIError(500, f"generation failed: {req.error}", "engine_error")
                    piece, reason = text.flush(), "stop" if text.stopped else req.finish_reason
                else:
                    if self.first_token is None:
                        self.first_token = time.perf_counter()
                    piece = text.push(token)
                    if text.stopped:
                        req.finish("stop")
                        open_.discard(i)
                        reason = "stop"
                slot = out.setdefault(i, ["", None])
                slot[0] += piece
                slot[1] = reason or slot[1]
            for i, (piece, reason) in out.items():
                if piece or reason:
                    yield i, piece, reason

    def cancel(self) -> None:
        for req in self.requests:
            if req.finish_reason is None:
                req.finish("cancelled")

    @property
    def completion_tokens(self) -> int:
        return sum(len(t.ids) for t in self.texts)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


def create_app(served: Served, store: Store, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    app = FastAPI(title="LLM Factory", description="OpenAI-compatible API over the factory's models.")
    metrics = Metrics()
    recorder = ThreadPoolExecutor(1, thread_name_prefix="store")
    app.state.served, app.state.store, app.state.settings, app.state.metrics = served, store, settings, metrics
    keys = dict(settings.api_keys)

    @app.on_event("shutdown")
    def _shutdown() -> None:
        recorder.shutdown(wait=True)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        metrics.requests.labels(request.url.path, str(exc.status)).inc()
        return JSONResponse(protocol.error_body(exc.status, exc.message, exc.code, exc.param), exc.status,
                            headers=exc.headers)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc):
        return JSONResponse(protocol.error_body(404, f"no route {request.method} {request.url.path}",
                                                "not_found"), 404)

    @app.exception_handler(405)
    async def _bad_method(request: Request, exc):
        return JSONResponse(protocol.error_body(405, f"{request.method} is not allowed on {request.url.path}",
                                                "method_not_allowed"), 405)

    def client(request: Request, admin: bool = False) -> str:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else None
        if admin:
            if not settings.admin_key:
                raise APIError(403, "admin routes are off: start the server with an admin key (FACTORY_ADMIN_KEY)",
                               "admin_disabled")
            if key != settings.admin_key:
                raise APIError(401, "admin routes need 'Authorization: Bearer <admin key>'", "invalid_api_key")
            return "admin"
        if not keys:
            return "anonymous"
        if key is None:
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", "missing_api_key")
        if key not in keys:
            raise APIError(401, "invalid API key", "invalid_api_key")
        return keys[key]

    async def parse(request: Request, model: type[BaseModel]):
        too_large = APIError(413, f"the request body is over the limit of {settings.max_body_bytes} bytes",
                             "request_too_large")
        if int(request.headers.get("content-length") or 0) > settings.max_body_bytes:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():  # a body without a length is cut off at the limit, not read whole
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise too_large
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise APIError(400, f"request body is not JSON: {exc}", "invalid_json") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(p) for p in e["loc"])
            raise APIError(422, f"{where}: {e['msg']}" if where else e["msg"], "invalid_value", where or None) \
                from None

    def check_model(body: protocol.Sampling) -> Worker:
        worker = served.current
        name, alias = worker.source.name, worker.source.alias
        # the name, the version served now (name@3 or name/3) or the alias followed; a pinned older version is not
        # silently answered by the new one
        names = {name, f"{name}@{worker.version}", f"{name}/{worker.version}", f"{name}@{alias or worker.version}"}
        if body.model not in names:
            raise APIError(404, f"model {body.model!r} is not served here; GET /v1/models lists {name!r} "
                           f"(version {worker.version})", "model_not_found", "model")
        return worker

    def limits(body: protocol.Sampling, prompt: list[int], worker: Worker) -> int:
        longest = min(settings.max_prompt_tokens or worker.seq_len - 1, worker.seq_len - 1)
        if len(prompt) > longest:
            param = "messages" if isinstance(body, protocol.ChatRequest) else "prompt"
            raise APIError(400, f"the prompt is {len(prompt)} tokens; this model takes at most {longest}",
                           "context_length_exceeded", param)
        asked = (body.max_completion_tokens or body.max_tokens
                 or min(settings.default_max_tokens, settings.max_tokens))
        if asked > settings.max_tokens:
            raise APIError(400, f"max_tokens={asked} is over the server's limit of {settings.max_tokens}",
                           "max_tokens_too_large", "max_tokens")
        # the choices that would wait: those beyond the free slots of the batch
        waiting = worker.queued + worker.running + body.n - settings.max_batch
        if waiting > settings.max_queue:
            raise APIError(429, f"the server is busy ({worker.queued} requests waiting); retry shortly",
                           "queue_full", headers={"Retry-After": "1"})
        return asked

    def record(gen: Generation, rid: str, route: str, body: protocol.Sampling, name: str, answers, status: int,
               who: str, messages=None, prompt=None) -> dict:
        latency = time.perf_counter() - gen.started
        metrics.requests.labels(route, str(status)).inc()
        metrics.prompt_tokens.inc(gen.prompt_tokens)
        metrics.generated_tokens.inc(gen.completion_tokens)
        metrics.latency.observe(latency)
        if gen.ttft is not None:
            metrics.ttft.observe(gen.ttft)
        return {
            "id": rid, "created": time.time(), "endpoint": "chat" if messages is not None else "completions",
            "model": body.model, "model_version": gen.worker.version, "messages": messages, "prompt": prompt,
            "answer": answers[0][0] if answers else "", "finish_reason": answers[0][1] if answers else None,
            "sampling": {**body.settings(), "max_tokens": gen.requests[0].max_tokens},
            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens, "ttft_s": gen.ttft,
            "latency_s": latency, "status": status, "client": who,
            "meta": meta(body, answers),
        }

    async def complete(request: Request, chat: bool):
        who = client(request)
        body = await parse(request, protocol.ChatRequest if chat else protocol.CompletionRequest)
        worker = check_model(body)
        route = "/v1/chat/completions" if chat else "/v1/completions"
        if chat:
            messages = [m.model_dump(exclude_none=True, include={"role", "content"}) for m in body.messages]
            try:
                prompt = render_prompt(worker.tok, messages)  # typed role markers are encoded as text
            except ValueError as exc:  # e.g. a system message that is not the first
                raise APIError(422, str(exc), "invalid_value", "messages") from None
            prompt_text = None
        else:
            messages, prompt_text = None, body.prompt
            prompt = [worker.tok.bos_id] + worker.tok.encode(body.prompt)
        max_tokens = limits(body, prompt, worker)
        gen = Generation(worker, prompt, body, max_tokens, chat)
        try:
            gen.submit()
        except RuntimeError:  # the version was unloaded between the lookup and now (a reload)
            gen.cancel()
            raise APIError(503, "the model is being reloaded; retry", "model_reloading",
                           headers={"Retry-After": "1"}) from None
        metrics.queue.set(served.queued())
        rid = protocol.new_id("chatcmpl" if chat else "cmpl")
        created = protocol.now()
        name = worker.source.name
        version = worker.version

        def row(answers, status):
            return record(gen, rid, route, body, name, answers, status, who, messages, prompt_text)

        if not body.stream:
            texts = [""] * body.n
            reasons: list[str | None] = [None] * body.n
            try:
                async for i, piece, reason in gen.pieces():
                    texts[i] += piece
                    reasons[i] = reason or reasons[i]
            finally:
                if any(r is None for r in reasons):
                    gen.cancel()
            answers = list(zip(texts, reasons, strict=True))
            await asyncio.shield(asyncio.wrap_future(recorder.submit(store.record, row(answers, 200))))
            make = protocol.chat_completion if chat else protocol.text_completion
            return JSONResponse(make(rid, name, version, created, answers, gen.prompt_tokens, gen.completion_tokens))

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            texts = [""] * body.n
            reasons: list[str | None] = [None] * body.n
            finished, status = False, 499  # the client left, unless the engine failed
            try:
                if chat:
                    for i in range(body.n):
                        yield sse(protocol.chat_chunk(rid, name, version, created, i, {"role": "assistant",
                                                                                      "content": ""}))
                # one JSON template per choice: a token's chunk is its text spliced in, not a new dict to encode
                content = [piece_template(protocol.chat_chunk(rid, name, version, created, i, {"content": PIECE})
                                          if chat else protocol.text_chunk(rid, name, version, created, i, PIECE))
                           for i in range(body.n)]
                async for i, piece, reason in gen.pieces():
                    texts[i] += piece
                    reasons[i] = reason or reasons[i]
                    if piece:
                        yield content[i](piece)
                    if reason:
                        yield sse(protocol.chat_chunk(rid, name, version, created, i, {}, reason)
                                  if chat else protocol.text_chunk(rid, name, version, created, i, "", reason))
                if include_usage:
                    yield sse({"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                               "created": created, "model": name, "model_version": version, "choices": [],
                               "usage": protocol.usage(gen.prompt_tokens, gen.completion_tokens)})
                finished = True
                # recorded before the client sees the end, and shielded: a client leaving now does not undo it
                await asyncio.shield(asyncio.wrap_future(
                    recorder.submit(store.record, row(list(zip(texts, reasons, strict=True)), 200))))
                yield "data: [DONE]\n\n"
            except APIError as exc:
                status = exc.status
                yield sse(protocol.error_body(exc.status, exc.message, exc.code))
            finally:
                if not finished:  # free the slots, keep what was said
                    gen.cancel()
                    recorder.submit(store.record, row(list(zip(texts, [r or "cancelled" for r in reasons],
                                                              strict=True)), status))

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    @app.get("/v1/models")
    async def models(request: Request):
        client(request)
        w = served.current
        return {"object": "list", "data": [{"id": w.source.name, "object": "model", "created": 0,
                                            "owned_by": "llm-factory", "version": w.version}]}

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        who = client(request)
        body = await parse(request, protocol.FeedbackRequest)
        try:
            row = await asyncio.to_thread(store.add_feedback, body.response_id, body.rating, body.reason,
                                          {"client": who})
        except KeyError:
            raise APIError(404, f"no response {body.response_id!r} in the request log", "response_not_found",
                           "response_id") from None
        metrics.feedback.labels("good" if body.rating > 0 else "bad").inc()
        return {k: row[k] for k in ("response_id", "rating", "reason", "created")}

    @app.get("/v1/feedback")
    async def get_feedback(request: Request):
        client(request)
        ids = request.query_params.getlist("response_id")[:500]
        found = await asyncio.to_thread(store.feedback, ids)
        return {"data": [{k: f[k] for k in ("response_id", "rating", "reason", "created")} for f in found.values()]}

    @app.get("/health")
    async def health():
        w = served.current
        body = {"status": "ok" if w.alive else "engine stopped", "model": w.source.name, "version": w.version,
                "running": served.running(), "queued": served.queued()}
        return JSONResponse(body, 200 if w.alive else 503)

    @app.get("/metrics")
    async def prometheus():
        metrics.queue.set(served.queued())
        metrics.running.set(served.running())
        metrics.model.clear()
        metrics.model.labels(served.current.source.name, served.current.version).set(1)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    async def reload(request: Request):
        client(request, admin=True)
        try:
            changed = await asyncio.to_thread(served.reload)
        except LookupError as exc:  # the reference points nowhere now: keep serving what is loaded
            raise APIError(404, str(exc), "model_not_found") from None
        return {"changed": changed, "model": served.name, "version": served.current.version}

    @app.get("/admin/export")
    async def export(request: Request):
        client(request, admin=True)
        try:
            after = int(request.query_params.get("after", 0))
        except ValueError:
            raise APIError(422, "after: an integer request seq", "invalid_value", "after") from None
        rows = await asyncio.to_thread(store.requests, after)
        return PlainTextResponse("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                 media_type="application/x-ndjson")

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    return app


def meta(body: protocol.Sampling, answers) -> dict:
    """The request's `user` (generated users call themselves "simulated-..."), and every choice when n > 1."""
    out: dict = {}
    if body.user:
        out["user"] = body.user
        out["simulated"] = body.user.startswith("simulated-")
    if len(answers) > 1:
        out["choices"] = [{"text": t, "finish_reason": r} for t, r in answers]
    return out


PIECE = "\x00piece\x00"  # where a template takes the text: no model output or JSON key contains it


def piece_template(chunk: dict) -> Callable[[str], str]:
    """The SSE event of `chunk` with its PIECE placeholder replaced by a given text, JSON-escaped."""
    head, tail = sse(chunk).split(json.dumps(PIECE, ensure_ascii=False))
    return lambda piece: head + json.dumps(piece, ensure_ascii=False) + tail


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
