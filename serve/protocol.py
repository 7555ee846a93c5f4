"""The OpenAI protocol as pydantic models: what the server accepts and the shapes it answers with.

Beyond OpenAI's fields, an answer's message may carry `tool_results`: the calls the server ran itself (its built-in
tools: calculator, search) while answering, each {"name", "arguments", "content"}; a streamed answer sends each one
as a delta {"tool_results": [one]} when it has run."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROLES = ("system", "user", "assistant", "tool")
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionCall(BaseModel):
    """A call an assistant message made: OpenAI sends `arguments` as a JSON string; an object is taken too."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=64)
    arguments: str | dict[str, Any] = "{}"

    def arguments_object(self) -> dict[str, Any] | str:
        """The arguments as an object, as the model writes them; a string that is not a JSON object stays text."""
        if isinstance(self.arguments, dict):
            return self.arguments
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            return self.arguments
        return value if isinstance(value, dict) else self.arguments


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(None, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    """A message of a chat request: content is text, or OpenAI's list of text parts (joined); only an assistant
    message that calls tools may have none."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(None, max_length=200_000)
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=16)
    tool_call_id: str | None = Field(None, max_length=200)

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        if any(not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str) for p in v):
            raise ValueError('content parts: only {"type": "text", "text": "..."} parts are understood')
        return "".join(p["text"] for p in v)

    @model_validator(mode="after")
    def _content_or_calls(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only an assistant message has tool_calls, not a {self.role!r} one")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is missing (only an assistant message with tool_calls may leave it null)")
        return self


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(None, max_length=4000)
    parameters: dict[str, Any] | None = None


class ToolDef(BaseModel):
    """A function the client declares (`tools`): the model sees it in its system message, and a call to it ends
    the answer with finish_reason "tool_calls" for the client to run."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"] = "function"
    function: NamedFunction


class Sampling(BaseModel):
    """The sampling settings shared by both endpoints (OpenAI's names and defaults)."""

    model_config = ConfigDict(extra="ignore")

    model: str = "assistant"
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63 - 8)  # torch's generator seed (room for seed + choice)
    n: int = Field(1, ge=1, le=8)
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is not None and (len(stops) > 4 or any(not s or len(s) > 256 for s in stops)):
            raise ValueError("stop: at most 4 non-empty strings of at most 256 characters")
        return stops

    def stops(self) -> list[str]:
        return list(self.stop or [])

    def settings(self) -> dict[str, Any]:
        """What the request log keeps of the sampling."""
        return {k: getattr(self, k) for k in ("max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n",
                                              "stream")}


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolDef] | None = Field(None, max_length=64)
    # "auto" (the default): the model may call any tool on offer; "none": every tool is off (built-in ones too);
    # "required" or {"type": "function", "function": {"name": ...}}: the answer starts with a call (to that one)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted; an answer makes one call at a time

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, v: list[Message]) -> list[Message]:
        if v[-1].role not in ("user", "tool"):
            raise ValueError("messages: the last message must be the user's (or a tool result)")
        return v

    @model_validator(mode="after")
    def _named_tools(self) -> ChatRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) < len(names):
            raise ValueError(f"tools: a function is declared twice ({', '.join(sorted(names))})")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not one of the "
                             f"declared tools ({', '.join(names) or 'none'})")
        return self

    def client_functions(self) -> dict[str, FunctionDef]:
        return {t.function.name: t.function for t in self.tools or []}


class CompletionRequest(Sampling):
    prompt: str = Field(max_length=200_000)
    echo: bool = False


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=200)
    rating: Literal[1, -1]
    reason: str | None = Field(None, max_length=4000)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_completion(rid: str, model: str, version: str, created: int, messages: list[dict],
                    reasons: list[str | None], prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "id": rid, "object": "chat.completion", "created": created, "model": model, "model_version": version,
        "system_fingerprint": f"{model}-v{version}",
        "choices": [{"index": i, "message": message, "finish_reason": reason, "logprobs": None}
                    for i, (message, reason) in enumerate(zip(messages, reasons, strict=True))],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def assistant_message(content: str, tool_calls: list[dict] | None = None,
                      tool_results: list[dict] | None = None) -> dict:
    """An answer's message: content null when it only calls tools, as OpenAI sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if tool_results:
        message["tool_results"] = tool_results
    return message


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict:
    """A call to a client's function in OpenAI's shape: the arguments as a JSON string."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def chat_chunk(rid: str, model: str, version: str, created: int, index: int, delta: dict,
               finish_reason: str | None = None) -> dict:
    return {
        "id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "model_version": version,
        "system_fingerprint": f"{model}-v{version}",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def text_completion(rid: str, model: str, version: str, created: int, answers: list[tuple[str, str]],
                    prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "id": rid, "object": "text_completion", "created": created, "model": model, "model_version": version,
        "system_fingerprint": f"{model}-v{version}",
        "choices": [{"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                    for i, (text, reason) in enumerate(answers)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def text_chunk(rid: str, model: str, version: str, created: int, index: int, text: str,
               finish_reason: str | None = None) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model, "model_version": version,
            "choices": [{"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}]}


class APIError(Exception):
    """A request the server refuses or could not answer: the HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def now() -> int:
    return int(time.time())
