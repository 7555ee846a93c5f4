"""Learning from comparisons: a reward model trained with the pairwise (Bradley-Terry) loss, DPO against the frozen
SFT model, RLHF against the reward model (GRPO, model/rl.py), and the win rate of a tuned model over its SFT start.

A comparison is {"prompt" (a string, or messages ending with a user turn), "chosen", "rejected", "meta"}; each side is
rendered as the chat format does (model/chat.py): the prompt, the answer's tokens, <|assistant_end|>. The training
loops are model/posttrain.run_loop's. The stages' config sections (RewardConfig, PreferenceConfig) live in
model/preference_config.py, free of torch.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

from data.chat.skills import SKILL_NAMES, check, normalize_prompt, user_turns
from model.chat import render_prompt
from model.checkpoint import load_model, save_model
from model.engine import BatchGenerator, GenRequest
from model.gpt import GPT
from model.posttrain import Metrics, run_loop
from model.preference_config import PreferenceConfig, RewardConfig
from model.tokenizer import Tokenizer

ASSISTANT_END = "<|assistant_end|>"
HEAD_FILE = "reward_head.safetensors"
Encoded = tuple[list[int], int]  # (ids, index of the answer's first token)


# --------------------------------------------------------------------------------------------------- encoding


def prompt_messages(prompt: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def encode_answer(tok: Tokenizer, prompt: str | list[dict], answer: str, seq_len: int) -> Encoded | None:
    """(render_prompt(prompt) + the answer's tokens + <|assistant_end|>, where the answer starts). Too long for
    seq_len: the answer stays whole and the prompt loses tokens from its start, after <|bos|> (its end, the last
    question and <|assistant_start|>, stays). None when the answer leaves no room for <|bos|> and
    <|assistant_start|>: the caller drops it and counts it."""
    prompt_ids = render_prompt(tok, prompt_messages(prompt))
    answer_ids = tok.encode(answer) + [tok.special_id(ASSISTANT_END)]
    room = seq_len - len(answer_ids)
    if room < 2:
        return None
    if len(prompt_ids) > room:
        prompt_ids = prompt_ids[:1] + prompt_ids[len(prompt_ids) - room + 1:]
    return prompt_ids + answer_ids, len(prompt_ids)


def encode_pairs(tok: Tokenizer, records: Sequence[dict], seq_len: int) -> tuple[list[tuple[Encoded, Encoded]], int]:
    """Each comparison as (chosen, rejected) encodings; returns (the pairs, how many were dropped as too long)."""
    pairs = []
    for rec in records:
        chosen = encode_answer(tok, rec["prompt"], rec["chosen"], seq_len)
        rejected = encode_answer(tok, rec["prompt"], rec["rejected"], seq_len)
        if chosen is not None and rejected is not None:
            pairs.append((chosen, rejected))
    return pairs, len(records) - len(pairs)


def unseen(pairs: Sequence[dict], training: Sequence[dict]) -> list[dict]:
    """The comparisons none of whose user turns is a user turn of the `training` records (the conversations and
    comparisons trained on, compared as normalize_prompt does): an SFT model trained on a conversation with the same
    question has seen one side's answer, so such a pair is not held out."""
    seen = {normalize_prompt(t) for t in user_turns(training)}
    return [p for p in pairs if not {normalize_prompt(t) for t in user_turns([p])} & seen]


@dataclass
class Batch:
    """Right-padded sequences: ids [B, T], each row's answer start and length [B]."""

    ids: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.ids.to(device), self.starts.to(device), self.lengths.to(device))


def collate(encoded: Sequence[Encoded], pad_id: int) -> Batch:
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    for row, (seq, _) in enumerate(encoded):
        ids[row, :len(seq)] = torch.tensor(seq)
    return Batch(ids, torch.tensor([s for _, s in encoded]), torch.tensor([len(seq) for seq, _ in encoded]))


def pair_batch(pairs: Sequence[tuple[Encoded, Encoded]], index: Sequence[int], pad_id: int) -> Batch:
    """The chosen answers of pairs[index] in rows 0..n-1, their rejected answers in rows n..2n-1."""
    return collate([pairs[i][0] for i in index] + [pairs[i][1] for i in index], pad_id)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Step `step`'s batch: the next batch_size items of a fresh permutation of range(n) per epoch, so a step's batch
    depends on (seed, step) alone (a resumed run draws the same batches)."""
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = perm[offset:offset + batch_size - len(out)].tolist()
        out += take
        pos += len(take)
    return out


# --------------------------------------------------------------------------------------------------- losses


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged: the chosen answer should score higher."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023) on answer log-probs (sums over answer tokens) of the policy and the reference:
    (loss, chosen implicit rewards, rejected implicit rewards); an implicit reward is beta * (logp_pi - logp_ref)."""
    chosen, rejected = beta * (pi_chosen - ref_chosen), beta * (pi_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected).mean(), chosen.detach(), rejected.detach()


def answer_logprobs(model: GPT, batch: Batch) -> torch.Tensor:
    """[B]: each row's sum of log p(token | before) over its answer tokens (<|assistant_end|> included), nothing of
    the prompt or the padding. The lm_head runs on the positions that predict an answer token only."""
    hidden = model.hidden(batch.ids[:, :-1])
    pos = torch.arange(1, batch.ids.shape[1], device=batch.ids.device)[None]  # where each target sits in ids
    counted = (pos >= batch.starts[:, None]) & (pos < batch.lengths[:, None])  # [B, T-1]
    logp = -F.cross_entropy(model.lm_head(hidden[counted]).float(), batch.ids[:, 1:][counted], reduction="none")
    rows = torch.arange(len(batch.ids), device=logp.device)[:, None].expand_as(counted)[counted]
    return torch.zeros(len(batch.ids), device=logp.device).index_add(0, rows, logp)


def pref_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """The share of pairs whose chosen side is ahead, a tie counting half."""
    return float(((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean())


def pair_values(fn: Callable[[Batch], torch.Tensor], pairs: Sequence[tuple[Encoded, Encoded]], pad_id: int,
                device: torch.device, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """fn (rewards or log-probs of a batch) over every pair, in fixed chunks: (chosen [N], rejected [N])."""
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        index = range(start, min(start + batch_size, len(pairs)))
        values = fn(pair_batch(pairs, index, pad_id).to(device)).detach().float().cpu()
        chosen.append(values[:len(index)])
        rejected.append(values[len(index):])
    if not chosen:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(chosen), torch.cat(rejected)


# --------------------------------------------------------------------------------------------------- reward model


class RewardModel(nn.Module):
    """A GPT trunk (started from the SFT model) and a linear head reading the hidden state at the answer's last token
    (<|assistant_end|>): one scalar per (prompt, answer). It carries its tokenizer."""

    def __init__(self, trunk: GPT, tok: Tokenizer):
        super().__init__()
        self.trunk, self.tok = trunk, tok
        self.head = nn.Linear(trunk.config.n_embd, 1)
        nn.init.zeros_(self.head.weight)  # every answer scores 0 until trained: no preference before learning one
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: Batch) -> torch.Tensor:
        hidden = self.trunk.hidden(batch.ids)
        last = hidden[torch.arange(len(batch.lengths), device=hidden.device), batch.lengths - 1]
        return self.head(last).squeeze(-1)

    @torch.no_grad()
    def score(self, prompts: Sequence[str | list[dict]], answers: Sequence[str], batch_size: int = 32) -> list[float]:
        """The reward of each (prompt, answer), in batches."""
        seq_len, device = self.trunk.config.seq_len, self.head.weight.device
        encoded = []
        for prompt, answer in zip(prompts, answers, strict=True):
            enc = encode_answer(self.tok, prompt, answer, seq_len)
            if enc is None:
                raise ValueError(f"RewardModel.score: the answer {answer[:60]!r}... does not fit seq_len={seq_len}")
            encoded.append(enc)
        was_training = self.training
        self.eval()
        out: list[float] = []
        for start in range(0, len(encoded), batch_size):
            out += self(collate(encoded[start:start + batch_size], self.tok.pad_id).to(device)).float().tolist()
        self.train(was_training)
        return out

    def save(self, directory: str | os.PathLike) -> None:
        """The trunk as a model directory (model.safetensors, config.json), tokenizer.json, reward_head.safetensors."""
        directory = Path(directory)
        save_model(self.trunk, directory)
        self.tok.save(directory / "tokenizer.json")
        head = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.head.state_dict().items()}
        safetensors.torch.save_file(head, str(directory / HEAD_FILE))

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> RewardModel:
        directory = Path(directory)
        rm = cls(load_model(directory, device), Tokenizer.from_file(directory / "tokenizer.json")).to(device)
        rm.head.load_state_dict(safetensors.torch.load_file(str(directory / HEAD_FILE), device=str(device)))
        return rm.eval()


def train_reward_model(sft_dir: str | os.PathLike, train_pairs: Sequence[dict], val_pairs: Sequence[dict],
                       cfg: RewardConfig, ckpt_dir: Path,
                       on_log: Callable[[int, Metrics], None] | None = None) -> tuple[RewardModel, dict[str, Any]]:
    """A reward model started from the SFT model in sft_dir, trained with the pairwise loss on train_pairs
    (comparison records); evaluations report `pref_accuracy` and `val_loss` on val_pairs. Returns (the model, the
    loop's result plus "pairs", "val_pairs", "dropped")."""
    device = cfg.torch_device()
    tok = Tokenizer.from_file(Path(sft_dir) / "tokenizer.json")
    rm = RewardModel(load_model(sft_dir, device), tok).to(device)
    seq_len = rm.trunk.config.seq_len
    train, dropped = encode_pairs(tok, train_pairs, seq_len)
    val, val_dropped = encode_pairs(tok, val_pairs, seq_len)
    if not train:
        raise ValueError(f"reward model: none of the {len(train_pairs)} train comparisons fits seq_len={seq_len}")

    def step_fn(step: int) -> tuple[torch.Tensor, Metrics]:
        index = batch_indices(len(train), cfg.batch_size, step, cfg.seed)
        chosen, rejected = rm(pair_batch(train, index, tok.pad_id).to(device)).chunk(2)
        return bradley_terry_loss(chosen, rejected), {"accuracy": pref_accuracy(chosen, rejected)}

    def evaluate() -> Metrics:
        chosen, rejected = pair_values(rm, val, tok.pad_id, device)
        return {"pref_accuracy": pref_accuracy(chosen, rejected),
                "val_loss": float(bradley_terry_loss(chosen, rejected)),
                "val_margin": float((chosen - rejected).mean())}

    result = run_loop(rm, cfg, step_fn, ckpt_dir, evaluate if val else None, on_log=on_log)
    return rm.eval(), {**result, "pairs": len(train), "val_pairs": len(val), "dropped": dropped + val_dropped}


# --------------------------------------------------------------------------------------------------- DPO


def freeze(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def train_dpo(policy: GPT, reference: GPT, tok: Tokenizer, train_pairs: Sequence[dict], val_pairs: Sequence[dict],
              cfg: PreferenceConfig, ckpt_dir: Path,
              on_log: Callable[[int, Metrics], None] | None = None) -> dict[str, Any]:
    """DPO of `policy` against the frozen `reference` (the SFT model) on train_pairs; evaluations report the held-out
    `reward_margin` (mean chosen minus rejected implicit reward) and `pref_accuracy` (share of val pairs with a
    positive margin, a zero margin counting half). Returns the loop's result plus "pairs", "val_pairs", "dropped"."""
    device = cfg.torch_device()
    freeze(reference.to(device))
    seq_len = policy.config.seq_len
    train, dropped = encode_pairs(tok, train_pairs, seq_len)
    val, val_dropped = encode_pairs(tok, val_pairs, seq_len)
    if not train:
        raise ValueError(f"dpo: none of the {len(train_pairs)} train comparisons fits seq_len={seq_len}")
    with torch.no_grad():  # the reference never changes: its log-probs once, up front
        ref_train = pair_values(lambda b: answer_logprobs(reference, b), train, tok.pad_id, device)
        ref_val = pair_values(lambda b: answer_logprobs(reference, b), val, tok.pad_id, device)
    ref_train = tuple(t.to(device) for t in ref_train)

    def step_fn(step: int) -> tuple[torch.Tensor, Metrics]:
        index = batch_indices(len(train), cfg.batch_size, step, cfg.seed)
        chosen, rejected = answer_logprobs(policy, pair_batch(train, index, tok.pad_id).to(device)).chunk(2)
        at = torch.tensor(index, device=device)
        loss, r_chosen, r_rejected = dpo_loss(chosen, rejected, ref_train[0][at], ref_train[1][at], cfg.beta)
        return loss, {"train_margin": float((r_chosen - r_rejected).mean()),
                      "accuracy": pref_accuracy(r_chosen, r_rejected)}

    def evaluate() -> Metrics:
        return implicit_preference(policy, val, ref_val, tok.pad_id, cfg.beta, device)

    result = run_loop(policy, cfg, step_fn, ckpt_dir, evaluate if val else None, on_log=on_log)
    policy.eval()
    return {**result, "pairs": len(train), "val_pairs": len(val), "dropped": dropped + val_dropped}


def implicit_preference(policy: GPT, pairs: Sequence[tuple[Encoded, Encoded]],
                        reference_logprobs: tuple[torch.Tensor, torch.Tensor], pad_id: int, beta: float,
                        device: torch.device) -> Metrics:
    """The policy's implicit DPO rewards on `pairs` against the reference's log-probs: "reward_margin" (mean chosen
    minus rejected), "pref_accuracy" (share with a positive margin, zero counting half) and "val_loss" (the DPO
    loss on them)."""
    chosen, rejected = pair_values(lambda b: answer_logprobs(policy, b), pairs, pad_id, device)
    r_chosen, r_rejected = beta * (chosen - reference_logprobs[0]), beta * (rejected - reference_logprobs[1])
    margin = r_chosen - r_rejected
    return {"reward_margin": float(margin.mean()), "val_loss": float(-F.logsigmoid(margin).mean()),
            "pref_accuracy": pref_accuracy(r_chosen, r_rejected),
            "chosen_reward": float(r_chosen.mean()), "rejected_reward": float(r_rejected.mean())}


# --------------------------------------------------------------------------------------------------- RLHF


def answer_log_ratio(policy: GPT, reference: GPT, tok: Tokenizer, prompts: Sequence, answers: Sequence[str],
                     device: torch.device) -> float:
    """Mean over the answers of (log p_policy - log p_reference) per answer token: on the policy's own answers, an
    estimate of its per-token KL to the reference (the k1 estimator; greedy answers, so a proxy)."""
    encoded = [e for p, a in zip(prompts, answers, strict=True)
               if (e := encode_answer(tok, p, a, policy.config.seq_len)) is not None]
    if not encoded:
        return 0.0
    batch = collate(encoded, tok.pad_id).to(device)
    tokens = (batch.lengths - batch.starts).float()
    return float(((answer_logprobs(policy, batch) - answer_logprobs(reference, batch)) / tokens).mean())


def train_rlhf(policy: GPT, reference: GPT, reward_model: RewardModel, tok: Tokenizer, train_pairs: Sequence[dict],
               val_pairs: Sequence[dict], eval_items: Sequence[dict], cfg: PreferenceConfig, ckpt_dir: Path,
               on_log: Callable[[int, Metrics], None] | None = None) -> dict[str, Any]:
    """RLHF: GRPO (model/rl.py) on the train comparisons' prompts, k sampled answers each scored by the reward model,
    a KL penalty to the frozen reference (the SFT model). Each evaluation reports, on held-out data: "rm_score" (the
    reward model's mean score of the policy's greedy answers to the val prompts and eval_items), "pref_accuracy" and
    "reward_margin" (the policy's implicit DPO preference on the val pairs, against the reference), "task_score"
    (share of eval_items answered correctly by their skills' checks), "kl_greedy" (answer_log_ratio on those answers;
    the training log's "kl" is k3 on the sampled answers) and the degeneration numbers ("repetition", "mean_length",
    "length_ratio" against the SFT model's answers). The guard stops the run and rolls it back when the reward-model
    score climbs while pref_accuracy or task_score falls past the config's tolerance, or when the answers degenerate.
    Returns train_grpo's (run_loop's) result."""
    from model import rl

    device = cfg.torch_device()
    freeze(reference.to(device))
    freeze(reward_model.to(device))
    prompts = list({json_key(i["messages"]): i for i in pair_items(train_pairs)}.values())  # one per distinct prompt
    if not prompts:
        raise ValueError("rlhf: no train comparisons, so no prompts to sample answers for")
    val, _ = encode_pairs(tok, val_pairs, policy.config.seq_len)
    with torch.no_grad():
        ref_val = pair_values(lambda b: answer_logprobs(reference, b), val, tok.pad_id, device)
    held = [*pair_items(val_pairs), *eval_items]
    reference_lengths = [len(a.split()) for a in greedy_answers(reference, tok, held, cfg.max_new_tokens)]

    def reward_fn(items: list[dict], texts: list[str]) -> list[float]:
        return reward_model.score([i["messages"] for i in items], texts)

    def evaluate() -> Metrics:
        answers = greedy_answers(policy, tok, held, cfg.max_new_tokens)
        metrics = {"rm_score": sum(reward_fn(held, answers)) / max(1, len(held))}
        if val:
            metrics.update(implicit_preference(policy, val, ref_val, tok.pad_id, cfg.beta, device))
        first = len(held) - len(eval_items)
        tasks = [check(item, a) for item, a in zip(held[first:], answers[first:], strict=True)]
        if tasks:
            metrics["task_score"] = sum(tasks) / len(tasks)
        metrics["kl_greedy"] = answer_log_ratio(policy, reference, tok, [i["messages"] for i in held], answers, device)
        return {**metrics, **rl.degeneration(answers, reference_lengths)}

    guard = rl.Guard(max_repetition=cfg.max_repetition, max_length_ratio=cfg.max_length_ratio,
                     max_pref_drop=cfg.max_pref_drop, max_task_drop=cfg.max_task_drop, reward_key="rm_score",
                     watch=("pref_accuracy", "task_score"))
    return rl.train_grpo(policy, reference, tok, prompts, reward_fn, cfg, ckpt_dir, evaluate, guard, on_log)


def json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------------------------------- win rate


def pair_items(records: Sequence[dict]) -> list[dict]:
    """Comparison records as prompt items {"id", "messages"}, plus "skill" and "reference" when a generated
    comparison names a checkable skill (meta "generator" and "reference"): then the skill's check judges answers."""
    items = []
    for rec in records:
        item: dict[str, Any] = {"id": rec.get("id", ""), "messages": prompt_messages(rec["prompt"])}
        meta = rec.get("meta") or {}
        if meta.get("generator") in SKILL_NAMES and "reference" in meta:
            item.update(skill=meta["generator"], reference=meta["reference"])
        items.append(item)
    return items


def checkable(item: dict) -> bool:
    return item.get("skill") in SKILL_NAMES and "reference" in item


def greedy_answers(model: GPT, tok: Tokenizer, items: Sequence[dict], max_new_tokens: int) -> list[str]:
    """Each item's greedy answer, batched (a prompt too long for the context loses tokens after <|bos|>)."""
    room = model.config.seq_len - max_new_tokens
    if room < 2:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in seq_len "
                         f"{model.config.seq_len}")
    stops = frozenset({tok.special_id(ASSISTANT_END), tok.bos_id})
    requests = []
    for item in items:
        ids = render_prompt(tok, item["messages"])
        ids = ids if len(ids) <= room else ids[:1] + ids[len(ids) - room + 1:]
        requests.append(GenRequest(ids, max_new_tokens, stop_ids=stops))
    was_training = model.training
    done = BatchGenerator(model, max_batch=32).run(requests)
    model.train(was_training)
    return [tok.decode(r.tokens) for r in done]


def tally(points: Sequence[float]) -> dict[str, float]:
    """{"win_rate" (nan when nothing was judged), "wins", "ties", "losses", "judged"} of per-prompt points 1/0.5/0."""
    return {"win_rate": sum(points) / len(points) if points else math.nan, "wins": sum(p == 1.0 for p in points),
            "ties": sum(p == 0.5 for p in points), "losses": sum(p == 0.0 for p in points), "judged": len(points)}


def win_rate(policy: GPT, reference: GPT, tok: Tokenizer, items: Sequence[dict],
             reward_model: RewardModel | None = None, max_new_tokens: int = 48) -> dict[str, Any]:
    """The policy's greedy answers against the reference's on held-out prompt items. An item naming a checkable skill
    is judged by the check (correct beats incorrect; both right or both wrong tie), any other by the reward model
    (higher score wins); without a reward model such an item is left unjudged. A win counts 1, a tie 1/2.
    Returns `tally` over every judged item plus "unjudged", "win_rate_checks" and "win_rate_rm" (nan where that
    judge saw nothing), and "by_judge": {"checks": tally, "rm": tally}."""
    ours = greedy_answers(policy, tok, items, max_new_tokens)
    theirs = greedy_answers(reference, tok, items, max_new_tokens)
    by_rm = [i for i, item in enumerate(items) if not checkable(item)] if reward_model is not None else []
    rm_scores = {}
    if by_rm:
        prompts = [items[i]["messages"] for i in by_rm]
        pair = reward_model.score(prompts * 2, [ours[i] for i in by_rm] + [theirs[i] for i in by_rm])
        rm_scores = {i: (pair[n], pair[n + len(by_rm)]) for n, i in enumerate(by_rm)}
    points: dict[str, list[float]] = {"checks": [], "rm": []}
    for i, item in enumerate(items):
        if checkable(item):
            a, b, judge = check(item, ours[i]), check(item, theirs[i]), "checks"
        elif i in rm_scores:
            (a, b), judge = rm_scores[i], "rm"
        else:
            continue
        points[judge].append(1.0 if a > b else 0.5 if a == b else 0.0)
    by_judge = {judge: tally(p) for judge, p in points.items()}
    every = tally(points["checks"] + points["rm"])
    return {**every, "unjudged": len(items) - every["judged"], "win_rate_checks": by_judge["checks"]["win_rate"],
            "win_rate_rm": by_judge["rm"]["win_rate"], "by_judge": by_judge}
