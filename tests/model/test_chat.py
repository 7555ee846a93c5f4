"""The chat format: the loss mask covers exactly the assistant's tokens, prompts end ready for the assistant, one rule
set validates messages, and the Jinja chat template renders the same token ids."""
import json

import pytest
from tokenizers import Tokenizer as HFTokenizer

from model.chat import (
    chat_template,
    conversation_problem,
    format_transcript,
    messages_problem,
    render_conversation,
    render_prompt,
)
from model.tokenizer import train_bpe

TEXTS = ["You are a helpful assistant. What is the capital of France? The capital of France is Paris.",
         "Call the weather tool for Paris. It is sunny and 21 degrees in Paris today."] * 20


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS, vocab_size=350)


CONVO = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "Weather there?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "sunny, 21 degrees"},
    {"role": "assistant", "content": "It is sunny and 21 degrees in Paris."},
]


def test_mask_covers_exactly_the_assistant_content_tool_calls_and_end_tokens(tok):
    ids, mask = render_conversation(tok, CONVO, max_len=10_000)
    assert len(ids) == len(mask) and ids[0] == tok.bos_id and mask[0] == 0
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == ("The capital of France is Paris.<|assistant_end|>"
                       '<|tool_call_start|>{"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'
                       "<|tool_call_end|><|assistant_end|>"
                       "It is sunny and 21 degrees in Paris.<|assistant_end|>")
    not_trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "capital of France?" in not_trained and "sunny, 21 degrees" in not_trained
    assert "<|assistant_start|>" in not_trained and "<|assistant_end|>" not in not_trained


def test_turns_are_wrapped_in_their_role_specials(tok):
    ids, _ = render_conversation(tok, CONVO[:3], max_len=10_000)
    assert tok.decode(ids) == ("<|bos|><|system_start|>You are a helpful assistant.<|system_end|>"
                               "<|user_start|>What is the capital of France?<|user_end|>"
                               "<|assistant_start|>The capital of France is Paris.<|assistant_end|>")


def test_conversation_is_truncated_to_max_len(tok):
    full, full_mask = render_conversation(tok, CONVO, max_len=10_000)
    ids, mask = render_conversation(tok, CONVO, max_len=12)
    assert ids == full[:12] and mask == full_mask[:12]


def test_prompt_ends_with_assistant_start_and_matches_the_training_prefix(tok):
    prompt = render_prompt(tok, CONVO[:2])
    assert prompt[-1] == tok.special_id("<|assistant_start|>")
    ids, _ = render_conversation(tok, CONVO[:3], max_len=10_000)
    assert ids[: len(prompt)] == prompt  # generation starts exactly where training put the reply
    with pytest.raises(ValueError, match="last message must be from the user"):
        render_prompt(tok, CONVO[:3])


def test_malformed_messages_are_rejected_with_their_index(tok):
    with pytest.raises(ValueError, match=r"messages\[1\]: role 'bot' is not one of system/user/assistant/tool"):
        render_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], 100)
    with pytest.raises(ValueError, match=r"messages\[1\]: 'system' is only allowed as the first message"):
        render_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}], 100)
    with pytest.raises(ValueError, match=r"messages\[0\]: 'content' must be a string"):
        render_conversation(tok, [{"role": "user", "content": 3}], 100)
    with pytest.raises(ValueError, match=r"messages\[0\]: 'content' is missing"):
        render_prompt(tok, [{"role": "user"}])


def test_rendering_and_label_validation_share_one_rule_set(tok):
    bad = [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]
    reason = messages_problem(bad)
    assert conversation_problem(bad) == reason
    with pytest.raises(ValueError) as raised:
        render_conversation(tok, bad, 100)
    assert str(raised.value) == reason


@pytest.mark.parametrize("messages, reason", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "messages[1]: roles must alternate user/assistant ('user' after 'user')"),
    ([{"role": "assistant", "content": "hello"}],
     "messages[0]: a conversation must start with a user turn, got 'assistant'"),
    ([{"role": "user", "content": " "}, {"role": "assistant", "content": "c"}], "messages[0]: empty content"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}],
     "messages[1]: a 'tool' message must follow an assistant message, not 'user'"),
    ([{"role": "user", "content": "a"}], "'messages' must end with an assistant turn"),
])
def test_a_conversation_to_train_on_also_follows_the_turn_rules(tok, messages, reason):
    assert conversation_problem(messages) == reason
    # a live chat is only held to what rendering needs: the same turns still render
    if messages[0]["role"] == "user" and messages[-1]["role"] in ("user", "tool"):
        assert render_prompt(tok, messages)[-1] == tok.special_id("<|assistant_start|>")


def _jinja_render(messages: list[dict], add_generation_prompt: bool) -> str:
    """The template rendered as transformers renders chat templates: a sandbox, trimmed blocks, its tojson."""
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(chat_template()).render(messages=messages, add_generation_prompt=add_generation_prompt)


def _ids_of_text(tok, text: str) -> list[int]:
    """Token ids of rendered template text, its special-token strings read as the special tokens (as transformers
    does; our own encode keeps them as text on purpose)."""
    hf = HFTokenizer.from_str(tok.hf.to_str())
    hf.encode_special_tokens = False
    return hf.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("messages", [
    CONVO[1:3],
    CONVO,
    [{"role": "user", "content": "über 2 + 2?"}, {"role": "assistant", "content": None, "tool_calls": "calc(2+2)"},
     {"role": "tool", "content": "4"}, {"role": "assistant", "content": "It is 4."}],
])
def test_the_jinja_chat_template_gives_the_ids_our_renderer_gives(tok, messages):
    ids, _ = render_conversation(tok, messages, max_len=10_000)
    assert _ids_of_text(tok, _jinja_render(messages, add_generation_prompt=False)) == ids
    prompt = messages[:-1]  # every case ends with an assistant turn after a user or tool turn
    assert _ids_of_text(tok, _jinja_render(prompt, add_generation_prompt=True)) == render_prompt(tok, prompt)


def test_the_jinja_chat_template_refuses_what_the_renderer_refuses():
    jinja2 = pytest.importorskip("jinja2")
    with pytest.raises(jinja2.exceptions.TemplateError, match=r"messages\[1\]: role bot is not one of"):
        _jinja_render([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], True)


def test_transcript_is_plain_readable_text():
    text = format_transcript(CONVO[1:3] + [CONVO[4]])
    assert text == ("User: What is the capital of France?\n\nAssistant: The capital of France is Paris.\n\n"
                    'Assistant:\n[tool call] {"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}')
