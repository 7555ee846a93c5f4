"""Generated label sets: deterministic, valid, drawn from the skill mix, and checkable by the skills."""

import pytest

from data.chat.labels import LabelsConfig, validate_comparison, validate_conversation
from data.chat.skills import DEFAULT_MIX, SKILL_NAMES, check
from data.chat.synthetic import generate_comparisons, generate_conversations
from tests.files import PAGES


def test_generators_are_deterministic():
    assert generate_conversations(200, seed=5, pages=PAGES) == generate_conversations(200, seed=5, pages=PAGES)
    assert generate_conversations(200, seed=5) != generate_conversations(200, seed=6)
    assert generate_comparisons(100, seed=5, pages=PAGES) == generate_comparisons(100, seed=5, pages=PAGES)


def test_conversations_are_valid_marked_and_some_multi_turn():
    convs = generate_conversations(500, seed=0, pages=PAGES)
    assert len({c["id"] for c in convs}) == 500
    for c in convs:
        assert validate_conversation(c, LabelsConfig()) is None
        assert c["meta"]["generated"] is True and c["meta"]["generator"] in SKILL_NAMES and c["meta"]["seed"] == 0
    turns = [len(c["messages"]) for c in convs]
    assert 4 in turns and turns.count(2) > 300
    assert {c["meta"]["generator"] for c in convs} == set(DEFAULT_MIX)


def test_calculator_conversations_call_the_tool_and_state_its_result():
    convs = generate_conversations(200, seed=0, mix={"calculator": 1.0})
    for c in convs[:50]:
        if len(c["messages"]) != 4:
            continue
        user, call, result, final = c["messages"]
        fn = call["tool_calls"][0]["function"]
        assert fn["name"] == "calculator" and result["role"] == "tool"
        assert final["content"].endswith(f"Answer: {result['content']}")
        assert validate_conversation(c, LabelsConfig()) is None


def test_crawl_qa_is_left_out_without_pages_and_unknown_skills_are_refused():
    assert all(c["meta"]["generator"] != "crawl_qa" for c in generate_conversations(300, seed=0, pages=None))
    with pytest.raises(ValueError, match="unknown skills"):
        generate_conversations(10, seed=0, mix={"poetry": 1.0})


def test_mix_selects_skills():
    convs = generate_conversations(100, seed=0, mix={"spelling": 1.0})
    assert {c["meta"]["generator"] for c in convs} == {"spelling"}


def test_comparisons_chosen_checks_true_and_rejected_false():
    comps = generate_comparisons(600, seed=0, pages=PAGES)
    # tool-using skills make no comparisons: their sides would be plain text
    assert {c["meta"]["generator"] for c in comps} == set(DEFAULT_MIX) - {"calculator"}
    assert len({c["prompt"] for c in comps}) > 550  # repeats only where a skill runs out of prompts (identity)
    for c in comps:
        assert validate_comparison(c, LabelsConfig()) is None and c["meta"]["generated"] is True
        item = {"skill": c["meta"]["generator"], "reference": c["meta"]["reference"]}
        assert check(item, c["chosen"]), c
        assert not check(item, c["rejected"]), c
