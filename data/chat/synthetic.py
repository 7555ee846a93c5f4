"""Generated label sets: conversations and comparisons drawn from a mix of skills (data.chat.skills), in the formats
labelers deliver, so the demo's inbox and the tests have realistic labels whose answers can be checked."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from data.chat.skills import SkillMix
from model.identity import IdentityConfig

MULTI_TURN_FRACTION = 0.15
_MAX_RETRIES = 20  # draws per record to avoid an exact repeat before accepting one


def generate_conversations(n: int, seed: int, pages: list[Mapping[str, Any]] | None = None,
                           mix: Mapping[str, float] | None = None,
                           identity: IdentityConfig | None = None) -> list[dict]:
    """n OpenAI-messages records {"id", "messages", "meta"}, exact repeats avoided; about MULTI_TURN_FRACTION have two
    exchanges. meta: "generated", "generator" (the first turn's skill), "seed", and "generators" when multi-turn.
    `mix`: skill weights (default DEFAULT_MIX); crawl_qa needs `pages`, and is left out without them.
    `identity`: the name and maker the identity answers give, and round(n * identity.train_fraction) conversations
    (which ones: deterministic in the seed) start with its system message, so the model learns to follow it and to
    answer without it. None: the default name and maker, and no system messages."""
    skills = SkillMix(mix, pages, identity=identity)
    with_system = identity.system_indices(n, seed) if identity else set()
    rng = random.Random(seed)
    seen: set[str] = set()
    out = []
    for i in range(n):
        for _ in range(_MAX_RETRIES):
            turns = 2 if rng.random() < MULTI_TURN_FRACTION else 1
            messages: list[dict] = []
            used: list[str] = []
            for _ in range(turns):
                ex = skills.example(rng)
                messages += ex.messages + ex.turns
                used.append(ex.skill)
            key = json.dumps(messages, sort_keys=True)
            if key not in seen:
                break
        seen.add(key)
        meta: dict[str, Any] = {"generated": True, "generator": used[0], "seed": seed}
        if turns > 1:
            meta["generators"] = used
        if i in with_system:  # added after the repeat check: with or without it, the exchanges drawn are the same
            messages = [{"role": "system", "content": identity.system_text()}, *messages]
        out.append({"id": f"gen-{seed}-{i:06d}", "messages": messages, "meta": meta})
    return out


def generate_comparisons(n: int, seed: int, pages: list[Mapping[str, Any]] | None = None,
                         mix: Mapping[str, float] | None = None, identity: IdentityConfig | None = None) -> list[dict]:
    """n {"prompt", "chosen", "rejected"} records with distinct prompts where the skills allow; rejected is a plausible
    wrong answer of the same skill. meta carries "generator" (the skill), "reference" and "error" (what is wrong with
    rejected), so the skill's check can judge both sides. Skills whose answers call tools are left out: a comparison's
    sides are plain text, and preferring a right answer written without the tool would teach not to call it.
    `identity`: the name and maker the identity answers give (the defaults when None); prompts stay plain text."""
    skills = SkillMix(mix, pages, tools=False, identity=identity)
    rng = random.Random(seed)
    seen: set[str] = set()
    out = []
    for i in range(n):
        for _ in range(_MAX_RETRIES):
            skill = skills.draw(rng)
            ex = skill.example(rng)
            if ex.prompt not in seen:
                break
        seen.add(ex.prompt)
        rejected, error = skill.wrong_answer(ex, rng)
        out.append({"id": f"gen-cmp-{seed}-{i:06d}", "prompt": ex.prompt, "chosen": ex.answer, "rejected": rejected,
                    "meta": {"generated": True, "generator": ex.skill, "seed": seed, "reference": ex.reference,
                             "error": error}})
    return out
