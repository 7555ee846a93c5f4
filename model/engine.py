"""Sampling: prefill the prompt once into a KV cache, then one token per step; Engine adds text and chat on top."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from model.chat import render_prompt
from model.gpt import GPT
from model.tokenizer import Tokenizer


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> int:
    """One token id from a [vocab] logits row: argmax at temperature 0, else softmax(logits/T) over the top_k."""
    if temperature <= 0.0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate_stream(model: GPT, ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                    top_k: int | None = None, stop_ids: Iterable[int] = (), seed: int | None = None) -> Iterator[int]:
    """Yield new token ids one by one (the stop token is not yielded). The context is cropped to config.seq_len."""
    if not ids:
        raise ValueError("generate: ids is empty; start with at least <|bos|>")
    seq_len = model.config.seq_len
    device = next(model.parameters()).device
    stop = set(stop_ids)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        ids = list(ids)
        cache = model.new_kv_cache()
        logits, _ = model(torch.tensor([ids[-seq_len:]], device=device), kv_cache=cache)
        for i in range(max_new_tokens):
            token = sample_next(logits[0, -1], temperature, top_k, generator)
            if token in stop:
                return
            yield token
            ids.append(token)
            if i == max_new_tokens - 1:
                return
            if cache.pos < seq_len:
                logits, _ = model(torch.tensor([[token]], device=device), kv_cache=cache)
            else:
                # The window is full: keeping the cache would need shifted rotary positions, so recompute the cropped
                # window from scratch (exactly what a model without a cache sees).
                logits, _ = model(torch.tensor([ids[-seq_len:]], device=device))
    finally:
        model.train(was_training)


@torch.no_grad()
def generate(model: GPT, ids: list[int], max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
             stop_ids: Iterable[int] = (), seed: int | None = None) -> list[int]:
    """The NEW token ids only (stop token excluded). temperature 0 = greedy."""
    return list(generate_stream(model, ids, max_new_tokens, temperature, top_k, stop_ids, seed))


class Engine:
    """Text in, text out, for a model and its tokenizer."""

    def __init__(self, model: GPT, tokenizer: Tokenizer):
        self.model = model
        self.tok = tokenizer

    def complete(self, text: str, max_new_tokens: int = 64, temperature: float = 0.0, seed: int | None = None,
                 top_k: int | None = None) -> str:
        """Continue `text` as a document (prefixed with <|bos|>); a new <|bos|> ends it."""
        ids = [self.tok.bos_id] + self.tok.encode(text)
        new = generate(self.model, ids, max_new_tokens, temperature, top_k, [self.tok.bos_id], seed)
        return self.tok.decode(new)

    def _chat_stop_ids(self) -> list[int]:
        return [self.tok.special_id("<|assistant_end|>"), self.tok.bos_id]

    def chat(self, messages: list[dict[str, Any]], max_new_tokens: int = 128, temperature: float = 0.0,
             seed: int | None = None, top_k: int | None = None) -> str:
        """The assistant's reply to `messages` (last one from the user), up to <|assistant_end|>."""
        ids = render_prompt(self.tok, messages)
        new = generate(self.model, ids, max_new_tokens, temperature, top_k, self._chat_stop_ids(), seed)
        return self.tok.decode(new)

    def stream_chat(self, messages: list[dict[str, Any]], max_new_tokens: int = 128, temperature: float = 0.0,
                    seed: int | None = None, top_k: int | None = None) -> Iterator[str]:
        """Like chat, but yields text pieces as they are sampled (a piece is held back while it ends mid-character)."""
        ids = render_prompt(self.tok, messages)
        new: list[int] = []
        shown = ""
        for token in generate_stream(self.model, ids, max_new_tokens, temperature, top_k,
                                     self._chat_stop_ids(), seed):
            new.append(token)
            text = self.tok.decode(new)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 sequence; wait for the next token
            if len(text) > len(shown):
                yield text[len(shown):]
            shown = text
        text = self.tok.decode(new)
        if len(text) > len(shown):
            yield text[len(shown):]
