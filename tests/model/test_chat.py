"""Chat rendering: the loss mask covers exactly the assistant's tokens; prompts end ready for the assistant."""
import pytest

from model.chat import format_transcript, render_conversation, render_prompt
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
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "sunny, 21 degrees"},
    {"role": "assistant", "content": "It is sunny and 21 degrees in Paris."},
]


def test_mask_covers_exactly_the_assistant_content_tool_calls_and_end_tokens(tok):
    ids, mask = render_conversation(tok, CONVO, max_len=10_000)
    assert len(ids) == len(mask) and ids[0] == tok.bos_id and mask[0] == 0
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == ("The capital of France is Paris.<|assistant_end|>"
                       '<|tool_call_start|>{"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'
                       "<|tool_call_end|><|assistant_end|>"
                       "It is sunny and 21 degrees in Paris.<|assistant_end|>")
    not_trained = tok.decode([i for i, m in zip(ids, mask) if not m])
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
    with pytest.raises(ValueError, match=r"messages\[1\]: role must be one of"):
        render_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], 100)
    with pytest.raises(ValueError, match=r"messages\[1\]: a 'system' message may only come first"):
        render_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}], 100)
    with pytest.raises(ValueError, match=r"messages\[0\]: 'content' must be a string"):
        render_conversation(tok, [{"role": "user", "content": 3}], 100)


def test_transcript_is_plain_readable_text():
    text = format_transcript(CONVO[1:3] + [CONVO[4]])
    assert text == ("User: What is the capital of France?\n\nAssistant: The capital of France is Paris.\n\n"
                    'Assistant:\n[tool call] {"name": "weather", "arguments": "{\\"city\\": \\"Paris\\"}"}')
