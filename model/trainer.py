"""The training loop, shared by pretraining and SFT: AdamW, warmup + decay, grad accumulation, eval, checkpoints,
resume, and DDP when torch.distributed is initialized. Readable whole, nanoGPT-style."""
from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from model.checkpoint import latest_checkpoint, load_training_state, save_training_state
from model.evaluate import mean_loss
from model.gpt import GPT

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@dataclass
class TrainConfig:
    steps: int
    batch_size: int
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    schedule: str = "cosine"  # "cosine" | "linear"
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # <= 0 disables clipping
    eval_every: int = 50
    eval_batches: int = 8
    ckpt_every: int = 100
    sample_every: int = 0
    log_every: int = 10
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16" -> autocast on cuda
    compile: bool = False


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for 0-based `step`: linear warmup to cfg.lr, then cosine or linear decay to lr*min_lr_ratio at
    the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - 1 - cfg.warmup_steps))
    if cfg.schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)
    if cfg.schedule == "linear":
        return cfg.lr - progress * (cfg.lr - min_lr)
    raise ValueError(f"TrainConfig.schedule must be 'cosine' or 'linear', got {cfg.schedule!r}")


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.dtype == "float32":
        return contextlib.nullcontext()
    if cfg.dtype != "bfloat16":
        raise ValueError(f"TrainConfig.dtype must be 'float32' or 'bfloat16', got {cfg.dtype!r}")
    if device.type != "cuda":
        log.info("dtype bfloat16 requested on %s: training in float32 (bf16 autocast is for cuda)", device)
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _wrap(model: GPT, cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, int, int]:
    """Apply torch.compile and DDP in one place; returns (wrapped model, rank, world size)."""
    wrapped: torch.nn.Module = torch.compile(model) if cfg.compile else model
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        # the only buffers are the constant RoPE tables: no need to broadcast them every forward
        # (newer torch renames broadcast_buffers to forward_sync_buffers)
        no_sync_kw = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
            else "broadcast_buffers"
        return DDP(wrapped, device_ids=ids, **{no_sync_kw: False}), dist.get_rank(), dist.get_world_size()
    return wrapped, 0, 1


def train(model: GPT, cfg: TrainConfig, train_batches: Callable[[int], Batch],
          val_batches: Callable[[], Iterable[Batch]] | None, ckpt_dir: Path,
          on_log: Callable[[int, dict], None] | None = None, sample_fn: Callable[[GPT], str] | None = None,
          peak_flops: float | None = None) -> dict[str, Any]:
    """Train `model` to cfg.steps optimizer steps, resuming from the newest checkpoint in ckpt_dir if there is one.

    train_batches(i) must return the i-th micro-batch (x, y, mask) deterministically, so a resumed run sees the same
    data stream; under DDP rank r of w reads micro-batches i*w + r. (cfg.batch_size is not read here: the batches
    carry their own size.) on_log(step, metrics) gets loss, lr, tokens_per_s,
    grad_norm and mfu (percent of peak_flops, when given) every log_every steps, and val_loss at eval steps.
    """
    ckpt_dir = Path(ckpt_dir)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = model.configure_optimizer(cfg.lr, cfg.weight_decay)

    start_step, tokens_total, resumed_from = 0, 0, None
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        state = load_training_state(latest, model, optimizer)
        start_step, tokens_total, resumed_from = state["step"], state["extra"].get("tokens", 0), str(latest)
        log.info("resumed from %s at step %d", latest, start_step)

    wrapped, rank, world = _wrap(model, cfg, device)
    is_ddp = world > 1
    autocast = _autocast(cfg, device)
    flops_per_token = model.flops_per_token()
    params = [p for p in model.parameters() if p.requires_grad]

    def evaluate() -> float:
        return mean_loss(model, itertools.islice(val_batches(), cfg.eval_batches))

    def save(step: int) -> None:
        save_training_state(ckpt_dir, model, optimizer, step,
                            {"tokens": tokens_total, "micro_step": step * cfg.grad_accum, "world_size": world})

    result: dict[str, Any] = {"final_loss": None, "final_val_loss": None, "samples": []}
    run_start = time.perf_counter()
    train_seconds, tokens_run = 0.0, 0
    window_tokens, window_start = 0, time.perf_counter()
    model.train()
    for step in range(start_step, cfg.steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(cfg.grad_accum):
            x, y, mask = train_batches((step * cfg.grad_accum + micro) * world + rank)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mask is not None:
                mask = mask.to(device, non_blocking=True)
            if is_ddp:  # all-reduce gradients only on the last micro-batch
                wrapped.require_backward_grad_sync = micro == cfg.grad_accum - 1
            with autocast:
                _, loss = wrapped(x, y, mask)
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
            window_tokens += x.numel() * world
            tokens_total += x.numel() * world
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        last = done == cfg.steps

        metrics: dict[str, float] = {}
        if (cfg.log_every > 0 and done % cfg.log_every == 0) or last:
            train_loss = float(loss_sum) / cfg.grad_accum  # the only host sync of the step, at log steps only
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"train: loss is {train_loss} at step {done} (lr {lr:.3g}); "
                                         f"lower TrainConfig.lr or check the batches")
            elapsed = time.perf_counter() - window_start
            train_seconds += elapsed
            tokens_run += window_tokens
            metrics.update(loss=train_loss, lr=lr, tokens_per_s=window_tokens / max(elapsed, 1e-9))
            if grad_norm is not None:
                metrics["grad_norm"] = float(grad_norm)
            if peak_flops:
                metrics["mfu"] = 100.0 * flops_per_token * metrics["tokens_per_s"] / peak_flops
            result["final_loss"] = train_loss
            window_tokens = 0
        paused = time.perf_counter()  # eval, sampling and checkpoints do not count as training time
        if rank == 0:
            if val_batches is not None and ((cfg.eval_every > 0 and done % cfg.eval_every == 0) or last):
                metrics["val_loss"] = result["final_val_loss"] = evaluate()
            if sample_fn is not None and cfg.sample_every > 0 and done % cfg.sample_every == 0:
                text = sample_fn(model)
                result["samples"].append({"step": done, "text": text})
                log.info("sample at step %d: %r", done, text)
            if metrics:
                log.info("step %d/%d | %s", done, cfg.steps, " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                if on_log is not None:
                    on_log(done, metrics)
            if (cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0) or last:
                save(done)
        if "loss" in metrics:
            window_start = time.perf_counter()
        else:
            window_start += time.perf_counter() - paused

    if result["final_val_loss"] is None and val_batches is not None and rank == 0:
        result["final_val_loss"] = evaluate()  # resumed from the final checkpoint: no step ran, still report val loss
    if is_ddp:
        dist.barrier()  # every rank returns only once the final checkpoint exists
    result.update(steps=cfg.steps, tokens=tokens_total, seconds=time.perf_counter() - run_start,
                  tokens_per_s=tokens_run / train_seconds if train_seconds > 0 else 0.0, resumed_from=resumed_from)
    return result
