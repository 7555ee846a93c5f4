"""The training loop, shared by pretraining and SFT: AdamW or Muon, warmup + decay, grad accumulation, a background
data loader, eval, atomic checkpoints (every N steps and on SIGTERM), resume, a bad-loss policy, and data parallelism
with DDP or DeepSpeed ZeRO when torch.distributed is initialized (see model/launch.py). Readable whole, nanoGPT-style.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import math
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from model import checkpoint as ckpt
from model.config import TrainConfig
from model.evaluate import mean_loss
from model.gpt import GPT

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]

# Dense bf16 peak FLOP/s of common accelerators (without sparsity), for MFU; CPU runs report tokens/s only.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "B200": 2250e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
              "A10": 125e12, "4090": 165e12, "3090": 71e12}


def peak_flops(device: str | torch.device) -> float | None:
    """The bf16 peak of the named cuda device, from PEAK_FLOPS by substring of its name; None elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


class BadLoss(FloatingPointError):
    """The loss was non-finite or spiked and the policy (or its skip budget) says stop."""


class TrainingInterrupted(Exception):
    """SIGTERM arrived: the state was checkpointed at `step` and training stopped; rerun to resume."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"training stopped by SIGTERM after step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


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


class Prefetcher:
    """Calls batches(i) for each index in `indices` on a background thread, `depth` batches ahead (pinned when the
    target is cuda), so loading overlaps the previous step; `wait_seconds` is the time the trainer spent blocked."""

    def __init__(self, batches: Callable[[int], Batch], indices: Iterator[int], depth: int, pin: bool):
        self.batches, self.indices, self.pin = batches, indices, pin
        self.wait_seconds = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._fill, name="batch-prefetch", daemon=True)
            self._thread.start()

    def _load(self, i: int) -> Batch:
        x, y, mask = self.batches(i)
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
            mask = mask.pin_memory() if mask is not None else None
        return x, y, mask

    def _put(self, item: tuple) -> bool:
        """Queue `item` unless the trainer stopped meanwhile; False once it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for i in self.indices:
                if not self._put(("ok", self._load(i))):
                    return
        except BaseException as e:  # handed to the training thread, which raises it
            self._put(("error", e))

    def next(self) -> Batch:
        start = time.perf_counter()
        if self._thread is None:
            batch = self._load(next(self.indices))
        else:
            kind, batch = self._queue.get()
            if kind == "error":
                raise batch
        self.wait_seconds += time.perf_counter() - start
        return batch

    def close(self) -> None:
        self._stop.set()


class _Sigterm:
    """While active (main thread only), SIGTERM sets a flag instead of killing the process, so the trainer can
    checkpoint at the end of the step and stop."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self) -> _Sigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM: stopping after this step with a checkpoint")
        self.received = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _Plain:
    """One process or DDP: torch.compile, DDP wrap, our optimizer, our checkpoint format."""

    def __init__(self, model: GPT, cfg: TrainConfig, device: torch.device, rank: int, world: int):
        from model.optim import build_optimizer

        self.model, self.cfg, self.rank, self.world = model, cfg, rank, world
        self.optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, muon_lr=cfg.muon_lr)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.wrapped: torch.nn.Module = torch.compile(model) if cfg.compile else model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else None
            # the only buffers are the constant RoPE tables: no need to broadcast them every forward
            # (newer torch renames broadcast_buffers to forward_sync_buffers)
            no_sync_kw = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
                else "broadcast_buffers"
            self.wrapped = DDP(self.wrapped, device_ids=ids, **{no_sync_kw: False})

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def forward_backward(self, x, y, mask, last_micro: bool, autocast, weight=None) -> torch.Tensor:
        """Backward of loss x weight (DDP then averages over ranks); weight None: 1 / grad_accum."""
        if self.world > 1:  # all-reduce gradients only on the last micro-batch
            self.wrapped.require_backward_grad_sync = last_micro
        with autocast:
            _, loss = self.wrapped(x, y, mask)
        (loss / self.cfg.grad_accum if weight is None else loss * weight).backward()
        return loss.detach()

    def clip(self) -> torch.Tensor | None:
        if self.cfg.grad_clip <= 0:
            return None
        return torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)

    def step(self, apply: bool) -> None:
        if apply:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, directory: Path, step: int, extra: dict) -> Path | None:
        path = ckpt.save_training_state(directory, self.model, self.optimizer, step, extra,
                                        keep=self.cfg.keep_checkpoints) if self.rank == 0 else None
        if self.world > 1:
            dist.barrier()  # no rank moves on (or exits after SIGTERM) before the checkpoint exists
        return path

    def load(self, path: Path) -> dict:
        return ckpt.load_training_state(path, self.model, self.optimizer)


class _DeepSpeed:
    """DeepSpeed ZeRO stage 0-3: the engine owns the optimizer (torch AdamW), accumulation and clipping; checkpoints
    keep DeepSpeed's partitioned state beside the gathered weights, so they load as models too."""

    def __init__(self, model: GPT, cfg: TrainConfig, device: torch.device, rank: int, world: int):
        import deepspeed

        if cfg.optimizer != "adamw":
            raise ValueError(f"strategy deepspeed trains with AdamW; optimizer {cfg.optimizer!r} needs strategy ddp")
        if cfg.bad_loss == "skip":
            raise ValueError("strategy deepspeed cannot skip a step once gradients are reduced: use bad_loss 'stop'")
        if cfg.compile:
            model.compile()
        self.model, self.cfg, self.rank, self.world = model, cfg, rank, world
        bf16 = cfg.dtype == "bfloat16" and device.type == "cuda"
        config = {
            "train_micro_batch_size_per_gpu": cfg.batch_size,
            "gradient_accumulation_steps": cfg.grad_accum,
            "train_batch_size": cfg.batch_size * cfg.grad_accum * world,
            "gradient_clipping": max(cfg.grad_clip, 0.0),
            "zero_optimization": {"stage": cfg.zero_stage},
            "bf16": {"enabled": bf16},
            "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "betas": [0.9, 0.95], "eps": 1e-8,
                                                      "weight_decay": cfg.weight_decay, "torch_adam": True}},
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        groups = model.configure_optimizer(cfg.lr, cfg.weight_decay).param_groups  # the same decay split as AdamW
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups]
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
        self.wrapped = self.engine

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def forward_backward(self, x, y, mask, last_micro: bool, autocast, weight=None) -> torch.Tensor:
        _, loss = self.engine(x, y, mask)  # bf16 is DeepSpeed's own (config), not autocast
        # the engine scales by 1/grad_accum itself (and averages over ranks): undo the former for a given weight
        self.engine.backward(loss if weight is None else loss * (weight * self.cfg.grad_accum))
        self.engine.step()  # applies the update only at the accumulation boundary
        return loss.detach()

    def clip(self) -> torch.Tensor | None:
        norm = self.engine.get_global_grad_norm()  # computed (and clipped by the config) inside engine.step()
        return torch.as_tensor(float(norm)) if norm is not None else None

    def step(self, apply: bool) -> None:
        pass  # engine.step() already ran at the last micro-batch

    def _gathered(self) -> contextlib.AbstractContextManager:
        if self.cfg.zero_stage == 3:
            import deepspeed
            return deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)
        return contextlib.nullcontext()

    def save(self, directory: Path, step: int, extra: dict) -> Path | None:
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".tmp_ckpt_{step:06d}_deepspeed"
        if self.rank == 0:
            ckpt.remove_tree(staging)
            staging.mkdir()
        dist.barrier()
        self.engine.save_checkpoint(str(staging), tag="deepspeed", save_latest=False)  # collective
        with self._gathered():  # full weights on every rank, for rank 0 to write model.safetensors
            path = ckpt.save_training_state(directory, self.model, None, step, extra, keep=self.cfg.keep_checkpoints,
                                            staging=staging) if self.rank == 0 else None
        dist.barrier()
        return path

    def load(self, path: Path) -> dict:
        state = ckpt.read_state(path)
        if state["extra"].get("world_size") != self.world:
            raise ValueError(f"{path}: DeepSpeed checkpoint of world size {state['extra'].get('world_size')}, "
                             f"this run has {self.world}; ZeRO state is partitioned per rank")
        loaded, _ = self.engine.load_checkpoint(str(path), tag="deepspeed", load_lr_scheduler_states=False)
        if loaded is None:
            raise FileNotFoundError(f"{path}: no DeepSpeed state (written by a non-DeepSpeed run?)")
        ckpt.restore_rng(path)
        return state


def _to(batch: Batch, device: torch.device) -> Batch:
    x, y, mask = batch
    return (x.to(device, non_blocking=True), y.to(device, non_blocking=True),
            mask.to(device, non_blocking=True) if mask is not None else None)


def _target_counts(batches: list[Batch], distributed: bool) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """For a step whose micro-batches carry a loss mask: the target tokens of each micro-batch (y != -1 and mask on,
    as GPT.forward counts them) and of the global batch (an all_reduce over the ranks, at least 1). (None, None)
    without masks: pretraining keeps its plain mean over micro-batches and ranks. Every rank runs the same builder,
    so either all ranks see masks (and join the all_reduce) or none does."""
    if all(mask is None for _, _, mask in batches):
        return None, None
    counts = [((y != -1) & (mask != 0) if mask is not None else y != -1).sum().float() for _, y, mask in batches]
    total = torch.stack(counts).sum()
    if distributed:
        dist.all_reduce(total)
    return counts, total.clamp(min=1)


def _indices(start: int, steps: int, accum: int, world: int, rank: int) -> Iterator[int]:
    """Micro-batch indices this rank reads, in order: rank r of w reads i*w + r, so the ranks together read exactly
    what one process with grad_accum * w would."""
    for step in range(start, steps):
        for micro in range(accum):
            yield (step * accum + micro) * world + rank


def train(model: GPT, cfg: TrainConfig, train_batches: Callable[[int], Batch],
          val_batches: Callable[[], Iterable[Batch]] | None, ckpt_dir: Path,
          on_log: Callable[[int, dict], None] | None = None, sample_fn: Callable[[GPT], str] | None = None,
          peak_flops: float | None = None) -> dict[str, Any]:
    """Train `model` to cfg.steps optimizer steps, resuming from the newest checkpoint in ckpt_dir if there is one.

    train_batches(i) must return the i-th micro-batch (x, y, mask) deterministically, so a resumed run sees the same
    data stream; it is called from a loader thread. A batch with a mask (SFT) weighs every target token alike: the loss
    of a step is the sum of its token losses over all micro-batches and ranks divided by the number of target tokens
    in the global batch. on_log(step, metrics) runs on rank 0 with loss (that mean; without masks the mean over ranks
    and micro-batches), lr, tokens_per_s (all ranks together), data_ms (loader wait per step), grad_norm and mfu
    (percent of one device's peak_flops reached per device, when given) every log_every steps, and val_loss at eval
    steps. Raises BadLoss per cfg.bad_loss and TrainingInterrupted after checkpointing on SIGTERM.
    """
    if not isinstance(cfg.steps, int) or not isinstance(cfg.grad_accum, int):
        raise ValueError(f"train: steps {cfg.steps!r} and grad_accum {cfg.grad_accum!r} must be numbers "
                         "('auto' is resolved by PretrainConfig.budgeted)")
    cfg = cfg.resolved()
    ckpt_dir = Path(ckpt_dir)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    use_ds = cfg.strategy == "deepspeed" and distributed
    if cfg.strategy == "deepspeed" and not distributed:
        log.info("strategy deepspeed without a process group (one process, not launched): training without DeepSpeed")
    flops_per_token = model.flops_per_token()  # before ZeRO-3 partitions the parameters away
    runner = (_DeepSpeed if use_ds else _Plain)(model, cfg, device, rank, world)

    start_step, tokens_total, resumed_from, extra = 0, 0, None, {}
    latest = ckpt.latest_checkpoint(ckpt_dir)
    if latest is not None:
        state = runner.load(latest)
        start_step, extra, resumed_from = state["step"], state["extra"], str(latest)
        tokens_total = extra.get("tokens", 0)
        log.info("resumed from %s at step %d", latest, start_step)

    autocast = _autocast(cfg, device) if not use_ds else contextlib.nullcontext()
    loader = Prefetcher(train_batches, _indices(start_step, cfg.steps, cfg.grad_accum, world, rank),
                        cfg.prefetch, pin=device.type == "cuda")

    def evaluate() -> float:  # under DeepSpeed every rank runs it through the engine (ZeRO-3 gathers per layer)
        return mean_loss(runner.wrapped if use_ds else model, itertools.islice(val_batches(), cfg.eval_batches))

    def save(step: int) -> Path | None:
        return runner.save(ckpt_dir, step, {"tokens": tokens_total, "micro_step": step * cfg.grad_accum,
                                            "world_size": world, "strategy": "deepspeed" if use_ds else "ddp",
                                            "loss_avg": loss_avg, "bad_in_a_row": bad_in_a_row,
                                            "skipped_steps": result["skipped_steps"]})

    result: dict[str, Any] = {"final_loss": None, "final_val_loss": None, "samples": [],
                              "skipped_steps": extra.get("skipped_steps", 0)}
    run_start = time.perf_counter()
    train_seconds, tokens_run = 0.0, 0
    window_tokens, window_steps, window_start, wait_mark = 0, 0, time.perf_counter(), 0.0
    # running average of good losses (for spike detection) and the skip count carry over a resume
    loss_avg, bad_in_a_row = extra.get("loss_avg"), extra.get("bad_in_a_row", 0)
    evaluated_last = False
    model.train()
    with _Sigterm() as sigterm:
        try:
            for step in range(start_step, cfg.steps):
                lr = lr_at(step, cfg)
                runner.set_lr(lr)
                loss_sum = torch.zeros((), device=device)
                micro_batches = [_to(loader.next(), device) for _ in range(cfg.grad_accum)]
                # masked (SFT) batches: each micro-batch's mean loss is weighted by its share of the global batch's
                # target tokens, so every token counts alike however the tokens fall into micro-batches and ranks
                counts, targets = _target_counts(micro_batches, distributed)
                for micro, (x, y, mask) in enumerate(micro_batches):
                    weight = None if counts is None else counts[micro] * world / targets
                    loss = runner.forward_backward(x, y, mask, micro == cfg.grad_accum - 1, autocast, weight)
                    loss_sum += loss if counts is None else loss * counts[micro]
                    window_tokens += x.numel() * world
                    tokens_total += x.numel() * world
                grad_norm = runner.clip()
                done = step + 1

                # one host sync per step: the loss (mean over ranks), whether it is usable, and SIGTERM on any rank
                if distributed:
                    check = torch.stack([loss_sum / cfg.grad_accum if counts is None else loss_sum,
                                         torch.tensor(float(sigterm.received), device=device)])
                    dist.all_reduce(check)
                    train_loss = float(check[0]) / world if counts is None else float(check[0] / targets)
                    stop_requested = float(check[1]) > 0
                else:
                    train_loss = float(loss_sum) / cfg.grad_accum if counts is None else float(loss_sum / targets)
                    stop_requested = sigterm.received
                norm_ok = grad_norm is None or bool(torch.isfinite(grad_norm))
                problem = None
                if not math.isfinite(train_loss) or not norm_ok:
                    problem = f"loss is {train_loss}" + ("" if norm_ok else f", grad norm {float(grad_norm)}")
                elif cfg.spike_factor > 0 and loss_avg is not None and step >= 10 \
                        and train_loss > cfg.spike_factor * loss_avg:
                    problem = f"loss spiked to {train_loss:.4g} (running average {loss_avg:.4g})"
                if problem is not None:
                    bad_in_a_row += 1
                    if cfg.bad_loss == "stop" or bad_in_a_row > cfg.max_bad_steps:
                        runner.step(apply=False)
                        raise BadLoss(f"train: {problem} at step {done} (lr {lr:.3g}); policy {cfg.bad_loss!r}"
                                      + (f", {bad_in_a_row} bad steps in a row" if cfg.bad_loss == "skip" else "")
                                      + ": lower TrainConfig.lr or check the batches")
                    result["skipped_steps"] += 1
                    log.warning("step %d: %s; skipped (%d in a row)", done, problem, bad_in_a_row)
                else:
                    bad_in_a_row = 0
                    loss_avg = train_loss if loss_avg is None else 0.9 * loss_avg + 0.1 * train_loss
                runner.step(apply=problem is None)
                window_steps += 1
                last = done == cfg.steps

                metrics: dict[str, float] = {}
                if (cfg.log_every > 0 and done % cfg.log_every == 0) or last:
                    elapsed = time.perf_counter() - window_start
                    train_seconds += elapsed
                    tokens_run += window_tokens
                    metrics.update(loss=train_loss, lr=lr, tokens_per_s=window_tokens / max(elapsed, 1e-9),
                                   data_ms=1000 * (loader.wait_seconds - wait_mark) / window_steps)
                    if grad_norm is not None:
                        metrics["grad_norm"] = float(grad_norm)
                    if peak_flops:  # peak_flops is one device's: compare the tokens/s of one device
                        metrics["mfu"] = 100.0 * flops_per_token * metrics["tokens_per_s"] / world / peak_flops
                    if result["skipped_steps"]:
                        metrics["skipped_steps"] = result["skipped_steps"]
                    result["final_loss"] = train_loss
                    window_tokens, window_steps, wait_mark = 0, 0, loader.wait_seconds
                paused = time.perf_counter()  # eval, sampling and checkpoints do not count as training time
                if val_batches is not None and ((cfg.eval_every > 0 and done % cfg.eval_every == 0) or last):
                    val_loss = evaluate() if rank == 0 or use_ds else None  # ZeRO-3 gathers on every rank
                    evaluated_last = last
                    if rank == 0:
                        metrics["val_loss"] = result["final_val_loss"] = val_loss
                if rank == 0:
                    can_sample = not (use_ds and cfg.zero_stage == 3)  # ZeRO-3 weights are spread over ranks
                    if sample_fn is not None and cfg.sample_every > 0 and done % cfg.sample_every == 0 and can_sample:
                        text = sample_fn(model)
                        result["samples"].append({"step": done, "text": text})
                        log.info("sample at step %d: %r", done, text)
                    if metrics:
                        log.info("step %d/%d | %s", done, cfg.steps,
                                 " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                        if on_log is not None:
                            on_log(done, metrics)
                if (cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0) or last or stop_requested:
                    saved = save(done)
                    if stop_requested:
                        raise TrainingInterrupted(done, saved or ckpt_dir / f"ckpt_{done:06d}")
                if "loss" in metrics:
                    window_start = time.perf_counter()
                else:
                    window_start += time.perf_counter() - paused
        finally:
            loader.close()

    if not evaluated_last and val_batches is not None and (rank == 0 or use_ds):
        val_loss = evaluate()  # resumed from the final checkpoint: no step ran, still report val loss
        if rank == 0:
            result["final_val_loss"] = val_loss
    if distributed:
        dist.barrier()  # every rank returns only once the final checkpoint exists
    result.update(steps=cfg.steps, tokens=tokens_total, seconds=time.perf_counter() - run_start,
                  tokens_per_s=tokens_run / train_seconds if train_seconds > 0 else 0.0, resumed_from=resumed_from)
    return result
