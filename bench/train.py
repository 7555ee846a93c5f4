"""Training tokens/s of our trainer against a plain PyTorch loop of the same architecture and size, in the same run.

The baseline is written here, nanoGPT-style: eager (no compile), standard torch.optim.AdamW(model.parameters(), lr),
a random-window get_batch from an np.memmap of the token file each step, forward / backward / step / zero_grad and
loss.item() every step (nanoGPT's log_interval = 1). Ours is model.trainer.train over data.tokens.shards.TokenBatches on
the same token file (schedule, grad clipping, logging hooks, the background loader, fused AdamW and torch.compile, as
the presets train; --no-compile for eager). Both use model.gpt.GPT, so the comparison measures what the trainer adds
around the same model. bf16 autocast on cuda applies to both. Compilation happens in the untimed warmup steps.

Usage: python bench/train.py [--rounds 3] [--steps 30] [--depth 4] [--batch 8] [--seq 256] [--device cpu|cuda]
       [--dtype float32|bfloat16] [--no-compile]
Rounds alternate the two (so both see the same machine load); tokens/s excludes --warmup steps; medians are compared.
Last line: `ratio: X.XX` (ours / baseline).
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py shadows the standard library's `tokenize` for scripts in this folder: keep it off the path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.tokens.shards import TokenBatches, load_tokens, token_dtype, write_token_shard  # noqa: E402
from model.config import GPTConfig  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.trainer import TrainConfig, peak_flops, train  # noqa: E402

LR = 1e-3


def write_tokens(directory: Path, num_tokens: int, vocab_size: int) -> Path:
    """Random ids: throughput does not depend on what the tokens say."""
    tokens = np.random.default_rng(0).integers(0, vocab_size, size=num_tokens)
    path = directory / "train-00000.bin"
    write_token_shard(path, tokens, vocab_size)
    return path


def baseline(cfg: GPTConfig, token_file: Path, args: argparse.Namespace) -> float:
    """The plain loop: tokens/s over args.steps steps after args.warmup."""
    device = torch.device(args.device)
    dtype = token_dtype(cfg.vocab_size)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and args.dtype == "bfloat16" \
        else contextlib.nullcontext()

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        data = np.memmap(token_file, dtype=dtype, mode="r")  # re-opened per batch, as nanoGPT does (avoids a leak)
        ix = torch.randint(len(data) - args.seq, (args.batch,))
        x = torch.stack([torch.from_numpy(data[i:i + args.seq].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + args.seq].astype(np.int64)) for i in ix])
        if device.type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x, y

    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    start = time.perf_counter()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            start = time.perf_counter()  # the previous loss.item() synchronized the device
        x, y = get_batch()
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
    return args.steps * args.batch * args.seq / (time.perf_counter() - start)


def ours(cfg: GPTConfig, token_file: Path, args: argparse.Namespace) -> float:
    """model.trainer.train: tokens/s over the log windows after args.warmup (log_every = warmup)."""
    tokens = load_tokens(token_file.parent, "train")
    batches = TokenBatches(tokens, args.batch, args.seq, seed=0)
    tc = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch, lr=LR, warmup_steps=args.warmup,
                     log_every=args.warmup, eval_every=0, ckpt_every=0, device=args.device, dtype=args.dtype,
                     compile=args.compile)
    logged: list[tuple[int, float]] = []
    torch.manual_seed(0)
    model = GPT(cfg)
    with tempfile.TemporaryDirectory() as ckpt_dir:
        train(model, tc, batches, None, Path(ckpt_dir), on_log=lambda step, m: logged.append((step, m["tokens_per_s"])))
    seconds, steps, previous = 0.0, 0, 0
    for step, rate in logged:
        if previous >= args.warmup:  # windows are (previous, step]; a rate per window, weighted back into time
            seconds += (step - previous) * args.batch * args.seq / rate
            steps += step - previous
        previous = step
    return steps * args.batch * args.seq / seconds


def release(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per run before them")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--aspect-ratio", type=int, default=32)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16" if cuda else "float32",
                        help="bfloat16 = autocast on cuda, for both loops")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile our trainer's model, as the presets train (never the baseline)")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")

    cfg = GPTConfig.from_depth(args.depth, args.vocab, args.seq, aspect_ratio=args.aspect_ratio,
                               head_dim=args.head_dim)
    model = GPT(cfg)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"model: {model.num_params() / 1e6:.2f}M params ({cfg.n_layer} layers x {cfg.n_embd}, vocab "
          f"{cfg.vocab_size}), batch {args.batch}x{args.seq}, device {device_name}, dtype {args.dtype}, "
          f"compile {args.compile}, threads {torch.get_num_threads()}")
    flops_per_token = model.flops_per_token()
    del model

    base, mine = [], []
    with tempfile.TemporaryDirectory() as tmp:
        token_file = write_tokens(Path(tmp), max(1 << 20, 4 * args.batch * (args.seq + 1)), args.vocab)
        for r in range(args.rounds):
            order = [(baseline, base), (ours, mine)]
            for run, rates in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
                rates.append(run(cfg, token_file, args))
                release(args.device)
            print(f"round {r}: baseline {base[-1]:,.0f} tok/s | ours {mine[-1]:,.0f} tok/s")

    peak = peak_flops(args.device)
    if peak:
        mfu = lambda rate: 100.0 * flops_per_token * rate / peak
        print(f"mfu: ours {mfu(statistics.median(mine)):.1f}% | baseline {mfu(statistics.median(base)):.1f}% "
              f"(of {peak / 1e12:.0f} TFLOP/s bf16)")
    print(f"median: baseline {statistics.median(base):,.0f} tok/s | ours {statistics.median(mine):,.0f} tok/s")
    print(f"ratio: {statistics.median(mine) / statistics.median(base):.2f}")


if __name__ == "__main__":
    main()
