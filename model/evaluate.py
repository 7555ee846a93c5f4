"""Model-level metrics: mean loss, bits per byte (tokenizer-independent), multiple-choice log-probabilities, and
an assistant's answers to eval items scored by their skills' checks."""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.chat.skills import check
from model.chat import render_prompt
from model.checkpoint import load_model
from model.engine import Engine, ToolUse, answer_batch
from model.gpt import GPT
from model.identity import IdentityConfig, with_system_message
from model.tokenizer import Tokenizer
from model.tools import Toolbox


def _inputs_targets(batch: Sequence[torch.Tensor | None], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) or (x, y, mask) on `device`; mask == 0 positions become ignored targets (-1)."""
    if len(batch) not in (2, 3):
        raise ValueError(f"a batch must be (x, y) or (x, y, mask), got {len(batch)} items")
    x, y = batch[0].to(device), batch[1].to(device)
    mask = batch[2] if len(batch) == 3 else None
    if mask is not None:
        y = y.masked_fill(mask.to(device) == 0, -1)
    return x, y


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def mean_loss(model: GPT, batches: Iterable[Sequence[torch.Tensor | None]]) -> float:
    """Mean cross-entropy (nats) per counted target token over all batches (not a mean of batch means)."""
    was_training = model.training
    model.eval()
    device = _device(model)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    for batch in batches:
        x, y = _inputs_targets(batch, device)
        _, loss = model(x, y)
        n = (y != -1).sum()
        total += loss.double() * n
        count += n
    model.train(was_training)
    if int(count) == 0:
        raise ValueError("mean_loss: the batches hold no target tokens")
    return float(total / count)


@torch.no_grad()
def bits_per_byte(model: GPT, batches: Iterable[Sequence[torch.Tensor | None]], token_bytes: torch.Tensor) -> float:
    """Sum of CE nats over targets / (ln 2 * sum of their UTF-8 bytes). Targets with 0 bytes (special tokens) and
    ignored targets (-1) are left out of both sums, so the number compares across tokenizers."""
    was_training = model.training
    model.eval()
    device = _device(model)
    token_bytes = torch.as_tensor(token_bytes, device=device)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    for batch in batches:
        x, y = _inputs_targets(batch, device)
        logits, _ = model(x)
        ce = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1), ignore_index=-1, reduction="none")
        b = torch.where(y.view(-1) >= 0, token_bytes[y.view(-1).clamp(min=0)], 0)
        counted = b > 0
        nats += ce[counted].double().sum()
        nbytes += b[counted].sum()
    model.train(was_training)
    if int(nbytes) == 0:
        raise ValueError("bits_per_byte: the batches hold no target bytes")
    return float(nats / (math.log(2) * nbytes))


@torch.no_grad()
def choice_logprobs(model: GPT, tok: Tokenizer, context: str, choices: list[str]) -> list[float]:
    """Sum log-prob of each continuation's tokens given <|bos|> + context; the argmax is the model's pick.

    The context is encoded once and each choice separately, so every choice is scored after the same prefix
    (write choices with their leading space, e.g. " Paris")."""
    was_training = model.training
    model.eval()
    device = _device(model)
    prefix = [tok.bos_id] + tok.encode(context)
    seq_len = model.config.seq_len
    scores = []
    for choice in choices:
        cont = tok.encode(choice)
        if not cont:
            raise ValueError(f"choice_logprobs: choice {choice!r} encodes to no tokens")
        ids = (prefix + cont)[-(seq_len + 1):]  # keep the end: the continuation must fit
        if len(cont) >= len(ids):
            raise ValueError(f"choice_logprobs: choice {choice!r} is longer than seq_len={seq_len}")
        x = torch.tensor([ids[:-1]], device=device)
        logits, _ = model(x)
        logp = torch.log_softmax(logits[0, -len(cont):].float(), dim=-1)
        target = torch.tensor(cont, device=device)
        scores.append(float(logp.gather(1, target[:, None]).sum()))
    model.train(was_training)
    return scores


def load_assistant(model_dir: str | os.PathLike, device: str | torch.device | None = None) -> tuple[GPT, Tokenizer]:
    """A model directory (model.safetensors, config.json, tokenizer.json) loaded for inference, on the GPU when
    there is one. Who it was trained to be (its system message) is `model.identity.load_identity(model_dir)`."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(model_dir, device=device).eval()
    return model, Tokenizer.from_file(Path(model_dir) / "tokenizer.json")


def answer_conversations(
    model: GPT, tok: Tokenizer, conversations: list[list[dict]], max_new_tokens: int,
    system: IdentityConfig | None = None, tools: Toolbox | None = None,
) -> list[ToolUse]:
    """Greedy answers to conversations that end with a user turn (or a tool result), each with its tool calls run.

    `system`: an identity whose system message goes first in each conversation that has none, whatever its
    at_inference says (the caller decides); `tools`: the toolbox the answers may call; `max_new_tokens` bounds what
    the model writes in all (calls included)."""
    asked = [with_system_message(messages, system, always=True) for messages in conversations]
    prompts = [render_prompt(tok, messages) for messages in asked]
    # Batched (greedy answers are the same batched or alone), except a prompt that leaves the answer less than
    # max_new_tokens of context: the single-sequence engine slides the window over it, as a chat would.
    fits = [len(p) + max_new_tokens <= model.config.seq_len for p in prompts]
    batched = iter(answer_batch(model, tok, [p for p, ok in zip(prompts, fits, strict=True) if ok], max_new_tokens,
                                tools))
    engine = Engine(model, tok)
    return [next(batched) if ok else engine.answer(messages, max_new_tokens=max_new_tokens, tools=tools)
            for messages, ok in zip(asked, fits, strict=True)]


def run_items(
    model: GPT, tok: Tokenizer, items: list[dict], max_new_tokens: int, system: IdentityConfig | None = None,
    tools: Toolbox | None = None,
) -> tuple[list[dict], dict[str, float]]:
    """Answer every eval item greedily (answer_conversations) and check the answer by its skill; returns (each item
    with "response" and "correct", {"score.<skill>": accuracy} in the order the skills first appear). The results
    keep the items' own messages; with `tools` each holds its "calls"; the response is the text after the last tool
    result."""
    uses = answer_conversations(model, tok, [item["messages"] for item in items], max_new_tokens, system, tools)
    results = []
    for item, use in zip(items, uses, strict=True):
        result = {**item, "response": use.text, "correct": check(item, use.text)}
        if tools is not None:
            result["calls"] = use.calls
        results.append(result)
    scores = {}
    for skill in dict.fromkeys(r["skill"] for r in results):
        done = [r for r in results if r["skill"] == skill]
        scores[f"score.{skill}"] = round(sum(r["correct"] for r in done) / len(done), 3)
    return results, scores


def unigram_bpb(train: np.ndarray, val: np.ndarray, token_bytes: np.ndarray) -> float:
    """Bits per byte of a model that knows only token frequencies (add-one smoothed): the bar to clear."""
    counts = np.bincount(train, minlength=len(token_bytes)).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    scored = val[token_bytes[val] > 0]  # specials (bos) carry no bytes, as in bits_per_byte
    return float(-logp[scored].sum() / token_bytes[scored].sum())
