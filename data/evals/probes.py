"""A multiple-choice probe built from held-out crawl text, for evaluating base models: pick the true
continuation of a passage among continuations taken from other documents."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def _sentence_starts(words: list[str]) -> list[int]:
    """Word indices that begin a sentence, so a context does not start mid-sentence."""
    return [0] + [i + 1 for i, w in enumerate(words[:-1]) if _SENTENCE_END.search(w)]


def build_mc_probe(documents: Iterable[dict], n: int, seed: int, n_choices: int = 4, context_words: int = 24,
                   continuation_words: int = 8) -> list[dict]:
    """Up to n items {"id", "context", "choices", "answer", "answer_text", "doc_id"}.

    context: `context_words` words starting at a sentence start; the correct choice: the next
    `continuation_words` words; distractors: runs of the same length from other documents.
    `answer` is the index of the correct choice in `choices`. Choices carry no leading space: score
    `context + " " + choice`. Fewer than n items only when the documents are too few or too short.
    """
    if n_choices < 2:
        raise ValueError(f"n_choices must be >= 2, got {n_choices}")
    span = context_words + continuation_words
    docs = [(str(d.get("id", i)), str(d.get("text") or "").split()) for i, d in enumerate(documents)]
    docs = [(doc_id, words) for doc_id, words in docs if len(words) >= span]
    if len(docs) < n_choices:
        return []  # distractors must come from other documents
    rng = random.Random(seed)
    items: list[dict] = []
    seen_contexts: set[str] = set()
    for _ in range(20 * n):
        if len(items) >= n:
            break
        d = rng.randrange(len(docs))
        doc_id, words = docs[d]
        starts = [s for s in _sentence_starts(words) if s + span <= len(words)] or [0]
        start = rng.choice(starts)
        context = " ".join(words[start:start + context_words])
        correct = " ".join(words[start + context_words:start + span])
        if context in seen_contexts:
            continue
        choices = [correct]
        for _ in range(20 * n_choices):
            if len(choices) == n_choices:
                break
            o = rng.randrange(len(docs))
            if o == d:
                continue
            other = docs[o][1]
            pos = rng.randrange(len(other) - continuation_words + 1)
            candidate = " ".join(other[pos:pos + continuation_words])
            if candidate not in choices:
                choices.append(candidate)
        if len(choices) < n_choices:
            continue
        rng.shuffle(choices)
        seen_contexts.add(context)
        items.append({"id": f"mc-{seed}-{len(items):05d}", "context": context, "choices": choices,
                      "answer": choices.index(correct), "answer_text": correct, "doc_id": doc_id})
    return items


def few_shot_prefix(items: list[dict], k: int) -> str:
    """The first k items rendered as solved examples (context + correct continuation), one paragraph each,
    to prepend to a probe context. Do not score the items used here."""
    return "".join(f"{it['context']} {it['choices'][it['answer']]}\n\n" for it in items[:k])
