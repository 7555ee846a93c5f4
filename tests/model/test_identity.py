"""The assistant's identity: its system message (added to a conversation that has none, never over its own), the
config's checks, assistant.json beside a model's weights, and eval items answered with and without the message."""

import json

import pytest
from pydantic import ValidationError

from model.identity import (
    IDENTITY_FILE,
    IdentityConfig,
    copy_identity,
    load_identity,
    save_identity,
    with_system_message,
)
from tests.models import make_model_dir

ADA = IdentityConfig(name="Ada", maker="Acme Labs")
ASK = [{"role": "user", "content": "Who are you?"}]


def test_the_system_message_states_the_name_and_maker():
    assert ADA.system_text() == "You are Ada, a small assistant model made by Acme Labs."


def test_a_conversation_without_a_system_message_gets_the_identitys_first():
    assert with_system_message(ASK, ADA) == [{"role": "system", "content": ADA.system_text()}, *ASK]


def test_a_conversation_keeps_its_own_system_message():
    own = [{"role": "system", "content": "Answer in French."}, *ASK]
    assert with_system_message(own, ADA) == own
    assert with_system_message(own, ADA, always=True) == own


def test_no_identity_or_at_inference_off_adds_nothing_unless_always():
    quiet = ADA.model_copy(update={"at_inference": False})
    assert with_system_message(ASK, None) == ASK
    assert with_system_message(ASK, quiet) == ASK
    assert with_system_message(ASK, quiet, always=True)[0] == {"role": "system", "content": ADA.system_text()}


def test_a_system_message_with_an_unknown_placeholder_is_refused_naming_it():
    with pytest.raises(ValidationError, match=r"identity.system_message 'You are \{nmae\}\.'"):
        IdentityConfig(system_message="You are {nmae}.")
    assert IdentityConfig(system_message="You are {name} {{the bot}}.").system_text() == "You are Factory {the bot}."


def test_the_data_key_follows_what_training_data_depends_on_and_not_at_inference():
    assert ADA.data_key() == IdentityConfig(name="Ada", maker="Acme Labs").data_key()
    assert ADA.data_key() == ADA.model_copy(update={"at_inference": False}).data_key()
    for change in ({"name": "Bea"}, {"maker": "Zeta"}, {"train_fraction": 0.5}, {"system_message": "I am {name}."}):
        assert ADA.model_copy(update=change).data_key() != ADA.data_key(), change


def test_system_indices_are_the_train_fraction_and_deterministic_in_the_seed():
    picked = ADA.model_copy(update={"train_fraction": 0.3}).system_indices(200, seed=1)
    assert len(picked) == 60 and picked <= set(range(200))
    assert picked == ADA.model_copy(update={"train_fraction": 0.3}).system_indices(200, seed=1)
    assert picked != ADA.model_copy(update={"train_fraction": 0.3}).system_indices(200, seed=2)
    assert ADA.model_copy(update={"train_fraction": 0.0}).system_indices(200, seed=1) == set()


def test_assistant_json_round_trips_and_a_model_without_one_has_none(tmp_path):
    save_identity(ADA, tmp_path)
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["name"] == "Ada"
    assert load_identity(tmp_path) == ADA
    assert load_identity(tmp_path / "elsewhere") is None


def test_a_broken_assistant_json_is_named_in_the_error(tmp_path):
    (tmp_path / IDENTITY_FILE).write_text('{"name": ""}')
    with pytest.raises(ValueError, match=rf"{IDENTITY_FILE}: not an assistant identity"):
        load_identity(tmp_path)


def test_copy_identity_carries_assistant_json_to_the_next_model_and_nothing_when_there_is_none(tmp_path):
    save_identity(ADA, tmp_path / "sft")
    assert copy_identity(tmp_path / "sft", tmp_path / "dpo") == ADA
    assert (tmp_path / "dpo" / IDENTITY_FILE).read_bytes() == (tmp_path / "sft" / IDENTITY_FILE).read_bytes()
    assert copy_identity(tmp_path / "imported", tmp_path / "rl") is None
    assert not (tmp_path / "rl" / IDENTITY_FILE).exists()


@pytest.mark.usefixtures("one_thread")
def test_run_items_with_the_system_message_answers_as_if_the_items_began_with_it(tmp_path):
    from model.evaluate import load_assistant, run_items

    model, tok = load_assistant(make_model_dir(tmp_path), device="cpu")
    items = [{"id": str(i), "skill": "identity", "reference": "Ada", "messages": [{"role": "user", "content": q}]}
             for i, q in enumerate(["Who are you?", "What is your name?", "Who made you?"])]
    system = {"role": "system", "content": ADA.system_text()}
    prefixed = [{**it, "messages": [system, *it["messages"]]} for it in items]

    plain, _ = run_items(model, tok, items, max_new_tokens=8)
    with_system, _ = run_items(model, tok, items, max_new_tokens=8, system=ADA)
    explicit, _ = run_items(model, tok, prefixed, max_new_tokens=8)
    assert [r["response"] for r in with_system] == [r["response"] for r in explicit]
    assert [r["response"] for r in with_system] != [r["response"] for r in plain]
    assert [r["messages"] for r in with_system] == [it["messages"] for it in items]  # results keep the items' own


@pytest.mark.usefixtures("one_thread")
def test_run_items_leaves_an_items_own_system_message_alone(tmp_path):
    from model.evaluate import load_assistant, run_items

    model, tok = load_assistant(make_model_dir(tmp_path), device="cpu")
    own = [{"id": "a", "skill": "identity", "reference": "Ada",
            "messages": [{"role": "system", "content": "Answer briefly."}, *ASK]}]
    with_system, _ = run_items(model, tok, own, max_new_tokens=8, system=ADA)
    plain, _ = run_items(model, tok, own, max_new_tokens=8)
    assert with_system[0]["response"] == plain[0]["response"]


def test_a_served_chat_gets_the_identity_only_when_it_is_used_at_inference():
    from model.identity import served

    assert served(IdentityConfig()) == IdentityConfig()
    assert served(IdentityConfig(at_inference=False)) is None
    assert served(None) is None
