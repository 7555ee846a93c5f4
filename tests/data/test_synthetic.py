"""Synthetic generators: checkable answers, determinism, held-out eval items and the scorer."""

import random

import pytest

from data.chat.labels import LabelLimits, validate_comparison, validate_conversation
from data.chat.synthetic import (
    ASSISTANT_NAME,
    TASKS,
    generate_comparisons,
    generate_conversations,
    make_eval_items,
    make_example,
    score,
)

PAGES = [
    {"title": "json — JSON encoder and decoder — Python documentation", "url": "https://docs.python.org/json",
     "text": "Source code: Lib/json/__init__.py. JSON is a lightweight data interchange format inspired by "
             "JavaScript object literal syntax. It is widely used."},
    {"title": "Tower Bridge - Wikipedia", "url": "https://en.wikipedia.org/wiki/Tower_Bridge",
     "text": "Tower Bridge is a listed combined bascule and suspension bridge in London, built between 1886 "
             "and 1894. It crosses the River Thames."},
    {"title": "Photosynthesis | Biology notes", "url": "https://example.org/photosynthesis",
     "text": "Photosynthesis is the process by which green plants turn sunlight, water and carbon dioxide "
             "into sugar and oxygen. It happens in the leaves."},
    {"title": "Broken page", "url": "https://example.org/x", "text": "404"},
]


@pytest.mark.parametrize("task", TASKS)
def test_every_generated_answer_scores_true(task):
    rng = random.Random(0)
    for _ in range(200):
        ex = make_example(task, rng, PAGES)
        assert ex["task"] == task and [m["role"] for m in ex["messages"]] == ["user"]
        assert score(ex, ex["answer"]), ex


@pytest.mark.parametrize("item, right, wrong", [
    ({"task": "arithmetic", "reference": 42}, "6 * 7 = 42.\nAnswer: 42", "6 * 7 = 43.\nAnswer: 43"),
    ({"task": "arithmetic", "reference": 1200}, "That makes 1,200 in total.", "About 1,100 I think."),
    ({"task": "letter_count", "reference": 3}, "s-t-r-a-w-b-e-r-r-y has three r's. Answer: 3", "Answer: 2"),
    ({"task": "letter_count", "reference": 0}, "It does not appear, so 0.", "No numbers here."),
    ({"task": "spelling", "reference": "b-a-n-a-n-a"}, "It is spelled B - A - N - A - N - A.", "b-a-n-a-n-a-s"),
    ({"task": "spelling", "reference": "b-a-n-a-n-a"}, "b-a-n-a-n-a", "banana"),
    ({"task": "identity", "reference": ASSISTANT_NAME}, "I am factory, made by the LLM Factory pipeline.",
     "I'm ChatGPT, made by OpenAI."),
    ({"task": "refusal", "reference": "I don't know"}, "I don\u2019t know who that is.",
     "Velmor Quandish was a Dutch painter born in 1843."),
    ({"task": "refusal", "reference": "I don't know"}, "I'm not sure; I have no information on it.",
     "I don't know much, but Velmor Quandish was born in 1843."),
    ({"task": "crawl_qa", "reference": "Tower Bridge is a bascule and suspension bridge in London."},
     "It is a suspension bridge in London, a bascule bridge.", "It is a river in France."),
])
def test_score_right_and_wrong(item, right, wrong):
    assert score(item, right) is True
    assert score(item, wrong) is False


def test_score_rejects_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        score({"task": "poetry", "reference": "x"}, "x")


def test_generators_are_deterministic():
    assert generate_conversations(200, seed=5, pages=PAGES) == generate_conversations(200, seed=5, pages=PAGES)
    assert generate_conversations(200, seed=5) != generate_conversations(200, seed=6)
    assert generate_comparisons(100, seed=5, pages=PAGES) == generate_comparisons(100, seed=5, pages=PAGES)
    assert make_eval_items("arithmetic", 50, 1) == make_eval_items("arithmetic", 50, 1)


def test_conversations_are_valid_marked_and_some_multi_turn():
    convs = generate_conversations(500, seed=0, pages=PAGES)
    assert len({c["id"] for c in convs}) == 500
    for c in convs:
        assert validate_conversation(c, LabelLimits()) is None
        assert c["meta"]["generated"] is True and c["meta"]["generator"] in TASKS and c["meta"]["seed"] == 0
    turns = [len(c["messages"]) for c in convs]
    assert 4 in turns and turns.count(2) > 300
    assert {c["meta"]["generator"] for c in convs} == set(TASKS)


def test_crawl_qa_is_skipped_without_pages():
    assert all(c["meta"]["generator"] != "crawl_qa" for c in generate_conversations(300, seed=0, pages=None))
    with pytest.raises(ValueError, match="crawl_qa needs pages"):
        make_example("crawl_qa", random.Random(0), pages=[])
    with pytest.raises(ValueError, match="unknown tasks"):
        generate_conversations(10, seed=0, mix={"poetry": 1.0})


def test_mix_selects_tasks():
    convs = generate_conversations(100, seed=0, mix={"spelling": 1.0})
    assert {c["meta"]["generator"] for c in convs} == {"spelling"}


def test_comparisons_chosen_scores_true_and_rejected_false():
    comps = generate_comparisons(600, seed=0, pages=PAGES)
    assert {c["meta"]["generator"] for c in comps} == set(TASKS)
    for c in comps:
        assert validate_comparison(c, LabelLimits()) is None and c["meta"]["generated"] is True
        item = {"task": c["meta"]["generator"], "reference": c["meta"]["reference"]}
        assert score(item, c["chosen"]), c
        assert not score(item, c["rejected"]), c


def test_eval_items_never_overlap_the_exclude_set():
    train_prompts = {m["content"] for c in generate_conversations(1500, seed=0, pages=PAGES)
                     for m in c["messages"] if m["role"] == "user"}
    for task in TASKS:
        items = make_eval_items(task, 40, seed=0, exclude_prompts=train_prompts, pages=PAGES)
        prompts = [it["messages"][0]["content"] for it in items]
        assert not set(prompts) & train_prompts
        assert len(set(prompts)) == len(prompts)
        for it in items:
            assert set(it) >= {"id", "task", "messages", "reference", "answer"} and it["task"] == task
            assert score(it, it["answer"])
    assert len(make_eval_items("arithmetic", 40, seed=0, exclude_prompts=train_prompts)) == 40


def test_eval_items_differ_from_training_stream_with_same_seed():
    train = {c["messages"][0]["content"] for c in generate_conversations(200, seed=0, mix={"arithmetic": 1.0})}
    evals = {it["messages"][0]["content"] for it in make_eval_items("arithmetic", 200, seed=0)}
    assert len(train & evals) < 20
