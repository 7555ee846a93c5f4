"""Finding what a model does not know: questions whose answers are in the pretraining crawl ("known": "What is <page
topic>?", the page's first prose sentence the reference, as the crawl_qa skill asks) and questions about invented
people, countries and gadgets ("invented", the refusal skill's), each answer classified, a teach / held-out split that
does not depend on the other questions, the refusals to teach, and the rates measured on the held-out part.

An answer to a known question is right (the crawl_qa check passes), refused (a phrase of not knowing) or wrong; an
answer about an invented subject is refused (the refusal check passes) or confident (a hallucination).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from data.chat.skills.base import normalize_prompt
from data.chat.skills.crawl_qa import CrawlQA, first_sentence, page_topic
from data.chat.skills.refusal import Refusal, is_refusal

KNOWN, INVENTED = "known", "invented"
TEACH, HELD_OUT = "teach", "held_out"
RIGHT, REFUSED, WRONG, CONFIDENT = "right", "refused", "wrong", "confident"
INSTRUCTIONS_VERSION = "interrogate-v1"
SOURCE = "interrogate"

_CRAWL_QA, _REFUSAL = CrawlQA(), Refusal()  # checking needs only an item's reference


def page_of(doc: Mapping[str, Any]) -> dict:
    """A crawled document as a page {title, url, text}: the title is the URL's last path segment less ".html" (the
    documents keep no HTML title), as the sample inbox's crawl questions name their pages."""
    url = str(doc.get("url") or "")
    title = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".html")
    return {"title": title, "url": url, "text": str(doc.get("text") or ""), "id": str(doc.get("id") or url)}


def _rank(seed: int, what: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{what}".encode(), digest_size=8).digest(), "big")


def question_id(kind: str, prompt: str) -> str:
    """Stable across rounds: the kind and the prompt (case and spacing aside)."""
    return f"{kind}-{hashlib.sha256(normalize_prompt(prompt).encode()).hexdigest()[:12]}"


def _question(kind: str, prompt: str, reference: str, subject: str, **details: Any) -> dict:
    return {"id": question_id(kind, prompt), "kind": kind, "skill": "crawl_qa" if kind == KNOWN else "refusal",
            "messages": [{"role": "user", "content": prompt}], "reference": reference, "subject": subject, **details}


def known_questions(documents: Iterable[Mapping[str, Any]], n: int, seed: int,
                    exclude: Iterable[str] = (), index: Any = None) -> tuple[list[dict], Counter]:
    """Up to n "What is <topic>?" questions about the documents ({id, url, text}), one per page, the page's first
    prose sentence the reference; the same documents and seed give the same questions whatever their order.

    Left out, and counted: pages without a topic or a prose sentence ("no_topic_or_sentence"), topics that more than
    one page has ("ambiguous_topic": the reference would be one page's opening among several), and prompts in
    `exclude` ("trained_on": a user turn of the training data, compared as normalize_prompt does)."""
    excluded = {normalize_prompt(p) for p in exclude}
    stats: Counter = Counter()
    topics: Counter = Counter()
    candidates: list[tuple[int, dict]] = []
    for doc in documents:
        stats["documents"] += 1
        page = page_of(doc)
        topic, sentence = page_topic(page), first_sentence(page["text"])
        if not topic or not sentence:
            stats["no_topic_or_sentence"] += 1
            continue
        topics[topic.lower()] += 1
        prompt = f"What is {topic}?"
        # where searching the topic puts the page first, the answer it learned to give is that passage's sentence
        # (as crawl_qa teaches); elsewhere search cannot find it, and only the page's own opening is right
        found = index.search(topic, 1) if index is not None else []
        hit = first_sentence(found[0].text) if found and found[0].url == page["url"] else None
        candidates.append((_rank(seed, page["id"]), _question(KNOWN, prompt, hit or sentence, topic, url=page["url"],
                                                              searchable=hit is not None)))
    out = []
    for _, q in sorted(candidates, key=lambda c: (c[0], c[1]["id"])):
        if topics[q["subject"].lower()] > 1:
            stats["ambiguous_topic"] += 1
        elif normalize_prompt(q["messages"][0]["content"]) in excluded:
            stats["trained_on"] += 1
        elif len(out) < n:
            out.append(q)
    return out, stats


def _subject(details: Mapping[str, Any]) -> str:
    """Who or what a refusal-skill question asks about (its kinds 0-2 ask of a person, 3-4 of a country)."""
    kind = details["kind"]
    return details["person"] if kind <= 2 else details["country"] if kind <= 4 else details["gadget"]


def invented_questions(n: int, seed: int, exclude: Iterable[str] = ()) -> tuple[list[dict], Counter]:
    """n questions about invented subjects (the refusal skill's), with distinct prompts, none in `exclude`; drawn on
    a stream of their own (not the evals' or the label generator's), deterministic in the seed."""
    excluded = {normalize_prompt(p) for p in exclude}
    rng = random.Random(f"interrogate:invented:{seed}")
    stats: Counter = Counter()
    seen: set[str] = set()
    out: list[dict] = []
    for _ in range(max(2000, 50 * n)):
        if len(out) >= n:
            break
        ex = _REFUSAL.example(rng)
        prompt = normalize_prompt(ex.prompt)
        if prompt in seen:
            continue
        seen.add(prompt)
        if prompt in excluded:
            stats["trained_on"] += 1
            continue
        out.append(_question(INVENTED, ex.prompt, ex.reference, _subject(ex.details)))
    if len(out) < n:
        raise ValueError(f"invented questions: only {len(out)} of {n} with new prompts; ask for fewer")
    return out, stats


def part_of(question: Mapping[str, Any], held_out_fraction: float, seed: int) -> str:
    """TEACH or HELD_OUT, from a hash of the seed and the question's id alone: a question keeps its part from round
    to round, whatever else is asked, so a held-out question is never taught."""
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be between 0 and 1 (exclusive), got {held_out_fraction}")
    return HELD_OUT if _rank(seed, f"part:{question['id']}") / 2**64 < held_out_fraction else TEACH


def classify(question: Mapping[str, Any], answer: str) -> str:
    """RIGHT / REFUSED / WRONG for a known question; REFUSED / CONFIDENT for an invented one."""
    if question["kind"] == INVENTED:
        return REFUSED if _REFUSAL.check(question, answer) else CONFIDENT
    if question["kind"] != KNOWN:
        raise ValueError(f"question {question.get('id')}: unknown kind {question['kind']!r}")
    if _CRAWL_QA.check(question, answer):
        return RIGHT
    return REFUSED if is_refusal(answer) else WRONG


def needs_teaching(result: Mapping[str, Any]) -> bool:
    """A teach question the model answered confidently about an invented subject, or wrongly about a page its search
    cannot find: what it cannot find out it should say it does not know. (A page search finds and the model still
    got wrong is a slip in reading the result, not a gap in what it can know: no refusal for it.)"""
    if result["part"] != TEACH:
        return False
    return result["class"] == CONFIDENT or (result["class"] == WRONG and not result.get("searchable", False))


def refusal_text(subject: str) -> str:
    """The answer to teach: a refusal the refusal skill's check accepts (no statement of fact; a subject that reads
    like one, e.g. with a year in it, is left out of the sentence)."""
    text = f"I'm sorry, I don't believe I know anything about {subject}, and I'd rather not guess."
    if _REFUSAL.check({}, text):
        return text
    return "I'm sorry, I don't believe I know the answer to that, and I'd rather not guess."


def tool_turns(calls: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The model's own calls and what they returned, as conversation turns: the refusal it is taught follows what it
    looked up, so it learns to say it does not know when the search did not tell it, not to stop searching. A
    malformed call (no tool name) is left out with everything after it."""
    turns: list[dict] = []
    for n, call in enumerate(calls, start=1):
        if not call.get("name") or not isinstance(call.get("arguments"), dict):
            break
        turns += [{"role": "assistant", "content": "", "tool_calls": [
                      {"id": f"call_{n}", "type": "function",
                       "function": {"name": call["name"], "arguments": call["arguments"]}}]},
                  {"role": "tool", "content": str(call["result"])}]
    return turns


def refusal_conversation(result: Mapping[str, Any], round_key: str) -> dict:
    """A training conversation for the labels inbox: the question, then the refusal; meta says where it came from
    (generated by the interrogate round `round_key`) and what the model had answered."""
    return {
        "id": f"{SOURCE}-{result['id']}",
        "messages": [*result["messages"], *tool_turns(result.get("calls", [])),
                     {"role": "assistant", "content": refusal_text(result["subject"])}],
        "meta": {"generated": True, "source": SOURCE, "instructions_version": INSTRUCTIONS_VERSION,
                 "labeler": SOURCE, "round": round_key, "kind": result["kind"], "question_id": result["id"],
                 "model_answer": result["response"], "answer_class": result["class"]},
    }


def rates(results: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """On the held-out results only: hallucination_rate (confident answers / invented questions), known_accuracy and
    known_refusal_rate (of the known questions); a rate whose questions are missing is left out."""
    held = [r for r in results if r["part"] == HELD_OUT]
    invented = [r for r in held if r["kind"] == INVENTED]
    known = [r for r in held if r["kind"] == KNOWN]
    out = {}
    if invented:
        out["hallucination_rate"] = round(sum(r["class"] == CONFIDENT for r in invented) / len(invented), 4)
    if known:
        out["known_accuracy"] = round(sum(r["class"] == RIGHT for r in known) / len(known), 4)
        out["known_refusal_rate"] = round(sum(r["class"] == REFUSED for r in known) / len(known), 4)
    return out


def over_refusal(previous: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]) -> dict:
    """Of the held-out known questions the previous round's model answered right (and this round asked again), the
    share this model refuses: {"previously_right", "now_refused", "over_refusal_rate"}; the rate is None when the
    previous model answered none of them right (nothing to measure it on, which is not a rate of 0)."""
    now = {r["id"]: r["class"] for r in current if r["part"] == HELD_OUT and r["kind"] == KNOWN}
    known = [r["id"] for r in previous if r["part"] == HELD_OUT and r["kind"] == KNOWN and r["class"] == RIGHT
             and r["id"] in now]
    refused = sum(now[q] == REFUSED for q in known)
    return {"previously_right": len(known), "now_refused": refused,
            "over_refusal_rate": round(refused / len(known), 4) if known else None}
