"""Tools in a chat request: the built-in tools the server runs itself inside the request (calculator, search; an
assistant's own set), the functions the client declares (`tools`), which the model sees in its system message and
whose calls go back to the client, `tool_choice`, and the request's messages in the model's own form.

The model's canonical call text is `{"name": ..., "arguments": {...}}` (model/tools.py); OpenAI clients send an
assistant turn's calls with the arguments as a JSON string, so they are turned back into an object before the
conversation is rendered, and the prompt is what the model saw when it wrote them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from model.chat import TOOL_CALL_START
from model.identity import IdentityConfig
from model.tokenizer import Tokenizer
from model.tools import Tool, Toolbox, ToolLimits, format_call
from serve.protocol import ChatRequest, FunctionDef, Message, NamedToolChoice


def tools_text(functions: dict[str, FunctionDef]) -> str:
    """The client's functions as the model reads them in its system message: one line each, with the JSON schema of
    its arguments."""
    lines = ['You can call these tools; a call is {"name": "<tool>", "arguments": {...}}:']
    for fn in functions.values():
        schema = json.dumps(fn.parameters or {"type": "object", "properties": {}}, ensure_ascii=False,
                            separators=(",", ":"))
        description = f" {fn.description.strip()}" if fn.description and fn.description.strip() else ""
        lines.append(f"- {fn.name}:{description} Arguments: {schema}")
    return "\n".join(lines)


def system_text(messages: list[Message], identity: IdentityConfig | None, instructions: str | None,
                functions: dict[str, FunctionDef]) -> str | None:
    """The system message the model gets: an assistant's instructions (followed by the client's own system message,
    if it sent one), else the client's system message, else the model's identity; then the client's functions."""
    own = messages[0].content if messages[0].role == "system" else None
    if instructions is not None:
        base = "\n\n".join(t for t in (instructions, own) if t)
    elif own is not None:
        base = own
    elif identity is not None and identity.at_inference:
        base = identity.system_text()
    else:
        base = None
    if not functions:
        return base
    return "\n\n".join(t for t in (base, tools_text(functions)) if t)


def model_messages(messages: list[Message], system: str | None) -> list[dict[str, Any]]:
    """The conversation as the model renders it: `system` first (replacing the client's), every call of an
    assistant turn as its canonical text."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    for k, m in enumerate(messages):
        if k == 0 and m.role == "system":
            continue  # a system message further on stays, for render_prompt to refuse
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [_call_text(c.function.name, c.function.arguments_object()) for c in m.tool_calls]
        out.append(message)
    return out


def _call_text(name: str, arguments: dict[str, Any] | str) -> str:
    if isinstance(arguments, dict):
        return format_call(name, arguments)
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)  # not JSON: kept as the text


def stored_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The request's messages as the request store keeps them: as the client sent them."""
    return [m.model_dump(exclude_none=True, include={"role", "content", "name", "tool_calls", "tool_call_id"})
            for m in messages]


@dataclass
class RequestTools:
    """What one chat request may call: `toolbox` holds the tools the server runs (it may be empty while the client
    declared functions; None: no tool at all, and a call the model writes anyway is plain text); `functions` the
    client's, by name; `forced`: every answer starts with <|tool_call_start|> and this much of the call's text
    (tool_choice "required": "", a named function: its name), None: the model decides."""

    toolbox: Toolbox | None
    functions: dict[str, FunctionDef] = field(default_factory=dict)
    forced: str | None = None

    @property
    def names(self) -> list[str]:
        return [*(self.toolbox.names if self.toolbox else []), *self.functions]


def request_tools(body: ChatRequest, builtin: list[Tool], limits: ToolLimits) -> RequestTools:
    """The tools of a request: the built-in ones on offer (less any the client declares a function of the same name
    for: the client's wins), the client's functions, and what tool_choice asks."""
    if body.tool_choice == "none":
        return RequestTools(None)
    functions = body.client_functions()
    kept = [t for t in builtin if t.name not in functions]
    if not kept and not functions:
        return RequestTools(None)
    forced = None
    if body.tool_choice == "required":
        forced = ""
    elif isinstance(body.tool_choice, NamedToolChoice):
        # the call's text up to its arguments, cut where the whole call's tokens are cut: the model writes the rest
        forced = json.dumps({"name": body.tool_choice.function.name})[:-1] + ', "arguments":'
    return RequestTools(Toolbox.of(kept, limits), functions, forced)


def forced_ids(tok: Tokenizer, tools: RequestTools | None) -> list[int]:
    """The ids every answer starts with: none, or <|tool_call_start|> and the forced part of the call."""
    if tools is None or tools.toolbox is None or tools.forced is None:
        return []
    return [tok.special_id(TOOL_CALL_START), *tok.encode(tools.forced)]
