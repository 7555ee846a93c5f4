"""A weighted mix of skills, drawn deterministically from a seeded rng: what the label generator (and later RL)
samples from."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any

from data.chat.skills.base import Example, Skill, normalize_prompt
from data.chat.skills.registry import SKILLS, build_skill
from model.identity import IdentityConfig

DEFAULT_MIX = {"arithmetic": 0.1, "letter_count": 0.1, "spelling": 0.1, "identity": 0.1, "refusal": 0.1,
               "crawl_qa": 0.15, "calculator": 0.35}


class SkillMix:
    """Skills with relative weights (`DEFAULT_MIX` when none are given). Skills of weight 0 are left out, and so are
    skills that cannot make examples (crawl_qa without usable pages), so a mix still works without a crawl.
    `identity`: the name and maker the identity skill's answers give (the default IdentityConfig when None)."""

    def __init__(self, weights: Mapping[str, float] | None = None, pages: list[Mapping[str, Any]] | None = None,
                 tools: bool = True, identity: IdentityConfig | None = None):
        weights = dict(DEFAULT_MIX if weights is None else weights)
        unknown = [name for name in weights if name not in SKILLS]
        if unknown:
            raise ValueError(f"mix names unknown skills {unknown}; expected some of {list(SKILLS)}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"mix weights must be >= 0, got {weights}")
        # registry order, not the caller's dict order, so equal weights give equal draws
        skills = [build_skill(name, pages, identity) for name in SKILLS
                  if weights.get(name, 0) > 0 and (tools or not SKILLS[name].uses_tools)]
        self.skills: list[Skill] = [s for s in skills if s.available]
        if not self.skills:
            raise ValueError(f"mix {weights} leaves no skill with a positive weight that can make examples")
        self.weights = [weights[s.name] for s in self.skills]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.skills]

    def draw(self, rng: random.Random) -> Skill:
        """One skill, with probability proportional to its weight."""
        return rng.choices(self.skills, self.weights)[0]

    def example(self, rng: random.Random) -> Example:
        return self.draw(rng).example(rng)

    def examples(self, n: int, seed: int, exclude_prompts: Collection[str] = frozenset(),
                 max_tries: int = 20) -> list[Example]:
        """n examples drawn from the mix, deterministic in the seed; a prompt already drawn or in `exclude_prompts`
        is drawn again from the same skill (so the weights hold), up to `max_tries` times, then kept (a small skill
        may run out of new prompts)."""
        rng = random.Random(seed)
        seen = {normalize_prompt(p) for p in exclude_prompts}
        out = []
        for _ in range(n):
            skill = self.draw(rng)
            for _ in range(max_tries):
                ex = skill.example(rng)
                if normalize_prompt(ex.prompt) not in seen:
                    break
            seen.add(normalize_prompt(ex.prompt))
            out.append(ex)
        return out
