"""Questions about crawled pages: 'What is <page topic>?' answered with the page's first prose sentence, so the
assistant learns to answer from what the pipeline crawled."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from data.chat.skills.base import Example, Skill

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ARTICLES = {"a", "an", "the"}


def first_sentence(text: str) -> str | None:
    """The first sentence that reads like prose (6-60 words, mostly letters), or None."""
    # the answer sits near the top of a page; do not split a whole long page for it
    for sentence in _SENTENCE_END.split(" ".join(text[:5000].split())):
        words = sentence.split()
        if not 6 <= len(words) <= 60 or not sentence.endswith("."):
            continue
        letters = sum(ch.isalpha() or ch.isspace() for ch in sentence)
        if letters / len(sentence) >= 0.85:
            return sentence
    return None


def page_topic(page: Mapping[str, Any]) -> str | None:
    """What a page is about, from its title: 1-12 words before the first site suffix."""
    title = str(page.get("title") or "").strip()
    # crawled titles carry site suffixes: "json — JSON encoder and decoder — Python 3.12 documentation"
    topic = re.split(r"\s+[—|–-]\s+", title)[0].strip()
    return topic if 1 <= len(topic.split()) <= 12 else None


def _words(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in _ARTICLES]


def f1_overlap(prediction: str, reference: str) -> float:
    """SQuAD-style word-overlap F1 (lower-cased, punctuation and articles dropped)."""
    pred, ref = _words(prediction), _words(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class CrawlQA(Skill):
    """Checked by word-overlap F1 >= 0.5 with the page's sentence. Built with the crawled pages ({title, text, url});
    pages without a short title or a prose sentence are skipped, and with none left the skill is unavailable."""

    name = "crawl_qa"
    uses_pages = True
    MIN_F1 = 0.5

    def __init__(self, pages: list[Mapping[str, Any]] | None = None):
        self.usable: list[tuple[Mapping[str, Any], str, str]] = []  # (page, topic, first sentence)
        for page in pages or []:
            topic, sentence = page_topic(page), first_sentence(str(page.get("text") or ""))
            if topic and sentence:
                self.usable.append((page, topic, sentence))

    @property
    def available(self) -> bool:
        return bool(self.usable)

    def example(self, rng: random.Random) -> Example:
        if not self.usable:
            raise ValueError("crawl_qa needs pages with a 'title' and a 'text' that has a prose sentence; got none")
        page, topic, sentence = rng.choice(self.usable)
        prompt = rng.choice([f"What is {topic}?", f"In one sentence, what is '{topic}' about?",
                             f"Briefly explain {topic}."])
        # the wrong answer for comparisons: another page's opening, if it is clearly a different answer
        other = None
        for _ in range(10):
            candidate = rng.choice(self.usable)[2]
            if f1_overlap(candidate, sentence) < self.MIN_F1:
                other = candidate
                break
        return Example(self.name, prompt, sentence, sentence, {"url": page.get("url"), "other": other})

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        if example.details.get("other"):
            return example.details["other"], "wrong_page"
        return "I don't know.", "unhelpful"

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        return f1_overlap(answer, str(item["reference"])) >= self.MIN_F1
