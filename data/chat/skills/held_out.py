"""Held-out eval items: every skill's examples minus every prompt a user turn of the training data holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from data.chat.skills.registry import build_skill
from model.identity import IdentityConfig


def user_turns(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """The text of every user turn (not only the first) of conversation records ({"messages"}) and of comparison
    prompts (a string, or messages)."""
    out: set[str] = set()
    for rec in records:
        messages = rec.get("messages")
        if messages is None:
            prompt = rec.get("prompt")
            if isinstance(prompt, str):
                out.add(prompt)
                continue
            messages = prompt or []
        out.update(m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str))
    return out


def held_out_items(skills: Iterable[str], n: int, seed: int, training: Iterable[Mapping[str, Any]],
                   pages: list[Mapping[str, Any]] | None = None, identity: IdentityConfig | None = None) -> list[dict]:
    """Up to n eval items per skill ({"id", "skill", "messages", "reference", "answer"}) whose prompt equals no user
    turn of the `training` records (compared case- and whitespace-insensitively); `identity`: whose name the identity
    items expect (the default assistant's without one). A skill that cannot make examples (crawl_qa without pages)
    gives none."""
    seen = user_turns(training)
    built = [build_skill(name, pages, identity) for name in skills]
    return [ex.as_item() for skill in built if skill.available for ex in skill.examples(n, seed, exclude_prompts=seen)]


def items_hash(items: list[Mapping[str, Any]]) -> str:
    """Identifies an eval set, so the deploy gate knows when stored results are comparable. The field names are part
    of it: results stored for items that named their skill otherwise do not pair with these."""
    fields = [{"skill": i["skill"], "messages": i["messages"], "reference": i["reference"]} for i in items]
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
