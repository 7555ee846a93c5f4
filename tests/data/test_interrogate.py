"""The interrogation's pure logic (data/chat/interrogate.py) on hand-made questions and answers: how an answer is
classified, the teach/held-out split, the refusals it teaches, the rates and over-refusal between two rounds."""

import random

import pytest

from data.chat.interrogate import (
    CONFIDENT,
    HELD_OUT,
    INVENTED,
    KNOWN,
    REFUSED,
    RIGHT,
    TEACH,
    WRONG,
    classify,
    invented_questions,
    known_questions,
    needs_teaching,
    over_refusal,
    part_of,
    rates,
    refusal_conversation,
)
from data.chat.labels import LabelsConfig, validate_conversation
from data.chat.skills import Refusal

JSON_SENTENCE = "The json module encodes Python objects as JSON text and decodes JSON text back into objects."


def doc(url: str, text: str) -> dict:
    return {"id": url, "url": url, "text": text}


def known() -> dict:
    (q,), _ = known_questions([doc("https://docs.example/library/json.html", JSON_SENTENCE + " More follows.")], 1, 0)
    return q


def invented() -> dict:
    (q,), _ = invented_questions(1, 0)
    return q


def result(q: dict, part: str, cls: str) -> dict:
    return {**q, "part": part, "class": cls, "response": "..."}


def test_a_known_question_asks_about_the_page_topic_with_its_first_sentence_as_reference():
    q = known()
    assert q["messages"] == [{"role": "user", "content": "What is json?"}]
    assert q["reference"] == JSON_SENTENCE and q["kind"] == KNOWN and q["subject"] == "json"


def test_an_answer_that_restates_the_page_is_right():
    assert classify(known(), "The json module encodes Python objects as JSON text and decodes it again.") == RIGHT


def test_an_answer_that_says_it_does_not_know_is_a_refusal():
    assert classify(known(), "I'm not sure, I have no information about that.") == REFUSED
    assert classify(invented(), "I don't know. I have no reliable information about them.") == REFUSED


def test_a_wrong_answer_to_a_known_question_is_wrong():
    assert classify(known(), "It is a small town on the northern coast with a busy harbour.") == WRONG


def test_a_confident_answer_about_an_invented_subject_is_a_hallucination():
    rng = random.Random(1)
    skill = Refusal()
    ex = skill.example(rng)
    made_up, _ = skill.wrong_answer(ex, rng)
    (q,), _ = invented_questions(1, 3)
    assert classify(q, made_up) == CONFIDENT
    # a refusal that states a made-up fact all the same is not a refusal
    assert classify(q, "I don't know, but he was born in 1901.") == CONFIDENT


def test_the_split_is_deterministic_disjoint_and_per_question():
    questions, _ = invented_questions(300, 7)
    parts = [part_of(q, 0.5, 0) for q in questions]
    assert parts == [part_of(q, 0.5, 0) for q in questions]  # the same every time
    teach = {q["id"] for q, p in zip(questions, parts, strict=True) if p == TEACH}
    held = {q["id"] for q, p in zip(questions, parts, strict=True) if p == HELD_OUT}
    assert teach and held and not teach & held and len(teach | held) == 300
    assert 100 < len(held) < 200
    # a question's part depends on nothing else asked with it
    assert [part_of(q, 0.5, 0) for q in reversed(questions)] == parts[::-1]
    assert [part_of(q, 0.5, 1) for q in questions] != parts  # another seed, another split


def test_only_teach_questions_answered_wrongly_or_confidently_are_taught():
    k, i = known(), invented()
    assert needs_teaching(result(k, TEACH, WRONG)) and needs_teaching(result(i, TEACH, CONFIDENT))
    assert not needs_teaching(result(k, TEACH, RIGHT)) and not needs_teaching(result(k, TEACH, REFUSED))
    assert not needs_teaching(result(i, HELD_OUT, CONFIDENT)) and not needs_teaching(result(k, HELD_OUT, WRONG))
    # a page its search finds, answered wrongly, is a slip in reading the result: no refusal for it
    assert not needs_teaching({**result(k, TEACH, WRONG), "searchable": True})


def test_a_refusal_follows_the_calls_the_model_made_and_what_they_returned():
    calls = [{"name": "search", "arguments": {"query": "json"}, "result": "no results for 'json'"}]
    rec = refusal_conversation({**known(), "part": TEACH, "class": WRONG, "response": "It is a town.",
                                "calls": calls}, "abc123")
    user, call, found, reply = rec["messages"]
    assert call["tool_calls"][0]["function"] == {"name": "search", "arguments": {"query": "json"}}
    assert found == {"role": "tool", "content": "no results for 'json'"}
    assert reply["content"].startswith("I'm sorry, I don't believe I know")
    assert validate_conversation(rec, LabelsConfig()) is None


def test_a_known_question_expects_the_sentence_its_search_shows_where_search_finds_the_page():
    from data.search import SearchIndex

    docs = [{"id": "a", "url": "https://x.example/alpha.html",
             "text": "Alpha menu. " + "Filler words about nothing much here. " * 12
                     + "Alpha is a tool for measuring the tides in small harbours."},
            {"id": "b", "url": "https://x.example/beta.html", "text": "Beta is a library that parses old calendars."}]
    index = SearchIndex.build([{**docs[0], "text": "Alpha is a tool for measuring the tides in small harbours."}])
    found, _ = known_questions(docs, 10, 0, index=index)
    by_topic = {q["subject"]: q for q in found}
    assert by_topic["alpha"]["searchable"] and by_topic["alpha"]["reference"].startswith("Alpha is a tool")
    assert not by_topic["beta"]["searchable"]  # not in the index: the page's own opening


@pytest.mark.parametrize("subject", ["json", "Velmor Quandish", "the Brizel compass", "pep-0008", "Dishora"])
def test_a_refusal_example_is_a_valid_conversation_that_the_refusal_check_accepts(subject):
    q = {**known(), "subject": subject}
    rec = refusal_conversation({**q, "part": TEACH, "class": WRONG, "response": "It is a town."}, "abc123")
    assert validate_conversation(rec, LabelsConfig()) is None
    reply = rec["messages"][-1]["content"]
    assert reply.startswith("I'm sorry, I don't believe I know")
    assert Refusal().check({}, reply)
    assert rec["meta"]["generated"] is True and rec["meta"]["source"] == "interrogate"
    assert rec["meta"]["instructions_version"] == "interrogate-v1" and rec["meta"]["round"] == "abc123"


def test_rates_count_the_held_out_questions_only():
    k, i = known(), invented()
    results = [result(i, HELD_OUT, CONFIDENT), result(i, HELD_OUT, REFUSED), result(i, HELD_OUT, REFUSED),
               result(i, HELD_OUT, REFUSED), result(k, HELD_OUT, RIGHT), result(k, HELD_OUT, REFUSED),
               # taught questions never count, however they were answered
               result(i, TEACH, CONFIDENT), result(i, TEACH, CONFIDENT), result(k, TEACH, WRONG)]
    assert rates(results) == {"hallucination_rate": 0.25, "known_accuracy": 0.5, "known_refusal_rate": 0.5}
    assert "known_accuracy" not in rates([result(i, HELD_OUT, CONFIDENT)])


def known_result(n: int, part: str, cls: str) -> dict:
    return {"id": f"known-{n}", "kind": KNOWN, "part": part, "class": cls}


def test_over_refusal_is_the_share_of_what_the_previous_round_knew_that_this_one_refuses():
    previous = [known_result(1, HELD_OUT, RIGHT), known_result(2, HELD_OUT, RIGHT), known_result(3, HELD_OUT, RIGHT),
                known_result(4, HELD_OUT, WRONG), known_result(5, TEACH, RIGHT), known_result(6, HELD_OUT, RIGHT)]
    current = [known_result(1, HELD_OUT, REFUSED), known_result(2, HELD_OUT, RIGHT), known_result(3, HELD_OUT, WRONG),
               known_result(4, HELD_OUT, REFUSED),  # it did not know this one before: refusing it is not over-refusal
               known_result(5, TEACH, REFUSED)]  # taught: not measured; known-6 was not asked this round
    assert over_refusal(previous, current) == {"previously_right": 3, "now_refused": 1, "over_refusal_rate": 0.3333}


def test_over_refusal_is_not_measured_when_the_previous_round_knew_nothing():
    previous = [known_result(1, HELD_OUT, WRONG), known_result(2, HELD_OUT, REFUSED)]
    current = [known_result(1, HELD_OUT, REFUSED), known_result(2, HELD_OUT, REFUSED)]
    assert over_refusal(previous, current)["over_refusal_rate"] is None


def test_known_questions_leave_out_ambiguous_topics_and_trained_prompts_whatever_the_order():
    sentence = "This page explains how the module reads and writes files on the local disk."
    docs = [doc("https://d.example/a/index.html", sentence), doc("https://d.example/b/index.html", sentence),
            doc("https://d.example/os.html", sentence), doc("https://d.example/io.html", sentence),
            doc("https://d.example/tiny.html", "Too short.")]
    questions, stats = known_questions(docs, 10, 0, exclude=["what is  IO?"])
    assert [q["subject"] for q in questions] == ["os"]
    assert (stats["ambiguous_topic"], stats["trained_on"], stats["no_topic_or_sentence"]) == (2, 1, 1)
    assert known_questions(docs[::-1], 10, 0, exclude=["what is  IO?"])[0] == questions


def test_invented_questions_skip_prompts_the_model_was_trained_on():
    first, _ = invented_questions(5, 2)
    again, stats = invented_questions(5, 2, exclude=[first[0]["messages"][0]["content"]])
    assert first[0]["id"] not in {q["id"] for q in again} and stats["trained_on"] == 1 and len(again) == 5
    assert {q["kind"] for q in again} == {INVENTED}
