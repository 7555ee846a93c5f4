"""Writes the JSONL items of the shipped lm-evaluation-harness tasks (arith_mc, copy) from a fixed seed and the
project's own word lists, so `python data/evals/harness/make_tasks.py` rebuilds the committed files byte for byte.
paragraphs.jsonl is written by hand and not generated."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # run as a script from anywhere: the repository root is importable

from data.chat.skills.vocab import WORDS  # noqa: E402
from model.files import atomic_write_text  # noqa: E402

SEED = 20261202


def arith_item(rng: random.Random) -> dict:
    """A sum or difference of two small numbers with four numeric choices: the answer and three near misses."""
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    if rng.random() < 0.5:
        question, answer = f"What is {a} + {b}?", a + b
    else:
        a, b = max(a, b), min(a, b)
        question, answer = f"What is {a} - {b}?", a - b
    wrong: set[int] = set()
    while len(wrong) < 3:
        guess = answer + rng.choice([-10, -2, -1, 1, 2, 10])
        if guess >= 0 and guess != answer:
            wrong.add(guess)
    choices = [answer, *sorted(wrong)]
    rng.shuffle(choices)
    return {"question": question, "choices": [str(c) for c in choices], "answer": choices.index(answer)}


def arith_items(n: int, rng: random.Random) -> list[dict]:
    items, seen = [], set()
    while len(items) < n:
        item = arith_item(rng)
        if item["question"] not in seen:
            seen.add(item["question"])
            items.append(item)
    return items


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main() -> None:
    rng = random.Random(SEED)
    arith = arith_items(50, rng)
    write_jsonl(HERE / "arith_mc_train.jsonl", arith[:10])  # the few-shot examples
    write_jsonl(HERE / "arith_mc_test.jsonl", arith[10:])
    words = rng.sample(WORDS, 40)
    write_jsonl(HERE / "copy_train.jsonl", [{"word": w} for w in words[:10]])
    write_jsonl(HERE / "copy_test.jsonl", [{"word": w} for w in words[10:]])


if __name__ == "__main__":
    main()
