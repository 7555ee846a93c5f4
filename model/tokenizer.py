"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) with the chat special tokens, plus a thin wrapper."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from model.files import atomic_write_text, cpu_count

SPECIAL_TOKENS: list[str] = [
    "<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
    "<|system_start|>", "<|system_end|>", "<|tool_call_start|>", "<|tool_call_end|>", "<|tool_result_start|>",
    "<|tool_result_end|>", "<|pad|>",
]

# GPT-4's split (tiktoken's cl100k_base): contractions, words, 1-3 digit groups, punctuation runs, newlines and
# whitespace are separate pre-tokens, so merges never cross those boundaries. tiktoken now writes it with possessive
# quantifiers and `$`; this spelling splits every text the same way (tests/model/test_tokenizer.py checks it against
# tiktoken's own) and means the same in both engines we run it on: Oniguruma (`tokenizers`, where `{1,3}+` would
# repeat the group and `$` ends a line) and tiktoken's, where it also runs ~1.4x faster than the possessive text.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s+\z|\s*[\r\n]+|\s+(?!\S)|\s+")
# The split of tokenizers trained before (Llama 3's copy of the older cl100k text, without `\s+\z`: whitespace after a
# newline at the very end of a text splits after the newline); they still encode through tiktoken.
_LEGACY_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable character byte-level BPE uses for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _pre_tokenizer(pattern: str = SPLIT_PATTERN) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on `texts`, split GPT-4's way. Ids 0..11 are SPECIAL_TOKENS, then the 256 byte tokens,
    then merges, so any string is encodable. Any vocab_size works (100k+ too: token shards switch to uint32 past
    65,536); the result may be smaller when the corpus runs out of merges."""
    floor = len(SPECIAL_TOKENS) + 256
    if vocab_size < floor:
        raise ValueError(f"train_bpe: vocab_size={vocab_size} must be >= {floor} (specials + 256 bytes)")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = _pre_tokenizer()
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(hf)


class Tokenizer:
    """Our view of a HF tokenizer: plain-text encode (specials never parsed from text), decode, special ids."""

    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        # Special-token strings typed inside user text must stay text: with this flag HF encodes them as ordinary
        # bytes instead of matching the added-token table. Special ids come only from special_id().
        self.hf.encode_special_tokens = True
        missing = [s for s in SPECIAL_TOKENS if hf.token_to_id(s) is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(HFTokenizer.from_file(str(path)))

    def save(self, path: str | os.PathLike) -> None:
        """Write tokenizer.json atomically (temp file in the same directory, then rename)."""
        atomic_write_text(path, self.hf.to_str(pretty=True))

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """Encode many texts on `num_threads` threads (0: all cores). Tokenizers we trained encode through tiktoken
        with the same merges (the same ids, ~4x faster than `tokenizers` here); any other kind through `tokenizers`
        (which uses every core whatever num_threads says)."""
        fast = self.fast_encoding()
        if fast is None:
            return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]
        num_threads = num_threads or cpu_count()
        if num_threads == 1:  # a worker process: no thread pool to start per batch
            return [fast.encode_ordinary(t) for t in texts]
        return fast.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def encode_arrays(self, texts: list[str], num_threads: int = 1) -> list[np.ndarray]:
        """encode_batch's ids as one uint32 array per text, on `num_threads` threads. Through tiktoken no Python int
        is made per token: ~1.25x the tokens/s of lists (what the tokenize workers use)."""
        fast = self.fast_encoding()
        if fast is None or not hasattr(fast, "encode_to_numpy"):  # tiktoken < 0.8
            return [np.asarray(ids, dtype=np.uint32) for ids in self.encode_batch(texts, num_threads)]

        def encode(text: str) -> np.ndarray:
            # Nothing allowed: a special token's text is ordinary text, exactly as encode_ordinary treats it.
            return fast.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

        if num_threads <= 1:
            return [encode(t) for t in texts]
        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(encode, texts))

    def fast_encoding(self):
        """A tiktoken Encoding equal to this tokenizer on ordinary text, or None (not our byte-level BPE with the
        GPT-4 split, tiktoken missing, or a probe text encoding differently)."""
        if not hasattr(self, "_fast"):
            self._fast = _tiktoken_encoding(self)
        return self._fast

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        return self.special_id("<|bos|>")

    @property
    def pad_id(self) -> int:
        return self.special_id("<|pad|>")

    def special_id(self, name: str) -> int:
        if name not in SPECIAL_TOKENS:
            raise KeyError(f"special_id: {name!r} is not one of SPECIAL_TOKENS")
        return self.hf.token_to_id(name)

    def token_bytes(self) -> list[int]:
        """UTF-8 byte length of each token id (0 for special tokens); the denominator of bits-per-byte."""
        to_byte = _unicode_to_byte()
        specials = set(SPECIAL_TOKENS)
        out = [0] * self.vocab_size
        for token, i in self.hf.get_vocab(with_added_tokens=True).items():
            out[i] = 0 if token in specials else sum(1 for ch in token if ch in to_byte)
        return out


# Exercises the split pattern's branches: contractions, letters across scripts, digit groups, punctuation runs,
# newlines, runs of spaces, a special token's text (ordinary text here), bytes outside the BMP and whitespace after
# a newline at the very end.
_PROBE = ("Hello, world! It's 2024-11-23: 12345 items, 3.14159... Ça va? Grüße aus Köln. 東京は晴れ。\n\n"
          "  def f(x):\n\treturn x**2  # <|bos|> emoji 🙂 ok\r\nTHE END   \n  ")


def _tiktoken_encoding(tok: Tokenizer):
    try:
        import tiktoken
    except ImportError:
        return None
    spec = json.loads(tok.hf.to_str())
    pattern = _tiktoken_patterns().get(json.dumps(spec.get("pre_tokenizer"), sort_keys=True))
    if spec.get("model", {}).get("type") != "BPE" or pattern is None:
        return None
    to_byte = _unicode_to_byte()
    added = {t["content"] for t in spec.get("added_tokens", [])}
    ranks = {}
    for token, i in spec["model"]["vocab"].items():
        if token in added:
            continue
        if any(ch not in to_byte for ch in token):
            return None
        ranks[bytes(to_byte[ch] for ch in token)] = i
    # BPE trained by `tokenizers` numbers merged tokens in merge order, so tiktoken's rank order is the merge order.
    # The specials are never matched in text (nothing encodes with them allowed); listing them keeps tiktoken's
    # search for allowed specials a literal one: with none it matches the empty string at every character, and
    # encode_to_numpy runs ~1.5x slower.
    specials = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    enc = tiktoken.Encoding("factory", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    expected = tok.hf.encode(_PROBE, add_special_tokens=False).ids
    if enc.encode_ordinary(_PROBE) != expected:
        return None
    if hasattr(enc, "encode_to_numpy") and enc.encode_to_numpy(_PROBE, disallowed_special=()).tolist() != expected:
        return None
    return enc


@lru_cache(maxsize=1)
def _tiktoken_patterns() -> dict[str, str]:
    """The pre-tokenizer JSON of each split we have trained with -> its pattern, which tiktoken reads as it is."""
    out = {}
    for pattern in (SPLIT_PATTERN, _LEGACY_SPLIT_PATTERN):
        ref = HFTokenizer(models.BPE())
        ref.pre_tokenizer = _pre_tokenizer(pattern)
        out[json.dumps(json.loads(ref.to_str())["pre_tokenizer"], sort_keys=True)] = pattern
    return out
