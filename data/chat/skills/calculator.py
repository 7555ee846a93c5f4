"""Arithmetic past what a small model can do in its head (multi-digit products, sums, differences, exact quotients),
answered by calling the calculator tool and reading its result. `calculator_large` asks the same with numbers larger
than any `calculator` trains on: the held-out test that the model uses the tool rather than remembering answers."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from data.chat.skills.base import Example, Skill, last_int
from data.chat.skills.vocab import NAMES, OBJECTS
from model.tools import Calculator as CalculatorTool


class Calculator(Skill):
    """Checked by the last integer of the final answer, like `arithmetic`. The ideal answer calls the calculator with
    the expression, then states the result it read."""

    name = "calculator"
    uses_tools = True
    DIGITS = (3, 5)  # the first operand's digits
    OTHER_DIGITS = (2, 5)  # the second's, at most the first's
    LIMIT = 50_000  # every operand is below it; calculator_large's first operands are above

    def _operand(self, rng: random.Random, digits: int) -> int:
        return rng.randint(10 ** (digits - 1), min(10 ** digits, self.LIMIT) - 1)

    def _first(self, rng: random.Random) -> int:
        return self._operand(rng, rng.randint(*self.DIGITS))

    def example(self, rng: random.Random) -> Example:
        name = rng.choice(NAMES)
        obj = rng.choice(OBJECTS)
        a = self._first(rng)
        b = self._operand(rng, min(len(str(a)), rng.randint(*self.OTHER_DIGITS)))
        op = rng.choice(["*", "*", "+", "-", "/"])
        if op == "*":
            prompts = [f"What is {a} times {b}?", f"What is {a} * {b}?", f"Multiply {a} by {b}.",
                       f"{name} buys {a} boxes with {b} {obj} in each box. How many {obj} does {name} have in total?"]
        elif op == "+":
            prompts = [f"What is {a} + {b}?", f"Add {a} and {b}.", f"What is {a} plus {b}?",
                       f"{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have now?"]
        elif op == "-":
            a, b = max(a, b), min(a, b)  # nobody gives away more than they have
            prompts = [f"What is {a} - {b}?", f"Subtract {b} from {a}.", f"What is {a} minus {b}?",
                       f"{name} had {a} {obj} and gave away {b}. How many {obj} are left?"]
        else:
            a = a * b  # an exact quotient
            prompts = [f"What is {a} divided by {b}?", f"What is {a} / {b}?", f"Divide {a} by {b}.",
                       f"{name} shares {a} {obj} equally among {b} friends. How many {obj} does each friend get?"]
        expression = f"{a} {op} {b}"
        result = CalculatorTool().run({"expression": expression})
        answer = f"Answer: {result}"  # the working is the call: the answer only copies the result it read
        reply = [{"role": "assistant", "content": "", "tool_calls": [
                     {"id": "call_1", "type": "function",
                      "function": {"name": "calculator", "arguments": {"expression": expression}}}]},
                 {"role": "tool", "content": result},
                 {"role": "assistant", "content": answer}]
        return Example(self.name, rng.choice(prompts), answer, int(result), {"expression": expression},
                       reply=reply)

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        wrong = example.reference + rng.choice([-10, -1, 1, 10])
        return f"Answer: {wrong}", "wrong_result"

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        return last_int(answer) == int(item["reference"])


class CalculatorLarge(Calculator):
    """The calculator skill with a first operand larger than any `calculator` trains on (50,000 to 99,999): an eval
    set, not in the training mix. The numbers have as many digits (and tokens) as the largest in training, so it
    measures using the tool on values never seen, not reading longer numbers than it ever copied."""

    name = "calculator_large"
    OTHER_DIGITS = (2, 4)

    def _first(self, rng: random.Random) -> int:
        return rng.randint(self.LIMIT, 99_999)
