"""The chat format, defined once: the roles and their special-token markers, what a valid list of messages is,
rendering to token ids with the loss mask (what the assistant says), and the Jinja chat template of the Hugging Face
export, built from the same markers.

Layout: <|bos|> then each turn wrapped in its role's markers; an assistant turn's tool calls sit inside
<|tool_call_start|>..<|tool_call_end|> before <|assistant_end|>; a "tool" message is a <|tool_result_*|> turn.
"""
from __future__ import annotations

import json
from typing import Any

from model.tokenizer import Tokenizer

BOS = "<|bos|>"
ROLES = ("system", "user", "assistant", "tool")
ROLE_MARKERS: dict[str, tuple[str, str]] = {
    "system": ("<|system_start|>", "<|system_end|>"),
    "user": ("<|user_start|>", "<|user_end|>"),
    "assistant": ("<|assistant_start|>", "<|assistant_end|>"),
    "tool": ("<|tool_result_start|>", "<|tool_result_end|>"),
}
TOOL_CALL_START, TOOL_CALL_END = "<|tool_call_start|>", "<|tool_call_end|>"


# --------------------------------------------------------------------------------------------------- validation


def _calls_only(message: dict) -> bool:
    """An assistant turn that only calls tools may have no text (OpenAI sends content null)."""
    return message.get("role") == "assistant" and bool(message.get("tool_calls"))


def messages_problem(messages: Any, field: str = "messages") -> str | None:
    """None if `messages` can be rendered, else the first problem, naming the message (`messages[2]: ...`): a list of
    objects, each with a known role and string content (none only for an assistant turn that calls tools), and a
    system message, if any, first. Live chats are held to this; labels to `conversation_problem` as well."""
    if not isinstance(messages, list):
        return f"'{field}' must be a list of messages, got {type(messages).__name__}"
    if not messages:
        return f"'{field}' is empty"
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            return f"{where}: must be an object with 'role' and 'content', got {type(message).__name__}"
        role = message.get("role")
        if role not in ROLES:
            return f"{where}: role {role!r} is not one of {'/'.join(ROLES)}"
        content = message.get("content")
        if content is None and not _calls_only(message):
            return f"{where}: 'content' is missing"
        if content is not None and not isinstance(content, str):
            return f"{where}: 'content' must be a string, got {type(content).__name__}"
        if role == "system" and i != 0:
            return f"{where}: 'system' is only allowed as the first message"
    return None


def conversation_problem(messages: Any, field: str = "messages", ends_with: str = "assistant") -> str | None:
    """`messages_problem`, then the turn rules of a conversation we train or score on: no blank turn (an assistant
    turn that only calls tools excepted); after an optional system message a user turn comes first; user and
    assistant alternate; tool results follow an assistant turn or other tool results; the last turn is `ends_with`'s."""
    if (problem := messages_problem(messages, field)) is not None:
        return problem
    prev: str | None = None
    for i, message in enumerate(messages):
        where, role = f"{field}[{i}]", message["role"]
        if not (message.get("content") or "").strip() and not _calls_only(message):
            return f"{where}: empty content"
        if role == "system":
            continue
        if prev is None and role != "user":
            return f"{where}: a conversation must start with a user turn, got {role!r}"
        if role == "tool" and prev not in ("assistant", "tool"):
            return f"{where}: a 'tool' message must follow an assistant message, not {prev!r}"
        follows = {"user": (None, "assistant"), "assistant": ("user", "tool")}.get(role)
        if follows is not None and prev not in follows:
            return f"{where}: roles must alternate user/assistant ({role!r} after {prev!r})"
        prev = role
    if prev != ends_with:
        article = "an" if ends_with == "assistant" else "a"
        return f"'{field}' must end with {article} {ends_with} turn"
    return None


def check_messages(messages: Any) -> None:
    """Raise ValueError with `messages_problem`'s reason if `messages` cannot be rendered."""
    if (problem := messages_problem(messages)) is not None:
        raise ValueError(problem)


# --------------------------------------------------------------------------------------------------- rendering


def tool_call_texts(calls: Any) -> list[str]:
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


def render_conversation(tok: Tokenizer, messages: list[dict[str, Any]], max_len: int) -> tuple[list[int], list[int]]:
    """ids and the loss mask (1 = train on it): the assistant's content, tool calls and <|assistant_end|>; both cut
    to max_len."""
    check_messages(messages)
    ids, mask = [tok.bos_id], [0]

    def add(tokens: list[int], train: int) -> None:
        ids.extend(tokens)
        mask.extend([train] * len(tokens))

    for m in messages:
        start, end = ROLE_MARKERS[m["role"]]
        train = 1 if m["role"] == "assistant" else 0
        add([tok.special_id(start)], 0)  # the prompt supplies <|assistant_start|>; the model need not predict it
        add(tok.encode(m.get("content") or ""), train)
        if m["role"] == "assistant":
            for call in tool_call_texts(m.get("tool_calls")):
                add([tok.special_id(TOOL_CALL_START)], 1)
                add(tok.encode(call), 1)
                add([tok.special_id(TOOL_CALL_END)], 1)
        add([tok.special_id(end)], train)
    return ids[:max_len], mask[:max_len]


def render_prompt(tok: Tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """ids of the conversation so far, ending with <|assistant_start|>, ready for generation."""
    check_messages(messages)
    if messages[-1]["role"] not in ("user", "tool"):
        raise ValueError(f"render_prompt: the last message must be from the user (or a tool), "
                         f"got {messages[-1]['role']!r}")
    ids, _ = render_conversation(tok, messages, max_len=1 << 62)
    return ids + [tok.special_id(ROLE_MARKERS["assistant"][0])]


def chat_template() -> str:
    """Jinja chat template (transformers' `apply_chat_template`) that renders a conversation exactly as
    render_prompt / render_conversation do, token for token when the text itself holds no special-token strings.
    Tool calls: a string, or OpenAI's list of {"function": {...}} objects, dumped as JSON as tool_call_texts does."""
    wrap = json.dumps({role: list(pair) for role, pair in ROLE_MARKERS.items()})
    return (
        "{%- set wrap = " + wrap + " -%}"
        "{{- '" + BOS + "' -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in wrap -%}"
        "{{- raise_exception('messages[' ~ loop.index0 ~ ']: role ' ~ message['role'] ~ ' is not one of "
        + "/".join(ROLES) + "') -}}"
        "{%- endif -%}"
        "{%- if message['role'] == 'system' and not loop.first -%}"
        "{{- raise_exception('messages[' ~ loop.index0 ~ ']: system is only allowed as the first message') -}}"
        "{%- endif -%}"
        "{{- wrap[message['role']][0] -}}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}{%- endif -%}"
        "{%- if message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] -%}"
        "{%- set calls = [message['tool_calls']] if message['tool_calls'] is string else message['tool_calls'] -%}"
        "{%- for call in calls -%}"
        "{%- set fn = call['function'] if call is mapping and 'function' in call else call -%}"
        "{{- '" + TOOL_CALL_START + "' -}}"
        "{%- if fn is string -%}{{- fn -}}{%- else -%}{{- fn | tojson -}}{%- endif -%}"
        "{{- '" + TOOL_CALL_END + "' -}}"
        "{%- endfor -%}"
        "{%- endif -%}"
        "{{- wrap[message['role']][1] -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '" + ROLE_MARKERS["assistant"][0] + "' -}}{%- endif -%}"
    )


def format_transcript(messages: list[dict[str, Any]]) -> str:
    """Plain readable text of a conversation, for logs and reports."""
    parts = []
    for m in messages:
        text = f"{str(m.get('role', '?')).capitalize()}: {m.get('content') or ''}".rstrip()
        for call in tool_call_texts(m.get("tool_calls")):
            text += f"\n[tool call] {call}"
        parts.append(text)
    return "\n\n".join(parts)
