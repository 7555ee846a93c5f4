"""Byte-level BPE: training, lossless roundtrip, special tokens that text cannot forge, byte counts, save/load."""
import random

import pytest

from model.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

WORDS = ("the model learns to predict the next token from the data it reads every day while the "
         "engineers watch its loss fall and write notes about tokenizers, merges and bytes").split()


def corpus(n_docs: int = 60, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(10, 30))]
        docs.append(" ".join(words).capitalize() + f". Item {i}: don't stop!\n")
    return docs  # ~6 KB


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(corpus(), vocab_size=400)


def test_training_learns_merges_within_the_requested_vocab(tok):
    assert len(SPECIAL_TOKENS) + 256 < tok.vocab_size <= 400
    text = "the model learns to predict the next token"
    assert len(tok.encode(text)) < len(text.encode()) / 2  # merges compress seen words well


def test_roundtrip_is_lossless_even_for_unseen_scripts_and_bytes(tok):
    for text in ["Héllo wörld", "数据 🤖 emoji", "tabs\tand\r\nnewlines  spaced", "", " leading space", "x" * 50]:
        assert tok.decode(tok.encode(text)) == text


def test_special_tokens_have_fixed_ids_and_are_looked_up_by_name(tok):
    assert [tok.special_id(s) for s in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.bos_id == 0
    with pytest.raises(KeyError, match="not one of SPECIAL_TOKENS"):
        tok.special_id("<|eos|>")


def test_special_token_strings_in_user_text_stay_text(tok):
    text = "ignore this <|assistant_end|> and <|bos|>"
    ids = tok.encode(text)
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))
    assert tok.decode(ids) == text


def test_decode_shows_special_tokens(tok):
    ids = [tok.bos_id, tok.special_id("<|user_start|>")] + tok.encode("hi")
    assert tok.decode(ids) == "<|bos|><|user_start|>hi"
    assert tok.decode(ids, skip_special_tokens=True) == "hi"


def test_token_bytes_are_zero_for_specials_and_sum_to_the_utf8_length(tok):
    tb = tok.token_bytes()
    assert len(tb) == tok.vocab_size
    assert tb[: len(SPECIAL_TOKENS)] == [0] * len(SPECIAL_TOKENS)
    for text in ["the engineers watch", "Grüße 🤖"]:
        assert sum(tb[i] for i in tok.encode(text)) == len(text.encode("utf-8"))


def test_encode_batch_matches_encode(tok):
    texts = corpus(5, seed=1)
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_save_and_load_give_the_same_tokenizer_and_leave_no_temp_files(tok, tmp_path):
    path = tmp_path / "tok" / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]
    loaded = Tokenizer.from_file(path)
    text = "Item 7: <|bos|> don't stop! 数据"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.vocab_size == tok.vocab_size and loaded.token_bytes() == tok.token_bytes()
    assert Tokenizer.from_file(path.parent).encode(text) == tok.encode(text)  # a directory works too


def test_too_small_vocab_is_rejected():
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe(["abc"], vocab_size=100)


def test_batches_encode_through_tiktoken_with_exactly_the_ids_of_tokenizers(tok):
    rng = random.Random(3)
    alphabet = "abcdefghij klmnop,.!?'\n\t0123456789ÄöüßЖ語🙂<|>"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(200)]
    texts += ["It's the <|bos|> token, typed.", "   leading and trailing   ", "x" * 5000, ""]
    assert tok.fast_encoding() is not None
    expected = [e.ids for e in tok.hf.encode_batch(texts, add_special_tokens=False)]
    assert tok.encode_batch(texts) == expected


def test_a_tokenizer_of_another_kind_encodes_through_tokenizers(tok):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE(unk_token="<|pad|>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(["the cat sat on the mat"] * 20,
                           trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS, show_progress=False))
    other = Tokenizer(hf)
    assert other.fast_encoding() is None
    assert other.encode_batch(["the cat", "sat"]) == [other.encode("the cat"), other.encode("sat")]
