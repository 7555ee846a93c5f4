"""Policy-gradient RL for the assistant: sample k answers per prompt, reward them (a checker, or a reward model),
normalise the rewards within each prompt's group (GRPO) and push up the likelihood of the better answers, with a KL
penalty to a frozen reference; or the seeds' rejection sampling: keep the best correct answer and finetune on it.
Also what watches such a run: pass@k, a degeneration detector ("the the the the") and the guard that stops a run whose
reward climbs while what it should serve falls.

Used by the `rl` stage (verifiable rewards from the chat skills' checks) and by the `preference` stage's RLHF mode
(a reward model's scores).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from data.chat.skills import check, reward
from model.chat import render_prompt
from model.engine import BatchGenerator, GenRequest
from model.files import atomic_write_json
from model.posttrain import Metrics, run_loop
from model.rl_config import GRPOConfig, RLConfig  # the config sections, apart: declaring a stage loads no torch
from model.tokenizer import Tokenizer

RewardFn = Callable[[list[dict], list[str]], list[float]]


# --------------------------------------------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """One sampled answer. answer_ids ends with <|assistant_end|> when the model ended the answer itself (so the
    policy is also trained to stop); text is the answer without special tokens; reward is filled in after scoring."""

    item: dict
    prompt_ids: list[int]
    answer_ids: list[int]
    text: str
    finish_reason: str
    reward: float = 0.0


def request_seed(seed: int, item: int, sample: int) -> int:
    """A sampling seed per (run seed, item index, sample index): a request samples the same batched or alone, and
    a resumed run samples what the interrupted one did."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{item}:{sample}".encode(), digest_size=8).digest(), "big") >> 1


@torch.no_grad()
def sample_groups(policy: torch.nn.Module, tok: Tokenizer, items: Sequence[dict], k: int, max_new_tokens: int,
                  temperature: float, seed: int, max_batch: int = 64) -> list[list[Rollout]]:
    """k sampled answers to each item's messages (a group per item, in order). An answer ends at <|assistant_end|>
    (kept in answer_ids; finish_reason "stop") or at <|bos|> (kept: the model began another conversation; "bos"),
    else at max_new_tokens ("length"). Training rewards only "stop" answers (train_grpo)."""
    was_training = policy.training
    end, bos = tok.special_id("<|assistant_end|>"), tok.bos_id

    def stop_at_bos(req: GenRequest, token: int) -> None:
        if token == bos:
            req.finish("stop")

    prompts = [render_prompt(tok, item["messages"]) for item in items]
    requests = [[GenRequest(p, max_new_tokens, temperature=temperature, seed=request_seed(seed, i, j),
                            stop_ids=frozenset({end}), on_token=stop_at_bos) for j in range(k)]
                for i, p in enumerate(prompts)]
    BatchGenerator(policy, max_batch=min(max_batch, k * len(items))).run(r for group in requests for r in group)
    policy.train(was_training)
    groups = []
    for item, prompt, group in zip(items, prompts, requests, strict=True):
        rollouts = []
        for req in group:
            ended = req.finish_reason == "stop" and (not req.tokens or req.tokens[-1] != bos)
            answer = req.tokens + [end] if ended else list(req.tokens)
            text = tok.decode([t for t in req.tokens if t != bos], skip_special_tokens=True)
            reason = "stop" if ended else "bos" if req.finish_reason == "stop" else (req.finish_reason or "length")
            rollouts.append(Rollout(item, prompt, answer, text, reason))
        groups.append(rollouts)
    return groups


# --------------------------------------------------------------------------------------------------- rewards


_ANSWER_LINE = re.compile(r"(?:^|\n)Answer: -?\d+\s*$")


def format_reward(text: str) -> float:
    """1.0 when the answer ends with a line 'Answer: N' (the format the arithmetic and letter-counting answers use),
    else 0.0. The stage adds `format_reward` (config, 0 by default: a correct answer already has this format) times
    this to the check's reward, a small shaping signal for a model that does not yet answer in the format."""
    return 1.0 if _ANSWER_LINE.search(text) else 0.0


def verifiable_rewards(items: Sequence[dict], texts: Sequence[str], format_weight: float = 0.0) -> list[float]:
    """The skills' rewards (1 for a correct final answer, else 0) plus format_weight x format_reward."""
    return [reward(item, text) + (format_weight * format_reward(text) if format_weight else 0.0)
            for item, text in zip(items, texts, strict=True)]


# --------------------------------------------------------------------------------------------------- GRPO


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[P, k] rewards -> (r - group mean) / (group std + eps). The population std (divide by k, not k - 1): the
    advantages describe the k answers we have, not an estimate of a wider population's spread, so [1, 0, 0, 1]
    becomes exactly [+1, -1, -1, +1] whatever k is. A group whose rewards are all equal gets 0: no signal."""
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, unbiased=False, keepdim=True) + eps)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from the sampled tokens' log-probs, the k3 estimator as in GRPO:
    exp(ref - logp) - (ref - logp) - 1. Never negative, 0 where the two agree, unbiased under the policy's samples."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1


def answer_logprobs(model: torch.nn.Module, rollouts: Sequence[Rollout], pad_id: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each answer token given what precedes it [B, T], mask of the answer positions [B, T]), rows
    right-padded (a causal model never looks at the padding after a row)."""
    device = next(model.parameters()).device
    rows = [r.prompt_ids + r.answer_ids for r in rollouts]
    width = max(len(ids) for ids in rows) - 1
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width))
    for i, (r, ids) in enumerate(zip(rollouts, rows, strict=True)):
        n = len(ids) - 1
        x[i, :n], y[i, :n] = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
        mask[i, len(r.prompt_ids) - 1:n] = 1.0
    x, y, mask = x.to(device), y.to(device), mask.to(device)
    logits, _ = model(x)
    logp = -F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view_as(mask)
    return logp, mask


def grpo_loss(policy: torch.nn.Module, reference: torch.nn.Module | None, groups: list[list[Rollout]],
              advantages: torch.Tensor, kl_coef: float, pad_id: int = 0) -> tuple[torch.Tensor, Metrics]:
    """One on-policy GRPO update's loss over the groups' answers (advantages [P, k]).

    Per answer: -(A x the mean over its tokens of log p) + kl_coef x the mean over its tokens of the k3 KL to the
    frozen reference; the loss is the mean over answers. That is GRPO's per-sequence token mean (each answer weighs
    the same, however long). The answers were sampled from these very weights, so PPO's ratio p/p_old is 1 and its
    gradient is that of log p: clipping is moot. Answers with no signal (A = 0) still carry the KL term; when
    kl_coef is 0 they are left out of the forward pass."""
    flat = [r for group in groups for r in group]
    adv = advantages.flatten().to(next(policy.parameters()).device)
    if len(flat) != adv.numel():
        raise ValueError(f"grpo_loss: {len(flat)} rollouts but {adv.numel()} advantages")
    used = [i for i in range(len(flat)) if kl_coef > 0 or adv[i] != 0] or [0]
    logp, mask = answer_logprobs(policy, [flat[i] for i in used], pad_id)
    tokens = mask.sum(dim=1).clamp(min=1)
    seq_logp = (logp * mask).sum(dim=1) / tokens
    kl = torch.zeros_like(seq_logp)
    if kl_coef > 0 and reference is not None:
        with torch.no_grad():
            ref_logp, _ = answer_logprobs(reference, [flat[i] for i in used], pad_id)
        kl = (kl_penalty(logp, ref_logp) * mask).sum(dim=1) / tokens
    per_seq = -(adv[used] * seq_logp) + kl_coef * kl
    loss = per_seq.sum() / len(flat)  # answers left out add 0 to the mean over all answers
    rewards = torch.tensor([[r.reward for r in g] for g in groups], dtype=torch.float32)
    metrics = {
        "kl": float(kl.detach().mean()),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=False)),
        "answer_tokens": sum(len(r.answer_ids) for r in flat) / len(flat),
        "zero_adv_groups": float((advantages.abs().amax(dim=1) == 0).float().mean()),
    }
    return loss, metrics


# --------------------------------------------------------------------------------------------------- watching


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. 2021 from n samples of which c are correct: 1 - C(n-c, k) / C(n, k), the
    chance that k of the n drawn without replacement hold a correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _words(text: str) -> list[str]:
    return text.lower().split()


def repetition(text: str) -> float:
    """The larger of the share of word 3-grams seen before in the text and the share of words equal to the word
    before them: 'the the the the' -> 1.0; an ordinary answer -> 0 or close."""
    words = _words(text)
    if len(words) < 2:
        return 0.0
    same = sum(a == b for a, b in zip(words, words[1:], strict=False)) / (len(words) - 1)
    grams = list(zip(words, words[1:], words[2:], strict=False))
    repeated = (len(grams) - len(set(grams))) / len(grams) if grams else 0.0
    return max(same, repeated)


def degeneration(texts: Sequence[str], reference_lengths: Sequence[int] | None = None) -> dict[str, float]:
    """{"repetition": mean of `repetition` over texts, "mean_length": words per text, "length_ratio": mean_length /
    the mean of reference_lengths (words), when given}: what a policy gaming its reward tends to blow up."""
    if not texts:
        return {"repetition": 0.0, "mean_length": 0.0}
    out = {"repetition": sum(map(repetition, texts)) / len(texts),
           "mean_length": sum(len(_words(t)) for t in texts) / len(texts)}
    if reference_lengths:
        out["length_ratio"] = out["mean_length"] / max(1e-9, sum(reference_lengths) / len(reference_lengths))
    return out


@dataclass
class Guard:
    """run_loop's guard: a reason to stop (and roll back) when the latest evaluation shows degeneration past the
    limits ("repetition", "length_ratio") that has grown since the first evaluation (a model that starts past a limit
    is judged on getting worse, not stopped for what it was given), or when the reward (metrics[reward_key]) rose
    since the first evaluation while a watched held-out metric fell by more than its tolerance since then (absolute
    points): max_pref_drop for "pref_accuracy", max_task_drop for any other watched name. Metrics an evaluation lacks
    are not judged."""

    max_repetition: float = 0.5
    max_length_ratio: float = 3.0
    max_pref_drop: float = 0.05
    max_task_drop: float = 0.1
    reward_key: str = "reward"
    watch: tuple[str, ...] = ("pref_accuracy", "task_score")

    def __call__(self, evals: list[tuple[int, Metrics]]) -> str | None:
        if not evals:
            return None
        (_, first), (step, last) = evals[0], evals[-1]
        if last.get("repetition", 0.0) > max(self.max_repetition, first.get("repetition", 0.0)):
            return f"step {step}: held-out answers repeat themselves ({last['repetition']:.2f} > {self.max_repetition})"
        if last.get("length_ratio", 0.0) > max(self.max_length_ratio, first.get("length_ratio", 0.0)):
            return (f"step {step}: held-out answers are {last['length_ratio']:.1f}x the reference length "
                    f"(> {self.max_length_ratio})")
        key = self.reward_key
        if key in first and key in last and last[key] > first[key]:
            for name in self.watch:
                if name in first and name in last:
                    tolerance = self.max_pref_drop if name == "pref_accuracy" else self.max_task_drop
                    if first[name] - last[name] > tolerance:
                        return (f"step {step}: {key} rose {first[key]:.3f} -> {last[key]:.3f} while {name} fell "
                                f"{first[name]:.3f} -> {last[name]:.3f} (tolerance {tolerance})")
        return None


def evaluate_passes(policy: torch.nn.Module, tok: Tokenizer, items: Sequence[dict], k: int, temperature: float,
                    max_new_tokens: int, seed: int) -> dict[str, float]:
    """{"pass@1": mean of c/n, "pass@k": mean pass_at_k(k, c, k), "greedy": greedy accuracy} over the items (n = k
    samples each, checked by their skills), and the same per skill ("pass@1.<skill>", ...), plus the degeneration
    numbers of the sampled answers against the reference answers' lengths."""
    from model.evaluate import run_items

    groups = sample_groups(policy, tok, items, k, max_new_tokens, temperature, seed)
    results, _ = run_items(policy, tok, list(items), max_new_tokens)
    rows = []
    for item, group, greedy in zip(items, groups, results, strict=True):
        c = sum(check(item, r.text) for r in group)
        rows.append((item["skill"], c / k, pass_at_k(k, c, k), float(greedy["correct"])))
    out: dict[str, float] = {}
    for skill in [None, *dict.fromkeys(r[0] for r in rows)]:
        chosen = [r for r in rows if skill is None or r[0] == skill]
        suffix = "" if skill is None else f".{skill}"
        for name, col in (("pass@1", 1), ("pass@k", 2), ("greedy", 3)):
            out[name + suffix] = sum(r[col] for r in chosen) / len(chosen)
    texts = [r.text for g in groups for r in g]
    out.update(degeneration(texts, [len(_words(str(i.get("answer", "")))) for i in items]))
    return out


def select_problems(policy: torch.nn.Module, tok: Tokenizer, items: Sequence[dict], k: int, max_new_tokens: int,
                    temperature: float, seed: int, reward_fn: RewardFn | None = None) -> tuple[list[dict], Metrics]:
    """Train where there is signal: keep the items the policy answers correctly (reward >= 1) at least once in k
    samples. Returns (kept, {"problems_kept", "problems_dropped", "train_pass@1"})."""
    reward_fn = reward_fn or verifiable_rewards
    groups = sample_groups(policy, tok, items, k, max_new_tokens, temperature, seed)
    rewards = reward_fn([r.item for g in groups for r in g], [r.text for g in groups for r in g])  # one batch
    solved = [sum(value >= 1.0 for value in rewards[i * k:(i + 1) * k]) for i in range(len(items))]
    kept = [item for item, c in zip(items, solved, strict=True) if c]
    return kept, {"problems_kept": len(kept), "problems_dropped": len(items) - len(kept),
                  "train_pass@1": sum(solved) / max(1, k * len(items))}


# --------------------------------------------------------------------------------------------------- training


def score(groups: list[list[Rollout]], reward_fn: RewardFn) -> list[Rollout]:
    """Set each rollout's reward from reward_fn (one batched call); an answer that did not end properly (cut at
    max_new_tokens, or ended by <|bos|>) earns 0 however right its text. Returns the rollouts, flat."""
    flat = [r for g in groups for r in g]
    for r, value in zip(flat, reward_fn([r.item for r in flat], [r.text for r in flat]), strict=True):
        r.reward = float(value) if r.finish_reason == "stop" else 0.0
    return flat


def _step_rng(seed: int, step: int) -> random.Random:
    return random.Random(f"rl:{seed}:{step}")


def train_grpo(policy: torch.nn.Module, reference: torch.nn.Module | None, tok: Tokenizer, items: Sequence[dict],
               reward_fn: RewardFn, cfg: GRPOConfig, ckpt_dir: Path,
               evaluate: Callable[[], Metrics] | None = None,
               guard: Callable[[list[tuple[int, Metrics]]], str | None] | None = None,
               on_log: Callable[[int, Metrics], None] | None = None) -> dict[str, Any]:
    """GRPO on model.posttrain.run_loop. Step s draws cfg.prompts_per_step items (deterministic in (seed, s)),
    samples cfg.k answers each from the current policy, scores them with reward_fn(items, texts) (batched), and
    takes one grpo_loss step against the frozen reference (its parameters are made untrainable here). Returns
    run_loop's result."""
    if not items:
        raise ValueError("train_grpo: no training items")
    pad = tok.pad_id
    if reference is not None:
        reference.to(cfg.torch_device()).eval().requires_grad_(False)

    def step_fn(step: int) -> tuple[torch.Tensor, Metrics]:
        rng = _step_rng(cfg.seed, step)
        batch = rng.sample(list(items), min(cfg.prompts_per_step, len(items)))
        groups = sample_groups(policy, tok, batch, cfg.k, cfg.max_new_tokens, cfg.temperature,
                               seed=rng.getrandbits(62))
        score(groups, reward_fn)
        advantages = group_advantages(torch.tensor([[r.reward for r in g] for g in groups]))
        return grpo_loss(policy, reference, groups, advantages, cfg.kl_coef, pad)

    return run_loop(policy, cfg, step_fn, ckpt_dir, evaluate, guard, on_log)


def best_answers(groups: list[list[Rollout]], min_reward: float = 1.0) -> list[Rollout]:
    """Per group, the answer with the highest reward at least min_reward, the shortest among equals (the seeds'
    'take the top solution'); groups with none are left out."""
    best = []
    for group in groups:
        good = [r for r in group if r.reward >= min_reward]  # score() gives an answer that did not end 0
        if good:
            best.append(min(good, key=lambda r: (-r.reward, len(r.answer_ids))))
    return best


def train_rejection(policy: torch.nn.Module, tok: Tokenizer, items: Sequence[dict], reward_fn: RewardFn,
                    cfg: RLConfig, ckpt_dir: Path, evaluate: Callable[[], Metrics] | None = None,
                    guard: Callable[[list[tuple[int, Metrics]]], str | None] | None = None,
                    on_log: Callable[[int, Metrics], None] | None = None) -> dict[str, Any]:
    """The seeds' version: for each of cfg.rounds rounds, sample cfg.k answers per item from the current policy, keep
    the best correct one (best_answers), and finetune on those conversations with the SFT loss for cfg.sft_steps
    steps at cfg.sft_lr; all rounds are one run_loop (cfg.rounds x cfg.sft_steps steps). A round's chosen
    conversations are saved in ckpt_dir before it trains on them, so a resumed run trains on exactly what the
    interrupted one chose."""
    from model.sft import ConversationBatches

    if not items:
        raise ValueError("train_rejection: no training items")
    ckpt_dir = Path(ckpt_dir)
    loop_cfg = cfg.model_copy(update={"steps": cfg.rounds * cfg.sft_steps, "lr": cfg.sft_lr})
    rounds: dict[int, tuple[ConversationBatches | None, Metrics]] = {}

    def round_data(r: int) -> tuple[ConversationBatches | None, Metrics]:
        path = ckpt_dir / f"round_{r:03d}.json"
        if path.exists():
            saved = json.loads(path.read_text())
        else:
            groups = sample_groups(policy, tok, items, cfg.k, cfg.max_new_tokens, cfg.temperature,
                                   seed=_step_rng(cfg.seed, r).getrandbits(62))
            flat = score(groups, reward_fn)
            best = best_answers(groups)
            saved = {"conversations": [[*b.item["messages"], {"role": "assistant", "content": b.text}] for b in best],
                     "metrics": {"round": r, "reward_mean": sum(x.reward for x in flat) / len(flat),
                                 "problems_solved": len(best) / len(groups)}}
            atomic_write_json(path, saved)
        convs = saved["conversations"]
        batches = (ConversationBatches(convs, tok, cfg.sft_batch_size, policy.config.seq_len, seed=cfg.seed + r)
                   if convs else None)
        return batches, saved["metrics"]

    def step_fn(step: int) -> tuple[torch.Tensor, Metrics]:
        r = step // cfg.sft_steps
        if r not in rounds:
            rounds.clear()
            rounds[r] = round_data(r)
        batches, metrics = rounds[r]
        if batches is None:  # nothing solved this round: a step that changes nothing
            return torch.zeros((), requires_grad=True), dict(metrics)
        device = next(policy.parameters()).device
        x, y, mask = (t.to(device) for t in batches(step))
        _, loss = policy(x, y, loss_mask=mask)
        return loss, dict(metrics)

    return run_loop(policy, loop_cfg, step_fn, ckpt_dir, evaluate, guard, on_log)
