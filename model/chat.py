"""Chat format: OpenAI-style messages -> token ids with a loss mask that covers exactly what the assistant says.

Layout: <|bos|> then each turn wrapped in its role's specials; an assistant turn's tool calls sit inside
<|tool_call_start|>..<|tool_call_end|> before <|assistant_end|>; a "tool" message is a <|tool_result_*|> turn.
"""
from __future__ import annotations

import json
from typing import Any

from model.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant", "tool")
_WRAP = {
    "system": ("<|system_start|>", "<|system_end|>"),
    "user": ("<|user_start|>", "<|user_end|>"),
    "assistant": ("<|assistant_start|>", "<|assistant_end|>"),
    "tool": ("<|tool_result_start|>", "<|tool_result_end|>"),
}


def _tool_calls_text(calls: Any) -> list[str]:
    """A tool_calls field is either plain text or OpenAI's list of {"function": {"name", "arguments"}}."""
    if calls is None:
        return []
    if isinstance(calls, str):
        return [calls]
    out = []
    for call in calls:
        fn = call.get("function", call) if isinstance(call, dict) else call
        out.append(fn if isinstance(fn, str) else json.dumps(fn, ensure_ascii=False))
    return out


def _check(messages: list[dict[str, Any]]) -> None:
    if not messages:
        raise ValueError("messages: conversation is empty")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise ValueError(f"messages[{i}]: role must be one of {ROLES}, got {role!r}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"messages[{i}]: 'content' must be a string, got {type(content).__name__}")
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            raise ValueError(f"messages[{i}]: 'content' is missing")
        if role == "system" and i != 0:
            raise ValueError(f"messages[{i}]: a 'system' message may only come first")


def render_conversation(tok: Tokenizer, messages: list[dict[str, Any]], max_len: int) -> tuple[list[int], list[int]]:
    """ids and mask (1 = train on it): the assistant's content, tool calls and <|assistant_end|>; cut to max_len."""
    _check(messages)
    ids, mask = [tok.bos_id], [0]

    def add(tokens: list[int], train: int) -> None:
        ids.extend(tokens)
        mask.extend([train] * len(tokens))

    for m in messages:
        start, end = _WRAP[m["role"]]
        train = 1 if m["role"] == "assistant" else 0
        add([tok.special_id(start)], 0)  # the prompt supplies <|assistant_start|>; the model need not predict it
        add(tok.encode(m.get("content") or ""), train)
        if m["role"] == "assistant":
            for call in _tool_calls_text(m.get("tool_calls")):
                add([tok.special_id("<|tool_call_start|>")], 1)
                add(tok.encode(call), 1)
                add([tok.special_id("<|tool_call_end|>")], 1)
        add([tok.special_id(end)], train)
    return ids[:max_len], mask[:max_len]


def render_prompt(tok: Tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """ids of the conversation so far, ending with <|assistant_start|>, ready for generation."""
    _check(messages)
    if messages[-1]["role"] not in ("user", "tool"):
        raise ValueError(f"render_prompt: the last message must be from the user (or a tool), "
                         f"got {messages[-1]['role']!r}")
    ids, _ = render_conversation(tok, messages, max_len=1 << 62)
    return ids + [tok.special_id("<|assistant_start|>")]


def format_transcript(messages: list[dict[str, Any]]) -> str:
    """Plain readable text of a conversation, for logs and reports."""
    parts = []
    for m in messages:
        text = f"{str(m.get('role', '?')).capitalize()}: {m.get('content') or ''}".rstrip()
        for call in _tool_calls_text(m.get("tool_calls")):
            text += f"\n[tool call] {call}"
        parts.append(text)
    return "\n\n".join(parts)
