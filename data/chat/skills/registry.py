"""The skills by name, and checking or rewarding an answer to a stored item by the skill its "skill" field names."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from data.chat.skills.arithmetic import Arithmetic
from data.chat.skills.base import Skill
from data.chat.skills.calculator import Calculator, CalculatorLarge
from data.chat.skills.crawl_qa import CrawlQA
from data.chat.skills.identity import Identity
from data.chat.skills.letter_count import LetterCount
from data.chat.skills.refusal import Refusal
from data.chat.skills.spelling import Spelling
from model.identity import IdentityConfig

# A new skill is a class in its own module plus a line here.
SKILLS: dict[str, type[Skill]] = {
    cls.name: cls for cls in (Arithmetic, LetterCount, Spelling, Identity, Refusal, CrawlQA, Calculator,
                              CalculatorLarge)
}
SKILL_NAMES: tuple[str, ...] = tuple(SKILLS)


def build_skill(name: str, pages: list[Mapping[str, Any]] | None = None,
                identity: IdentityConfig | None = None) -> Skill:
    """The skill called `name`; `pages` (crawled {title, text, url}) go to the skills that ask about them, `identity`
    (the assistant's name and maker; the default IdentityConfig when None) to the identity skill."""
    if name not in SKILLS:
        raise ValueError(f"unknown skill {name!r}; expected one of {', '.join(SKILLS)}")
    cls = SKILLS[name]
    if cls is Identity:
        return Identity(identity)
    return cls(pages) if cls.uses_pages else cls()


@cache
def _checker(name: str) -> Skill:
    # checking needs only the item's reference, never the pages or the identity its example was made from
    return build_skill(name)


def _skill_of(item: Mapping[str, Any]) -> Skill:
    name = item.get("skill")
    if name not in SKILLS:
        raise ValueError(f"item {item.get('id', '?')}: unknown skill {name!r}; expected one of {', '.join(SKILLS)}")
    return _checker(name)


def check(item: Mapping[str, Any], answer: str) -> bool:
    """Whether `answer` answers the stored `item` ({"skill", "reference", ...}) correctly."""
    return _skill_of(item).check(item, answer)


def reward(item: Mapping[str, Any], answer: str) -> float:
    """The RL reward of `answer` to the stored `item`, from its skill's check."""
    return _skill_of(item).reward(item, answer)
