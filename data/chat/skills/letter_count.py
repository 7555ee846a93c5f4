"""Letter counting: how many times a letter appears in a word; the answer spells the word out before counting,
the step a small model needs since it sees tokens, not letters."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from data.chat.skills.base import Example, Skill, last_int
from data.chat.skills.vocab import WORDS


def times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


class LetterCount(Skill):
    """Checked by the last integer of the answer; about one prompt in seven asks for a letter the word lacks."""

    name = "letter_count"

    def example(self, rng: random.Random) -> Example:
        word = rng.choice(WORDS)
        if rng.random() < 0.85:
            letter = rng.choice(word)
        else:
            letter = rng.choice([ch for ch in "abcdefghijklmnopqrstuvwxyz" if ch not in word])
        prompt = rng.choice([f"How many times does the letter '{letter}' appear in '{word}'?",
                             f"Count the letter '{letter}' in the word '{word}'.",
                             f"How many '{letter}'s are in '{word}'?"])
        count = word.count(letter)
        answer = self._answer(word, letter, count)
        return Example(self.name, prompt, answer, count, {"word": word, "letter": letter})

    @staticmethod
    def _answer(word: str, letter: str, count: int) -> str:
        spelled = "-".join(word)
        if count == 0:
            return f"Spelled out: {spelled}. The letter '{letter}' does not appear.\nAnswer: 0"
        return f"Spelled out: {spelled}. The letter '{letter}' appears {times(count)}.\nAnswer: {count}"

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        ref, word, letter = example.reference, example.details["word"], example.details["letter"]
        wrong = ref + rng.choice([-1, 1]) if ref > 0 else 1
        return (f"Spelled out: {'-'.join(word)}. The letter '{letter}' appears {times(wrong)}.\nAnswer: {wrong}",
                "miscount")

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        return last_int(answer) == int(item["reference"])
