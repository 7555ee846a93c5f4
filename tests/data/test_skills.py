"""Chat skills: each makes examples its own check accepts, tells right answers from wrong ones, rewards by that check;
the mix draws by weight from a seed; eval items are held out from every user turn of the training data."""

import random
from collections import Counter

import pytest

from data.chat.skills import (
    ASSISTANT_NAME,
    DEFAULT_MIX,
    SKILL_NAMES,
    SKILLS,
    SkillMix,
    build_skill,
    check,
    held_out_items,
    items_hash,
    normalize_prompt,
    reward,
    user_turns,
)
from model.identity import IdentityConfig
from tests.files import PAGES

ADA = IdentityConfig(name="Ada", maker="Acme Labs")


def test_the_registry_names_every_skill_once():
    assert SKILL_NAMES == ("arithmetic", "letter_count", "spelling", "identity", "refusal", "crawl_qa", "calculator",
                           "calculator_large")
    assert all(SKILLS[name].name == name for name in SKILL_NAMES)
    with pytest.raises(ValueError, match="unknown skill 'poetry'"):
        build_skill("poetry")


@pytest.mark.parametrize("name", SKILL_NAMES)
def test_every_example_passes_its_check_and_its_wrong_answer_fails(name):
    skill, rng = build_skill(name, PAGES), random.Random(0)
    for _ in range(200):
        ex = skill.example(rng)
        item = ex.as_item()
        assert item["skill"] == name and [m["role"] for m in item["messages"]] == ["user"]
        assert skill.check(item, ex.answer), ex
        assert skill.reward(item, ex.answer) == 1.0
        wrong, error = skill.wrong_answer(ex, rng)
        assert not skill.check(item, wrong) and skill.reward(item, wrong) == 0.0 and error, (ex, wrong)


@pytest.mark.parametrize("item, right, wrong", [
    ({"skill": "arithmetic", "reference": 42}, "6 * 7 = 42.\nAnswer: 42", "6 * 7 = 43.\nAnswer: 43"),
    ({"skill": "arithmetic", "reference": 1200}, "That makes 1,200 in total.", "About 1,100 I think."),
    ({"skill": "letter_count", "reference": 3}, "s-t-r-a-w-b-e-r-r-y has three r's. Answer: 3", "Answer: 2"),
    ({"skill": "letter_count", "reference": 0}, "It does not appear, so 0.", "No numbers here."),
    ({"skill": "spelling", "reference": "b-a-n-a-n-a"}, "It is spelled B - A - N - A - N - A.", "b-a-n-a-n-a-s"),
    ({"skill": "spelling", "reference": "b-a-n-a-n-a"}, "b-a-n-a-n-a", "banana"),
    ({"skill": "identity", "reference": ASSISTANT_NAME}, "I am factory, made by the LLM Factory pipeline.",
     "I'm ChatGPT, made by OpenAI."),
    ({"skill": "refusal", "reference": "I don't know"}, "I don\u2019t know who that is.",
     "Velmor Quandish was a Dutch painter born in 1843."),
    ({"skill": "refusal", "reference": "I don't know"}, "I'm not sure; I have no information on it.",
     "I don't know much, but Velmor Quandish was born in 1843."),
    ({"skill": "crawl_qa", "reference": "Tower Bridge is a bascule and suspension bridge in London."},
     "It is a suspension bridge in London, a bascule bridge.", "It is a river in France."),
])
def test_check_and_reward_tell_right_from_wrong(item, right, wrong):
    assert check(item, right) is True and reward(item, right) == 1.0
    assert check(item, wrong) is False and reward(item, wrong) == 0.0


def test_check_names_the_item_with_an_unknown_skill():
    with pytest.raises(ValueError, match="item q7: unknown skill 'poetry'"):
        check({"id": "q7", "skill": "poetry", "reference": "x"}, "x")


def test_crawl_qa_without_usable_pages_is_unavailable():
    skill = build_skill("crawl_qa", [PAGES[-1]])
    assert not skill.available
    with pytest.raises(ValueError, match="crawl_qa needs pages"):
        skill.example(random.Random(0))


def test_examples_are_deterministic_distinct_and_avoid_the_excluded_prompts():
    skill = build_skill("arithmetic")
    first = skill.examples(50, seed=1)
    assert first == skill.examples(50, seed=1) and first != skill.examples(50, seed=2)
    prompts = [normalize_prompt(ex.prompt) for ex in first]
    assert len(set(prompts)) == 50
    # excluded prompts match case- and whitespace-insensitively
    excluded = {"  " + ex.prompt.upper() for ex in first[:10]}
    again = {normalize_prompt(ex.prompt) for ex in skill.examples(50, seed=1, exclude_prompts=excluded)}
    assert len(again) == 50 and not again & set(prompts[:10])


def test_a_skill_that_runs_out_of_prompts_returns_fewer_examples():
    identity = build_skill("identity")
    assert 20 < len(identity.examples(1000, seed=0)) < 1000


def test_mix_draws_skills_in_proportion_to_their_weights_from_a_seed():
    mix = SkillMix({"arithmetic": 3, "spelling": 1, "identity": 0})
    assert mix.names == ["arithmetic", "spelling"]
    drawn = [ex.skill for ex in mix.examples(2000, seed=4)]
    assert drawn == [ex.skill for ex in mix.examples(2000, seed=4)]
    counts = Counter(drawn)
    assert set(counts) == {"arithmetic", "spelling"} and 2.5 < counts["arithmetic"] / counts["spelling"] < 3.5


def test_mix_leaves_out_skills_that_cannot_make_examples_and_refuses_bad_weights():
    assert "crawl_qa" not in SkillMix(pages=None).names and "crawl_qa" in SkillMix(pages=PAGES).names
    with pytest.raises(ValueError, match="unknown skills"):
        SkillMix({"poetry": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        SkillMix({"arithmetic": -1.0})
    with pytest.raises(ValueError, match="leaves no skill"):
        SkillMix({"crawl_qa": 1.0}, pages=None)


def test_user_turns_reads_every_user_turn_of_conversations_and_comparisons():
    records = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                      {"role": "assistant", "content": "a"}, {"role": "user", "content": "second"},
                      {"role": "assistant", "content": "b"}]},
        {"prompt": "a comparison prompt", "chosen": "x", "rejected": "y"},
        {"prompt": [{"role": "user", "content": "a listed prompt"}], "chosen": "x", "rejected": "y"},
    ]
    assert user_turns(records) == {"first", "second", "a comparison prompt", "a listed prompt"}


def test_held_out_items_exclude_every_user_turn_not_only_the_first():
    would_be = [it["messages"][0]["content"] for it in held_out_items(["arithmetic"], 30, 3, training=[])]
    # training conversations that ask eval prompts in their second user turn, differently cased
    training = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": prompt.upper()}, {"role": "assistant", "content": "x"}]}
                for prompt in would_be[:10]]
    items = held_out_items(["arithmetic"], 30, 3, training=training)
    prompts = {normalize_prompt(it["messages"][0]["content"]) for it in items}
    assert len(items) == 30
    assert not prompts & {normalize_prompt(p) for p in would_be[:10]}


def test_held_out_items_are_checkable_records_and_their_hash_tracks_their_content():
    items = held_out_items(["spelling", "identity"], 5, 0, training=[])
    assert [it["skill"] for it in items] == ["spelling"] * 5 + ["identity"] * 5
    for it in items:
        assert set(it) == {"id", "skill", "messages", "reference", "answer"} and check(it, it["answer"])
    assert items_hash(items) == items_hash([dict(it) for it in items])
    changed = [{**items[0], "reference": "x-y-z"}, *items[1:]]
    assert items_hash(changed) != items_hash(items)


def test_eval_examples_differ_from_the_training_stream_with_the_same_seed():
    train = {ex.prompt for ex in SkillMix({"arithmetic": 1.0}).examples(200, seed=0)}
    evals = {ex.prompt for ex in build_skill("arithmetic").examples(200, seed=0)}
    assert len(train & evals) < 20


def test_the_identity_skill_answers_with_the_configured_name_and_maker():
    skill, rng = build_skill("identity", identity=ADA), random.Random(0)
    for _ in range(100):
        ex = skill.example(rng)
        assert ex.reference == "Ada" and "Ada" in ex.answer and "Acme Labs" in ex.answer, ex
        assert "Factory" not in ex.answer and check(ex.as_item(), ex.answer)


def test_the_identity_check_passes_the_configured_name_and_fails_another():
    item = build_skill("identity", identity=ADA).examples(1, seed=0)[0].as_item()
    assert check(item, "I'm ada, made by Acme Labs.") and reward(item, "Hi, Ada here!") == 1.0
    assert not check(item, f"I'm {ASSISTANT_NAME}, made by the LLM Factory pipeline.")
    assert not check(item, "I'm Adam, an assistant.")  # the name as a word of its own, not a prefix


def test_a_name_with_punctuation_is_still_found_as_a_word():
    item = build_skill("identity", identity=IdentityConfig(name="R2-D2.")).examples(1, seed=0)[0].as_item()
    assert check(item, "Call me R2-D2. Beep.") and not check(item, "Call me R2-D2.5.")


def test_a_wrong_identity_never_names_the_configured_assistant():
    skill, rng = build_skill("identity", identity=IdentityConfig(name="Claude")), random.Random(0)
    for _ in range(50):
        ex = skill.example(rng)
        wrong, _ = skill.wrong_answer(ex, rng)
        assert not skill.check(ex.as_item(), wrong), wrong


def test_the_mix_builds_its_identity_skill_with_the_identity_it_is_given():
    drawn = SkillMix({"identity": 1.0}, identity=ADA).examples(20, seed=0)
    assert {ex.reference for ex in drawn} == {"Ada"}
    assert {ex.reference for ex in SkillMix({"identity": 1.0}).examples(20, seed=0)} == {ASSISTANT_NAME}


def test_calculator_answers_call_the_tool_and_state_the_result_it_returns():
    from model.tools import Calculator as Tool

    for ex in build_skill("calculator").examples(50, seed=0):
        call, result, final = ex.turns
        expression = call["tool_calls"][0]["function"]["arguments"]["expression"]
        assert result == {"role": "tool", "content": Tool().run({"expression": expression})}
        assert final["content"] == f"Answer: {result['content']}" == ex.answer
        assert check(ex.as_item(), ex.answer) and not check(ex.as_item(), f"Answer: {ex.reference + 1}")


def test_calculator_large_asks_about_numbers_above_every_training_operand():
    def first_operand(ex) -> int:  # the quotient for a division: what the model must find
        a, op, b = ex.details["expression"].split()
        return int(a) // int(b) if op == "/" else int(a)

    def operands(ex) -> list[int]:
        a, op, b = ex.details["expression"].split()
        return [int(a) // int(b), int(b)] if op == "/" else [int(a), int(b)]

    training = build_skill("calculator").examples(2000, seed=1)
    large = build_skill("calculator_large").examples(200, seed=1)
    assert max(n for ex in training for n in operands(ex)) < min(first_operand(ex) for ex in large)
    assert "calculator_large" not in DEFAULT_MIX and build_skill("calculator_large").uses_tools


def test_crawl_qa_answers_with_a_sentence_of_the_search_result_it_read():
    skill = build_skill("crawl_qa", PAGES)
    assert skill.available and skill.uses_tools
    for ex in skill.examples(5, seed=0):
        call, result, final = ex.turns
        assert call["tool_calls"][0]["function"] == {"name": "search", "arguments": {"query": ex.details["topic"]}}
        assert result["role"] == "tool" and final["content"] in result["content"] and final["content"] == ex.answer
        assert ex.details["url"] in result["content"]
