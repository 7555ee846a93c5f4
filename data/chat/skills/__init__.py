"""Chat skills: kinds of exchange whose answers can be checked (arithmetic, letter counting, spelling, identity,
honest refusals, questions about crawled pages). Each makes examples, checks an answer and rewards it for RL; a
`SkillMix` draws them with weights. The label generator, the evals and RL use these same objects.

    skill = build_skill("arithmetic")
    ex = skill.example(random.Random(0))
    skill.check(ex.as_item(), ex.answer)  # True
"""

from data.chat.skills.arithmetic import Arithmetic
from data.chat.skills.base import Example, Skill, normalize_prompt
from data.chat.skills.calculator import Calculator, CalculatorLarge
from data.chat.skills.crawl_qa import CrawlQA, f1_overlap, first_sentence
from data.chat.skills.held_out import held_out_items, items_hash, user_turns
from data.chat.skills.identity import ASSISTANT_NAME, Identity
from data.chat.skills.letter_count import LetterCount
from data.chat.skills.mix import DEFAULT_MIX, SkillMix
from data.chat.skills.refusal import Refusal
from data.chat.skills.registry import SKILL_NAMES, SKILLS, build_skill, check, reward
from data.chat.skills.spelling import Spelling

__all__ = [
    "ASSISTANT_NAME", "DEFAULT_MIX", "SKILLS", "SKILL_NAMES", "Arithmetic", "Calculator", "CalculatorLarge",
    "CrawlQA", "Example", "Identity", "LetterCount", "Refusal", "Skill", "SkillMix", "Spelling", "build_skill",
    "check", "f1_overlap", "first_sentence", "held_out_items", "items_hash", "normalize_prompt", "reward",
    "user_turns",
]
