"""A skill is a kind of chat exchange whose answers can be checked: it makes examples, checks an answer, and turns
that check into a reward for RL. The label generator, the evals and RL share the same objects, so what the model is
taught, what it is scored on and what it is rewarded for cannot drift apart."""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)


def normalize_prompt(text: str) -> str:
    """Prompts compare case- and whitespace-insensitively: 'What is 2 + 3?' and 'what is  2 + 3?' are one prompt."""
    return " ".join(text.split()).lower()


def last_int(text: str) -> int | None:
    """The last integer in `text` ("1,200" reads as 1200), where a worked answer puts its result."""
    found = re.findall(r"-?\d+", text.replace(",", ""))
    return int(found[-1]) if found else None


@dataclass
class Example:
    """One exchange of a skill: the user's prompt, the ideal answer, and the reference `Skill.check` compares an
    answer with. `details` holds what `Skill.wrong_answer` needs to make a plausible mistake (the word spelled...).
    An answer that uses tools has `reply`: the assistant's tool calls, the tools' results and the final turn, whose
    text is `answer`."""

    skill: str
    prompt: str
    answer: str
    reference: Any
    details: dict[str, Any] = field(default_factory=dict)
    reply: list[dict] | None = None

    @property
    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]

    @property
    def turns(self) -> list[dict]:
        """What the assistant side says, in order: `reply`, or the answer as one assistant turn."""
        return list(self.reply) if self.reply else [{"role": "assistant", "content": self.answer}]

    def as_item(self) -> dict:
        """The JSON record the evals store and `check` reads: {"id", "skill", "messages", "reference", "answer"};
        the id hashes the prompt, so an item keeps its id across runs."""
        digest = hashlib.sha256(normalize_prompt(self.prompt).encode("utf-8")).hexdigest()[:12]
        return {"id": f"eval-{self.skill}-{digest}", "skill": self.skill, "messages": self.messages,
                "reference": self.reference, "answer": self.answer}


class Skill:
    """One kind of checkable exchange. Subclasses set `name` and define `example`, `wrong_answer` and `check`."""

    name: ClassVar[str]
    uses_pages: ClassVar[bool] = False  # built with the crawled pages (see registry.build_skill)
    uses_tools: ClassVar[bool] = False  # its ideal answers call tools (no comparisons: their sides are plain text)

    @property
    def available(self) -> bool:
        """Whether this skill can make examples at all (a skill about crawled pages needs some)."""
        return True

    def example(self, rng: random.Random) -> Example:
        """One example, drawn from `rng` (the same rng state gives the same example)."""
        raise NotImplementedError

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        """(a plausible wrong reply to `example`, what is wrong with it), the rejected side of a comparison."""
        raise NotImplementedError

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        """Whether `answer` answers `item` (anything with this skill's "reference") correctly."""
        raise NotImplementedError

    def reward(self, item: Mapping[str, Any], answer: str) -> float:
        """The RL reward of `answer`: 1 when `check` passes, else 0."""
        return 1.0 if self.check(item, answer) else 0.0

    def examples(self, n: int, seed: int, exclude_prompts: Collection[str] = frozenset()) -> list[Example]:
        """Up to n examples with distinct prompts, none of them in `exclude_prompts` (compared as normalize_prompt
        does), deterministic in the seed. Fewer than n only when the skill runs out of new prompts (identity has a
        few dozen; crawl Q&A as many as there are pages); that is logged."""
        # a string seed keeps these streams apart from the training streams that use the same integer seed
        rng = random.Random(f"eval:{self.name}:{seed}")
        seen = {normalize_prompt(p) for p in exclude_prompts}
        out: list[Example] = []
        attempts = 0
        while len(out) < n and attempts < max(2000, 50 * n):
            attempts += 1
            ex = self.example(rng)
            prompt = normalize_prompt(ex.prompt)
            if prompt in seen:
                continue
            seen.add(prompt)
            out.append(ex)
        if len(out) < n:
            log.warning("%s: only %d of %d examples with unseen prompts", self.name, len(out), n)
        return out
