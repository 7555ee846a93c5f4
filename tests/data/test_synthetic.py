"""Generated label sets: deterministic, valid, drawn from the skill mix, and checkable by the skills."""

import pytest

from data.chat.labels import LabelsConfig, validate_comparison, validate_conversation
from data.chat.skills import DEFAULT_MIX, SKILL_NAMES, check
from data.chat.synthetic import generate_comparisons, generate_conversations
from model.identity import IdentityConfig
from tests.files import PAGES

ADA = IdentityConfig(name="Ada", maker="Acme Labs", train_fraction=0.25)


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
    exchanges = [sum(m["role"] == "user" for m in c["messages"]) for c in convs]  # a tool call adds turns, not asks
    assert 2 in exchanges and exchanges.count(1) > 350
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
    assert {c["meta"]["generator"] for c in comps} == set(DEFAULT_MIX) - {"calculator", "crawl_qa"}
    assert len({c["prompt"] for c in comps}) > 550  # repeats only where a skill runs out of prompts (identity)
    for c in comps:
        assert validate_comparison(c, LabelsConfig()) is None and c["meta"]["generated"] is True
        item = {"skill": c["meta"]["generator"], "reference": c["meta"]["reference"]}
        assert check(item, c["chosen"]), c
        assert not check(item, c["rejected"]), c


def test_without_an_identity_no_conversation_has_a_system_message():
    convs = generate_conversations(300, seed=0)
    assert all(m["role"] != "system" for c in convs for m in c["messages"])


def test_a_train_fraction_of_conversations_start_with_the_identitys_system_message():
    convs = generate_conversations(400, seed=3, identity=ADA)
    system = [c for c in convs if c["messages"][0]["role"] == "system"]
    assert len(system) == 100  # round(400 * 0.25)
    assert {c["messages"][0]["content"] for c in system} == {"You are Ada, a small assistant model made by Acme Labs."}
    for c in convs:
        assert validate_conversation(c, LabelsConfig()) is None
        assert [m["role"] for m in c["messages"][1:]].count("system") == 0


def test_which_conversations_get_the_system_message_is_deterministic_in_the_seed():
    def with_system(seed: int) -> list[str]:
        return [c["id"] for c in generate_conversations(200, seed=seed, identity=ADA)
                if c["messages"][0]["role"] == "system"]

    assert with_system(1) == with_system(1)
    assert [i.split("-")[-1] for i in with_system(1)] != [i.split("-")[-1] for i in with_system(2)]


def test_the_system_message_leaves_the_drawn_exchanges_as_they_are():
    plain = generate_conversations(200, seed=4)
    default_identity = generate_conversations(200, seed=4, identity=IdentityConfig(train_fraction=0.5))
    without_system = [[m for m in c["messages"] if m["role"] != "system"] for c in default_identity]
    assert without_system == [c["messages"] for c in plain]
    assert sum(c["messages"][0]["role"] == "system" for c in default_identity) == 100


def test_identity_conversations_and_comparisons_name_the_configured_assistant():
    convs = generate_conversations(60, seed=0, mix={"identity": 1.0}, identity=ADA)
    answers = [c["messages"][-1]["content"] for c in convs]
    assert all("Ada" in a and "Acme Labs" in a and "Factory" not in a for a in answers)
    comps = generate_comparisons(20, seed=0, mix={"identity": 1.0}, identity=ADA)
    assert all(c["meta"]["reference"] == "Ada" and "Ada" in c["chosen"] and "Ada" not in c["rejected"] for c in comps)
