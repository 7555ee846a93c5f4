"""The OpenAI protocol as pydantic models: what the server accepts and the shapes it answers with."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ROLES = ("system", "user", "assistant")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)
    name: str | None = None


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

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, v: list[Message]) -> list[Message]:
        if v[-1].role != "user":
            raise ValueError("messages: the last message must be the user's")
        return v


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


def chat_completion(rid: str, model: str, version: str, created: int, answers: list[tuple[str, str]],
                    prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "id": rid, "object": "chat.completion", "created": created, "model": model, "model_version": version,
        "system_fingerprint": f"{model}-v{version}",
        "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                     "logprobs": None} for i, (text, reason) in enumerate(answers)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


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


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def now() -> int:
    return int(time.time())
