"""Questions about crawled pages: 'What is <page topic>?'. The ideal answer looks the topic up with the search tool and
answers with the first prose sentence of the passage found (the page's own, at the top of the results), so the
assistant learns to answer from what the pipeline crawled rather than from a vague recollection of it."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from data.chat.skills.base import Example, Skill
from model.tools import SEARCH_K, Toolbox, format_call

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
    """Checked by word-overlap F1 >= 0.5 with the reference sentence. Built with the crawled pages ({title, text, url})
    and a search index over them (built from the pages unless given: the yearly `index` artifact, for the evals); a
    page is asked about only when searching its topic puts the page first and that passage has a prose sentence, so
    every ideal answer is there in the result it read. With no such page the skill is unavailable."""

    name = "crawl_qa"
    uses_pages = True
    uses_tools = True
    MIN_F1 = 0.5
    MAX_ANSWER_WORDS = 30  # with the question, the call and the result, the conversation fits a 256-token context

    def __init__(self, pages: list[Mapping[str, Any]] | None = None, index: Any = None, k: int = SEARCH_K):
        from data.search import SearchIndex, SearchTool

        pages = [p for p in pages or [] if page_topic(p)]
        self.index = index if index is not None or not pages else SearchIndex.build(pages)
        # results as the engine hands them over, cut at the default limit
        self.tools = Toolbox.of([SearchTool(self.index, k)] if self.index is not None else [])
        self.usable: list[tuple[Mapping[str, Any], str, str]] = []  # (page, topic, the sentence the search shows)
        seen: set[str] = set()
        for page in pages:
            topic = page_topic(page)
            if topic.lower() in seen:  # two pages with one title: the question would be ambiguous
                continue
            seen.add(topic.lower())
            found = self.index.search(topic, 1)
            sentence = first_sentence(found[0].text) if found and found[0].url == page.get("url") else None
            if sentence and len(sentence.split()) <= self.MAX_ANSWER_WORDS:
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
        call = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": {"query": topic}}}
        reply = [{"role": "assistant", "content": "", "tool_calls": [call]},
                 {"role": "tool", "content": self.tools.call(format_call("search", {"query": topic}))[1]},
                 {"role": "assistant", "content": sentence}]
        # the wrong answer for comparisons: another page's opening, if it is clearly a different answer
        other = None
        for _ in range(10):
            candidate = rng.choice(self.usable)[2]
            if f1_overlap(candidate, sentence) < self.MIN_F1:
                other = candidate
                break
        return Example(self.name, prompt, sentence, sentence, {"url": page.get("url"), "topic": topic, "other": other},
                       reply=reply)

    def wrong_answer(self, example: Example, rng: random.Random) -> tuple[str, str]:
        if example.details.get("other"):
            return example.details["other"], "wrong_page"
        return "I don't know.", "unhelpful"

    def check(self, item: Mapping[str, Any], answer: str) -> bool:
        return f1_overlap(answer, str(item["reference"])) >= self.MIN_F1
