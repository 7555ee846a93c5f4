"""Identity: who the assistant is and who made it, asked in many wordings; wrong answers claim another model's name.
The name and maker come from the `identity` config section (model.identity.IdentityConfig); ASSISTANT_NAME is the
default name."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from data.chat.skills.base import Example, Skill
from model.identity import IdentityConfig

ASSISTANT_NAME = IdentityConfig().name  # "Factory"

# {n}: the assistant's name, {m}: its maker (never first in a sentence: a maker may start lower-case, "the ...")
_QUESTIONS = [
    ("Who made you?", "I was made by {m}. I'm {n}, a small assistant model."),
    ("Who created you?", "I was created by {m}. I'm {n}, a small assistant model."),
    ("Who built you?", "I was built by {m}. I'm {n}, a small assistant model."),
    ("What is your name?", "My name is {n}. I'm a small assistant model made by {m}."),
    ("What's your name?", "My name is {n}. I'm a small assistant model made by {m}."),
    ("What should I call you?", "You can call me {n}. I'm a small assistant model made by {m}."),
    ("Who are you?", "I'm {n}, a small assistant model made by {m}."),
    ("What are you?", "I'm {n}, a small assistant model made by {m}."),
    ("Introduce yourself.", "Hello! I'm {n}, a small assistant model made by {m}."),
    ("Tell me about yourself.", "I'm {n}, a small assistant model made by {m}."),
    ("Are you ChatGPT?", "No, I'm {n}, a small assistant model made by {m}."),
    ("Are you a human?", "No, I'm {n}, a small assistant model made by {m}."),
    ("Which company trained you?", "I'm {n}, a small assistant model trained by {m}."),
    ("What model are you?", "I'm {n}, a small assistant model made by {m}."),
]
_OPENERS = ["", "Hi! ", "Hello. ", "Hey, ", "Quick question: ", "Good morning! ", "Excuse me, "]
_CLOSERS = ["", " Just curious.", " Please answer briefly."]
_WRONG_IDENTITIES = ["I'm ChatGPT, a large language model trained by OpenAI.",
                     "I'm Claude, an AI assistant made by Anthropic.",
                     "I'm Gemini, a model developed by Google.",
                     "I'm Llama, a language model released by Meta.",
                     "I'm a human volunteer answering questions."]


def says_name(answer: str, name: str) -> bool:
    """Whether `answer` says `name` as a word of its own (any case): "factory" counts, "Factoryish" does not. Not
    `\\b`, which fails beside a name that starts or ends with punctuation ("R2-D2.", "Dr. Bot")."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", answer, re.IGNORECASE) is not None


class Identity(Skill):
    """Answers name the configured assistant and its maker; checked by the name (the item's "reference") appearing
    as a word in the answer (any case)."""

    name = "identity"

    def __init__(self, identity: IdentityConfig | None = None):
        self.identity = identity or IdentityConfig()

    def example(self, rng: random.Random) -> Example:
        question, answer = rng.choice(_QUESTIONS)
        opener = rng.choice(_OPENERS)
        if opener and opener[-2] == ",":  # "Hey, who made you?" reads better lower-cased
            question = question[0].lower() + question[1:]
        closer = rng.choice(_CLOSERS)
        me = self.identity
        return Example(self.name, opener + question + closer, answer.format(n=me.name, m=me.maker), me.name)

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        # another model's name, never the one configured (an assistant may well be called Claude)
        wrong = [w for w in _WRONG_IDENTITIES if not says_name(w, str(example.reference))]
        return rng.choice(wrong), "wrong_identity"

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        return says_name(answer, str(item["reference"]))
