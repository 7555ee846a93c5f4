"""Trainer tokens/s against a bare eager PyTorch loop on the same model and data, measured in the same run.

The trainer adds an LR schedule, gradient clipping, logging and checkpoint hooks; it must be no slower than the bare
loop. Usage: python bench/train_throughput.py [--rounds 3] [--steps 30]. Last line: `ratio: X.XX` (trainer / bare).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from model.config import GPTConfig
from model.gpt import GPT
from model.trainer import TrainConfig, train

B, T, VOCAB, WARMUP = 8, 256, 4096, 5


def make_batches(n: int = 64):
    data = torch.randint(0, VOCAB, (n, B, T + 1), generator=torch.Generator().manual_seed(0))

    def batches(i: int):
        d = data[i % n]
        return d[:, :-1], d[:, 1:], None

    return batches


def bare(cfg: GPTConfig, steps: int) -> float:
    """The plain loop DESIGN.md's sizing table was measured with."""
    torch.manual_seed(0)
    model, batches = GPT(cfg), make_batches()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for i in range(steps + WARMUP):
        if i == WARMUP:
            start = time.perf_counter()
        x, y, _ = batches(i)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    return steps * B * T / (time.perf_counter() - start)


def ours(cfg: GPTConfig, steps: int) -> float:
    torch.manual_seed(0)
    model, seen = GPT(cfg), []
    tc = TrainConfig(steps=steps + WARMUP, batch_size=B, log_every=WARMUP, eval_every=0, ckpt_every=0, warmup_steps=5)
    with tempfile.TemporaryDirectory() as d:
        train(model, tc, make_batches(), None, d, on_log=lambda s, m: seen.append((s, m.get("tokens_per_s"))))
    rates = [r for s, r in seen if s > WARMUP and r]
    return statistics.mean(rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    cfg = GPTConfig.from_depth(4, VOCAB, T, aspect_ratio=32, head_dim=32)
    print(f"model: {GPT(cfg).num_params() / 1e6:.2f}M params, batch {B}x{T}, threads {torch.get_num_threads()}")
    base, mine = [], []
    for r in range(args.rounds):  # alternate so both see the same machine load
        base.append(bare(cfg, args.steps))
        mine.append(ours(cfg, args.steps))
        print(f"round {r}: bare loop {base[-1]:,.0f} tok/s | trainer {mine[-1]:,.0f} tok/s")
    print(f"ratio: {statistics.median(mine) / statistics.median(base):.2f}")


if __name__ == "__main__":
    main()
