"""The OpenAI-compatible HTTP server: chat and text completions (streamed or not), models, feedback, health,
Prometheus metrics, the web chat page, and admin routes (reload, export). A thin layer: the engine batches, the store
keeps every request and feedback.

Chat answers run the tool loop (serve/generation.py): the built-in tools the server offers (`ServeSettings.tools`;
an assistant's own, serve/assistants.py) run inside the request, and what was called comes back as the message's
`tool_results` and is kept in the request store's meta; a client's own functions (`tools`) are shown to the model
in its system message, and a call to one ends the answer with finish_reason "tool_calls". A chat without a system
message gets the model's own (its identity, model/identity.py), an assistant's its instructions."""

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
from model.tools import TOOL_NAMES, ToolsConfig
from serve import protocol
from serve.assistants import Assistant
from serve.engine import Served, Worker
from serve.generation import Generation
from serve.protocol import APIError
from serve.store import Store
from serve.tools import RequestTools, forced_ids, model_messages, request_tools, stored_messages, system_text

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
    tools: ToolsConfig = Field(default_factory=ToolsConfig,
                               description="The built-in tools chats may call (enabled: the served model's; an "
                                           "assistant names its own), their limits, and search passages.")


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
        self.tool_calls = Counter("factory_tool_calls", "Calls the server ran for answers, by tool and outcome (ok, or "
                                  "error: the tool refused it, failed, timed out or was past the limit).",
                                  ["tool", "outcome"], registry=r)


def create_app(served: Served, store: Store, settings: ServeSettings | None = None,
               assistants: dict[str, Assistant] | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    assistants = dict(assistants or {})
    app = FastAPI(title="LLM Factory", description="OpenAI-compatible API over the factory's models.")
    metrics = Metrics()
    recorder = ThreadPoolExecutor(1, thread_name_prefix="store")
    app.state.served, app.state.store, app.state.settings, app.state.metrics = served, store, settings, metrics
    app.state.assistants = assistants
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

    def check_model(body: protocol.Sampling) -> tuple[Worker, Assistant | None]:
        """The worker that answers, and the assistant asked for (None: the served model itself)."""
        worker = served.current
        if body.model in assistants:
            return worker, assistants[body.model]
        name, alias = worker.source.name, worker.source.alias
        # the name, the version served now (name@3 or name/3) or the alias followed; a pinned older version is not
        # silently answered by the new one
        names = {name, f"{name}@{worker.version}", f"{name}/{worker.version}", f"{name}@{alias or worker.version}"}
        if body.model not in names:
            listed = ", ".join(repr(n) for n in [name, *assistants])
            raise APIError(404, f"model {body.model!r} is not served here; GET /v1/models lists {listed} "
                           f"(version {worker.version})", "model_not_found", "model")
        return worker, None

    def limits(body: protocol.Sampling, prompt: list[int], worker: Worker, forced: int = 0) -> int:
        longest = min(settings.max_prompt_tokens or worker.seq_len - 1, worker.seq_len - 1)
        if len(prompt) + forced > longest:
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

    def record(gen: Generation, rid: str, route: str, body: protocol.Sampling, status: int, who: str,
               messages=None, prompt=None, extra: dict | None = None) -> dict:
        latency = time.perf_counter() - gen.started
        metrics.requests.labels(route, str(status)).inc()
        metrics.prompt_tokens.inc(gen.prompt_tokens)
        metrics.generated_tokens.inc(gen.completion_tokens)
        metrics.latency.observe(latency)
        if gen.ttft is not None:
            metrics.ttft.observe(gen.ttft)
        for result in (r for c in gen.choices for r in c.tool_results):
            outcome = "error" if result["content"].startswith("error:") else "ok"
            # a name the model made up is not a label: a user could grow the series without bound
            known = result["name"] in TOOL_NAMES or result["name"] in (gen.tools.functions if gen.tools else ())
            metrics.tool_calls.labels(result["name"] if known else "other", outcome).inc()
        first = gen.choices[0]
        return {
            "id": rid, "created": time.time(), "endpoint": "chat" if messages is not None else "completions",
            "model": body.model, "model_version": gen.worker.version, "messages": messages, "prompt": prompt,
            "answer": first.text.text, "finish_reason": first.finish_reason or "cancelled",
            "sampling": {**body.settings(), "max_tokens": gen.max_tokens},
            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens, "ttft_s": gen.ttft,
            "latency_s": latency, "status": status, "client": who,
            "meta": meta(body, gen, extra or {}),
        }

    def chat_setup(body: protocol.ChatRequest, worker: Worker, assistant: Assistant | None):
        """(the prompt, the request's tools, the ids every answer starts with, what the store keeps of them)."""
        if assistant is not None:
            builtin = assistant.builtin(worker.tools)
        else:
            builtin = [worker.tools[n] for n in settings.tools.enabled if n in worker.tools]
        tools = request_tools(body, builtin, settings.tools.limits)
        system = system_text(body.messages, worker.identity, assistant.instructions if assistant else None,
                             tools.functions)
        try:
            prompt = render_prompt(worker.tok, model_messages(body.messages, system))  # typed markers stay text
        except ValueError as exc:  # e.g. a system message that is not the first
            raise APIError(422, str(exc), "invalid_value", "messages") from None
        extra: dict = {}
        if assistant is not None:
            extra["assistant"] = assistant.id
        if system is not None and not (body.messages[0].role == "system" and body.messages[0].content == system):
            extra["system"] = system  # what the server put in the client's place
        if tools.names:
            extra["tools"] = tools.names
        return prompt, tools, forced_ids(worker.tok, tools), extra

    async def complete(request: Request, chat: bool):
        who = client(request)
        body = await parse(request, protocol.ChatRequest if chat else protocol.CompletionRequest)
        worker, assistant = check_model(body)
        route = "/v1/chat/completions" if chat else "/v1/completions"
        tools: RequestTools | None = None
        forced: list[int] = []
        extra: dict = {}
        if chat:
            messages, prompt_text = stored_messages(body.messages), None
            prompt, tools, forced, extra = chat_setup(body, worker, assistant)
        else:
            messages, prompt_text = None, body.prompt
            prompt = [worker.tok.bos_id] + worker.tok.encode(body.prompt)
        max_tokens = limits(body, prompt, worker, len(forced))
        gen = Generation(worker, prompt, body, max_tokens, chat, tools, forced)
        try:
            gen.submit()
        except RuntimeError:  # the version was unloaded between the lookup and now (a reload)
            gen.cancel()
            raise APIError(503, "the model is being reloaded; retry", "model_reloading",
                           headers={"Retry-After": "1"}) from None
        metrics.queue.set(served.queued())
        rid = protocol.new_id("chatcmpl" if chat else "cmpl")
        created = protocol.now()
        name = body.model if assistant is not None else worker.source.name
        version = worker.version

        def row(status):
            return record(gen, rid, route, body, status, who, messages, prompt_text, extra)

        if not body.stream:
            try:
                async for _ in gen.pieces():
                    pass
            finally:
                if any(c.finish_reason is None for c in gen.choices):
                    gen.cancel()
            await asyncio.shield(asyncio.wrap_future(recorder.submit(store.record, row(200))))
            reasons = [c.finish_reason for c in gen.choices]
            if chat:
                return JSONResponse(protocol.chat_completion(rid, name, version, created,
                                                             [c.message for c in gen.choices], reasons,
                                                             gen.prompt_tokens, gen.completion_tokens))
            return JSONResponse(protocol.text_completion(rid, name, version, created, gen.answers,
                                                         gen.prompt_tokens, gen.completion_tokens))

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(index: int, delta: dict, reason: str | None = None) -> str:
            return sse(protocol.chat_chunk(rid, name, version, created, index, delta, reason))

        async def events() -> AsyncIterator[str]:
            finished, status = False, 499  # the client left, unless the engine failed
            try:
                if chat:
                    for i in range(body.n):
                        yield chunk(i, {"role": "assistant", "content": ""})
                # one JSON template per choice: a token's chunk is its text spliced in, not a new dict to encode
                content = [piece_template(protocol.chat_chunk(rid, name, version, created, i, {"content": PIECE})
                                          if chat else protocol.text_chunk(rid, name, version, created, i, PIECE))
                           for i in range(body.n)]
                async for piece in gen.pieces():
                    i = piece.index
                    if piece.text:
                        yield content[i](piece.text)
                    if piece.tool_result is not None:
                        yield chunk(i, {"tool_results": [piece.tool_result]})
                    if piece.tool_call is not None:  # OpenAI's way: the call's index among the message's calls
                        yield chunk(i, {"tool_calls": [{"index": len(gen.choices[i].tool_calls) - 1,
                                                        **piece.tool_call}]})
                    if piece.finish_reason:
                        yield (chunk(i, {}, piece.finish_reason) if chat
                               else sse(protocol.text_chunk(rid, name, version, created, i, "", piece.finish_reason)))
                if include_usage:
                    yield sse({"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                               "created": created, "model": name, "model_version": version, "choices": [],
                               "usage": protocol.usage(gen.prompt_tokens, gen.completion_tokens)})
                finished = True
                # recorded before the client sees the end, and shielded: a client leaving now does not undo it
                await asyncio.shield(asyncio.wrap_future(recorder.submit(store.record, row(200))))
                yield "data: [DONE]\n\n"
            except APIError as exc:
                status = exc.status
                yield sse(protocol.error_body(exc.status, exc.message, exc.code))
            finally:
                if not finished:  # free the slots, keep what was said
                    gen.cancel()
                    recorder.submit(store.record, row(status))

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
        base = {"id": w.source.name, "object": "model", "created": 0, "owned_by": "llm-factory", "version": w.version}
        return {"object": "list", "data": [base, *({**base, "id": a.id, "root": w.source.name, "assistant": True,
                                                    "tools": list(a.tools)} for a in assistants.values())]}

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


def meta(body: protocol.Sampling, gen: Generation, extra: dict) -> dict:
    """The request's `user` (generated users call themselves "simulated-..."), the assistant asked for, the system
    message the server supplied, the tools on offer, what the answer called (built-in tools' results, calls to the
    client's functions), the engine's own finish reason where the client was told another, and every choice when
    n > 1."""
    out: dict = {}
    if body.user:
        out["user"] = body.user
        out["simulated"] = body.user.startswith("simulated-")
    out.update(extra)
    out.update(_calls(gen.choices[0]))
    if len(gen.choices) > 1:
        out["choices"] = [{"text": c.text.text, "finish_reason": c.finish_reason or "cancelled", **_calls(c)}
                          for c in gen.choices]
    return out


def _calls(choice) -> dict:
    found = {"tool_results": choice.tool_results, "tool_calls": choice.tool_calls,
             "engine_finish_reason": choice.engine_reason}
    return {k: v for k, v in found.items() if v}


PIECE = "\x00piece\x00"  # where a template takes the text: no model output or JSON key contains it


def piece_template(chunk: dict) -> Callable[[str], str]:
    """The SSE event of `chunk` with its PIECE placeholder replaced by a given text, JSON-escaped."""
    head, tail = sse(chunk).split(json.dumps(PIECE, ensure_ascii=False))
    return lambda piece: head + json.dumps(piece, ensure_ascii=False) + tail


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
