"""The loop the stages after SFT share (reward model, DPO, RLHF, RL on verifiable tasks).

What a step is belongs to the stage: `step_fn(step)` returns the step's loss (a tensor to backpropagate) and its
metrics, from a batch of pairs or a round of sampled answers; it must be deterministic in the step and the weights
(seed its sampling with the step), so a resumed run takes the same steps. The loop brings the rest: AdamW over the
trainable parameters, warmup then cosine decay, gradient clipping, held-out evaluation before the first step and every
`eval_every` steps, atomic checkpoints (weights, optimizer, RNG, evaluations so far) that a rerun resumes from, and a
guard that may stop a run at an evaluation and roll the weights back to the last evaluation it accepted.

One process: these stages run for minutes where pretraining runs for days (see model/trainer.py for DDP/DeepSpeed).
"""
from __future__ import annotations

import copy
import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from model.files import atomic_file

if TYPE_CHECKING:  # torch is imported where it runs: a stage declaring a LoopConfig section does not load it
    import torch

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^step_(\d{6,})\.pt$")

Metrics = dict[str, float]


class LoopConfig(BaseModel):
    """Optimisation settings every post-SFT stage has; each stage's section extends it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="False skips the stage: its model is the one it was given.")
    steps: int = Field(100, ge=0, description="Optimizer steps.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (after warmup, cosine decay to min_lr_ratio).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(5, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="Clip the gradient norm to this; 0 disables.")
    eval_every: int = Field(25, ge=0, description="Held-out evaluation every N steps (and before and after).")
    ckpt_every: int = Field(25, ge=0, description="Checkpoint every N steps (and at the end); a rerun resumes.")
    log_every: int = Field(5, ge=1)
    seed: int = 0
    device: str = Field("auto", description="'auto': cuda when available, else cpu.")

    def torch_device(self) -> torch.device:
        import torch

        return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device)


def lr_at(step: int, cfg: LoopConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _CKPT.match(p.name)))


def _save(directory: Path, step: int, state: dict, keep: set[int]) -> Path:
    """`directory/step_NNNNNN.pt`, written to a temp name and renamed: an interrupted save leaves no checkpoint. Then
    every older checkpoint but the newest one and those in `keep` is removed."""
    import torch

    final = directory / f"step_{step:06d}.pt"
    with atomic_file(final) as f:
        torch.save(state, f)
    for old_step, old in _checkpoints(directory):
        if old_step != step and old_step not in keep:
            old.unlink(missing_ok=True)
    return final


def run_loop(model: torch.nn.Module, cfg: LoopConfig, step_fn: Callable[[int], tuple[torch.Tensor, Metrics]],
             ckpt_dir: Path, evaluate: Callable[[], Metrics] | None = None,
             guard: Callable[[list[tuple[int, Metrics]]], str | None] | None = None,
             on_log: Callable[[int, Metrics], None] | None = None) -> dict[str, Any]:
    """Train `model` (its parameters with requires_grad) for cfg.steps steps of `step_fn`.

    evaluate() returns held-out metrics (the model is in eval mode, without gradients); it runs at step 0, every
    eval_every steps and at the end, and each result goes to on_log under its own names. guard(evals) sees every
    evaluation so far as (step, metrics) and returns why the run must stop, or None: then the weights go back to the
    last evaluation it accepted and the run ends there. Returns {"steps": steps taken in all, "resumed_from_step",
    "evals": [(step, metrics)], "history": [(step, metrics)] (train logs and evals), "stopped": reason or None,
    "rolled_back_to": step or None, "seconds"}."""
    import torch

    device = cfg.torch_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(0.9, 0.95))
    ckpt_dir = Path(ckpt_dir)
    torch.manual_seed(cfg.seed)
    state: dict[str, Any] = {"step": 0, "evals": [], "history": [], "good_step": None, "stopped": None}
    found = _checkpoints(ckpt_dir)
    resumed_from = 0
    if found:
        resumed_from, path = found[-1]
        saved = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"].cpu())  # map_location moved it to `device`; the CPU RNG wants it back
        state = saved["loop"]
        log.info("resumed from %s at step %d", path, resumed_from)

    def snapshot(step: int) -> None:
        keep = {state["good_step"]} if state["good_step"] is not None else set()
        _save(ckpt_dir, step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "rng": torch.get_rng_state(), "loop": state}, keep)

    def run_eval(step: int) -> bool:
        """Evaluate, report, ask the guard; False: stopped (and rolled back)."""
        if evaluate is None:
            return True
        model.eval()
        with torch.no_grad():
            metrics = evaluate()
        model.train()
        state["evals"].append((step, metrics))
        state["history"].append((step, metrics))
        if on_log is not None:
            on_log(step, metrics)
        # the first evaluation is the baseline the guard judges the others against: it never stops a run
        reason = guard(state["evals"]) if guard is not None and len(state["evals"]) > 1 else None
        if reason is None:
            state["good_step"] = step
            return True
        good = state["good_step"]
        log.warning("step %d: %s; rolling back to step %s", step, reason, good)
        state["stopped"], state["rolled_back_to"] = reason, good
        if good is not None:
            model.load_state_dict(torch.load(ckpt_dir / f"step_{good:06d}.pt", map_location=device,
                                             weights_only=False)["model"])
        return False

    start = time.perf_counter()
    model.train()
    if state["step"] == 0 and not state["evals"] and state["stopped"] is None:
        if run_eval(0) and evaluate is not None:
            snapshot(0)  # the weights the guard may come back to
    while state["step"] < cfg.steps and state["stopped"] is None:
        step = state["step"]
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, metrics = step_fn(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step + 1}: loss is {float(loss)}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        done = state["step"] = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            logged = {"loss": float(loss.detach()), "lr": lr, **metrics}
            if norm is not None:
                logged["grad_norm"] = float(norm)
            state["history"].append((done, logged))
            if on_log is not None:
                on_log(done, logged)
        evaluated = (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps
        if evaluated and not run_eval(done):
            snapshot(done)  # a rerun finds the stopped run, rolled back, and does not train on
            break
        if evaluated or (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
            snapshot(done)
    if cfg.steps == 0 and state["step"] == 0 and not found:
        snapshot(0)
    return {"steps": state["step"], "resumed_from_step": resumed_from, "evals": copy.deepcopy(state["evals"]),
            "history": copy.deepcopy(state["history"]), "stopped": state["stopped"],
            "rolled_back_to": state.get("rolled_back_to"), "seconds": time.perf_counter() - start}
