"""Byte-level BPE: GPT-4's split, training (up to 100k+ vocabularies), lossless roundtrip, special tokens that text
cannot forge, byte counts, save/load, the tiktoken fast path."""
import json
import random
from unittest import mock

import numpy as np
import pytest
import regex

from model.tokenizer import _LEGACY_SPLIT_PATTERN, SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer, _unicode_to_byte, train_bpe

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
    texts += ["It's the <|bos|> token, typed.", "   leading and trailing   ", "x" * 5000, "", "ends a line\n  "]
    assert tok.fast_encoding() is not None
    expected = [e.ids for e in tok.hf.encode_batch(texts, add_special_tokens=False)]
    assert tok.encode_batch(texts) == expected


def test_encode_arrays_gives_the_ids_of_encode_batch_as_uint32_on_any_number_of_threads(tok):
    texts = corpus(20, seed=4) + ["It's the <|bos|> token, typed.", "", "ends a line\n  ", "数据 🤖"]
    expected = tok.encode_batch(texts)
    for threads in (1, 3):
        arrays = tok.encode_arrays(texts, num_threads=threads)
        assert all(a.dtype == np.uint32 for a in arrays)
        assert [a.tolist() for a in arrays] == expected


def test_a_tokenizer_of_another_kind_encodes_through_tokenizers(tok):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE(unk_token="<|pad|>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.train_from_iterator(["the cat sat on the mat"] * 20,
                           trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS, show_progress=False))
    other = Tokenizer(hf)
    assert other.fast_encoding() is None
    expected = [other.encode("the cat"), other.encode("sat")]
    assert other.encode_batch(["the cat", "sat"]) == expected
    assert [a.tolist() for a in other.encode_arrays(["the cat", "sat"])] == expected


def cl100k_pattern() -> str:
    """GPT-4's split as the installed tiktoken ships it (its BPE file, a download, is not needed for the pattern)."""
    import tiktoken_ext.openai_public as openai_public

    with mock.patch.object(openai_public, "load_tiktoken_bpe", return_value={}):
        return openai_public.cl100k_base()["pat_str"]


TRICKY = [
    "Hello, world! It's 2024-11-23: 12345 items", "DON'T we'LL I'M they'Re you'VE he'D", "it’s curly, it'ſ long",
    "1234567 89 0.5 $100,000.00", "   1", "x'", "'", " 's 'S", "...!!!\n\n?", "\t\tdef f(x):\n\t\treturn x**2",
    "a\r\nb\r\n\r\n", "  \n\n  x", "x  \n  y", "trailing   ", "ends a line\n  ", "\n", " ", "", "a  b   c",
    "東京は晴れ。カタカナ", "emoji 🙂🙂 ok", "ünïcödé Ελληνικά русский", "\u00a0nbsp\u2003em\u2028ls\x85nel",
    "a\u0301 combining \u200bzero \ufeffbom", "\x00\x01\x1c ctrl\x0b\x0c", "<|bos|><|pad|>",
]


def test_pre_tokenization_is_gpt4s_cl100k_split(tok):
    to_byte = _unicode_to_byte()
    pattern = cl100k_pattern()
    rng = random.Random(0)
    alphabet = "abXYsSdtT 09 \t\n\r'’.,!?-_(ÄöЖ語🙂\u00a0\u2003\x1c\x85\u2028\ufeffſ\x0b"
    texts = TRICKY + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    for text in texts:
        split = tok.hf.pre_tokenizer.pre_tokenize_str(text)  # byte-level pieces: one character per byte
        pieces = [bytes(to_byte[ch] for ch in piece).decode() for piece, _ in split]
        assert pieces == regex.findall(pattern, text), repr(text)


def test_the_fast_path_splits_like_tiktokens_cl100k(tok):
    import tiktoken

    cl100k = tiktoken.Encoding("cl100k-split", pat_str=cl100k_pattern(),
                               mergeable_ranks=tok.fast_encoding()._mergeable_ranks, special_tokens={})
    assert tok.fast_encoding().name == "factory" and SPLIT_PATTERN != cl100k._pat_str  # our spelling, ~1.4x faster
    assert [tok.fast_encoding().encode_ordinary(t) for t in TRICKY] == [cl100k.encode_ordinary(t) for t in TRICKY]


def test_a_100k_vocab_trains_with_specials_first_and_encodes_through_tiktoken():
    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(6, 11)))
                    for _ in range(36_000)})
    texts = [" ".join(words[i:i + 50]) for i in range(0, len(words), 50)]
    big = train_bpe(texts, vocab_size=100_000, min_frequency=1)
    assert big.vocab_size == 100_000
    assert [big.special_id(s) for s in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert big.fast_encoding() is not None
    sample = texts[:20] + ["unseen words, Ünïcode and 🙂"]
    assert big.encode_batch(sample) == [e.ids for e in big.hf.encode_batch(sample, add_special_tokens=False)]
    assert max(i for ids in big.encode_batch(texts[-20:]) for i in ids) >= 65_536


def test_a_tokenizer_trained_with_the_older_split_keeps_the_fast_path(tok):
    spec = json.loads(tok.hf.to_str())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = _LEGACY_SPLIT_PATTERN
    from tokenizers import Tokenizer as HFTokenizer

    old = Tokenizer(HFTokenizer.from_str(json.dumps(spec)))
    assert old.fast_encoding() is not None
    texts = TRICKY + corpus(5, seed=2)
    assert old.encode_batch(texts) == [e.ids for e in old.hf.encode_batch(texts, add_special_tokens=False)]
    split = [piece for piece, _ in old.hf.pre_tokenizer.pre_tokenize_str("line\n  ")]
    assert split == ["line", "Ċ", "ĠĠ"]  # where the two splits differ: cl100k keeps "\n  " whole at the end
