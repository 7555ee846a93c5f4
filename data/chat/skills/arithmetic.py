"""Arithmetic: word problems and bare sums with +, - and *; the answer shows its working and ends with 'Answer: N'."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from data.chat.skills.base import Example, Skill, last_int
from data.chat.skills.vocab import NAMES, OBJECTS


class Arithmetic(Skill):
    """Checked by the last integer of the answer, so any wording of the working passes."""

    name = "arithmetic"

    def example(self, rng: random.Random) -> Example:
        name, other = rng.sample(NAMES, 2)
        obj = rng.choice(OBJECTS)
        op = rng.choice(["+", "-", "*"])
        style = rng.random()
        if op == "+":
            a, b = rng.randint(2, 50), rng.randint(2, 50)
            c = a + b
            prompts = [f"{name} has {a} {obj}. {name} gets {b} more. How many {obj} does {name} have now?",
                       f"{name} had {a} {obj} and {other} gave {name} {b} more. How many {obj} does {name} have?",
                       f"What is {a} + {b}?", f"Add {a} and {b}."]
            working = f"{a} + {b}"
        elif op == "-":
            a = rng.randint(5, 60)
            b = rng.randint(1, a)
            c = a - b
            prompts = [f"{name} had {a} {obj} and gave {b} to {other}. How many {obj} does {name} have left?",
                       f"There are {a} {obj} on the table. {name} takes away {b}. How many are left?",
                       f"What is {a} - {b}?", f"Subtract {b} from {a}."]
            working = f"{a} - {b}"
        else:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            c = a * b
            prompts = [f"{name} buys {a} boxes with {b} {obj} in each box. How many {obj} does {name} have in total?",
                       f"There are {a} rows of {obj} with {b} in each row. How many {obj} are there?",
                       f"What is {a} times {b}?", f"Multiply {a} by {b}."]
            working = f"{a} * {b}"
        prompt = prompts[0 if style < 0.35 else 1 if style < 0.6 else 2 if style < 0.85 else 3]
        return Example(self.name, prompt, f"{working} = {c}.\nAnswer: {c}", c, {"working": working})

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        ref = example.reference
        wrong = ref + rng.choice([-1, 1]) if ref > 0 else 1
        return f"{example.details['working']} = {wrong}.\nAnswer: {wrong}", "off_by_one"

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        return last_int(answer) == int(item["reference"])
