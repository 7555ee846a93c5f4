"""SFT batches grouped by length: the same index gives the same batch, batches mixing short and long conversations
are padded far less than random ones, and every conversation is drawn as often as before."""

import pytest
import torch

from model.sft import ConversationBatches
from model.tokenizer import train_bpe

SHORT = [[{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}] for i in range(50)]
LONG = [[{"role": "user", "content": f"tell me a story {i}"},
         {"role": "assistant", "content": "once upon a time there was a fox " * 12}] for i in range(50)]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(["hi hello tell me a story once upon a time there was a fox 0123456789"] * 20, vocab_size=300)


def widths(batches, n):
    return [batches(i)[0].shape[1] for i in range(n)]


def test_the_same_index_gives_the_same_batch(tok):
    batches = ConversationBatches(SHORT + LONG, tok, 8, 256, seed=3)
    for i in (0, 5, 40):
        assert all(torch.equal(a, b) for a, b in zip(batches(i), batches(i), strict=True))


def test_grouped_batches_are_padded_far_less_than_random_ones(tok):
    grouped = ConversationBatches(SHORT + LONG, tok, 8, 256, group=16)
    random_ = ConversationBatches(SHORT + LONG, tok, 8, 256, group=1)
    short = max(len(ids) for ids, _ in grouped.rows[:50]) - 1
    # random batches of 8 almost always hold a long conversation; grouped ones are mostly all short or all long
    assert sum(w <= short for w in widths(random_, 160)) <= 5
    assert sum(w <= short for w in widths(grouped, 160)) >= 60
    assert sum(widths(grouped, 160)) < 0.75 * sum(widths(random_, 160))


def test_every_conversation_is_drawn_about_as_often(tok):
    batches = ConversationBatches(SHORT + LONG, tok, 8, 256, group=16)
    long_width = max(len(ids) for ids, _ in batches.rows[50:]) - 1
    long_rows = sum(int((batches(i)[2].sum(dim=1) > 20).sum()) for i in range(320))
    assert 0.45 < long_rows / (320 * 8) < 0.55
    assert long_width > 60


def test_a_group_below_one_is_refused(tok):
    with pytest.raises(ValueError, match="group must be >= 1"):
        ConversationBatches(SHORT, tok, 8, 256, group=0)
