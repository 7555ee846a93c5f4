"""Spelling: a word spelled letter by letter with hyphens ('b-a-n-a-n-a')."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from data.chat.skills.base import Example, Skill
from data.chat.skills.vocab import WORDS


def _hyphenated(text: str) -> str:
    return re.sub(r"\s*-\s*", "-", text.lower())


def misspell(word: str, rng: random.Random) -> str:
    """The word with one letter dropped, doubled or swapped with its neighbour; never the word itself."""
    while True:
        i = rng.randrange(len(word))
        op = rng.randrange(3)
        if op == 0 and len(word) > 3:
            out = word[:i] + word[i + 1:]
        elif op == 1:
            out = word[:i] + word[i] + word[i:]
        else:
            j = min(i + 1, len(word) - 1)
            out = word[:i] + word[j] + word[i] + word[j + 1:] if j > i else word[:-1] + "e"
        if out != word:
            return out


class Spelling(Skill):
    """Checked by finding the hyphenated spelling standing alone in the answer (any case, spaces around hyphens)."""

    name = "spelling"

    def example(self, rng: random.Random) -> Example:
        word = rng.choice(WORDS)
        prompt = rng.choice([f"Spell the word '{word}'.", f"How do you spell '{word}'?",
                             f"Spell '{word}' letter by letter."])
        spelled = "-".join(word)
        return Example(self.name, prompt, f"'{word}' is spelled {spelled}.", spelled, {"word": word})

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        word = example.details["word"]
        return f"'{word}' is spelled {'-'.join(misspell(word, rng))}.", "misspelling"

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        # the spelling must stand alone: "b-a-n-a-n-a-s" does not spell "banana"
        pattern = rf"(?<![a-z-]){re.escape(_hyphenated(str(item['reference'])))}(?![a-z-])"
        return re.search(pattern, _hyphenated(answer)) is not None
