"""Glue shared by `pretrain` and `finetune`: device choice, TrainConfig from the preset, logging to MLflow/Prefect."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from model.trainer import TrainConfig, train
from tasks.config import TrainSection
from tasks.plots import loss_curve
from tasks.stage import StageRun

# Dense bf16 peak FLOP/s of common accelerators, for MFU (CPU runs report none).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


def device_and_dtype(section: TrainSection) -> tuple[str, str]:
    device = section.device if section.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = section.dtype if section.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    return device, dtype


def inference_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def train_config(section: TrainSection) -> TrainConfig:
    device, dtype = device_and_dtype(section)
    fields = section.model_dump(exclude={"device", "dtype"})
    return TrainConfig(**fields, device=device, dtype=dtype)


def run_training(
    s: StageRun, model, section: TrainSection, train_batches, val_batches, sample_fn=None, nats_to_bpb=None
) -> dict:
    """Train with checkpoints under the artifact (so a rerun after a crash resumes), reporting every log step."""
    cfg = train_config(section)
    last = {"t": time.time()}
    history: list[tuple[int, dict]] = []

    def on_log(step: int, metrics: dict) -> None:
        if nats_to_bpb and "val_loss" in metrics:  # nats/token -> bits/byte, comparable across tokenizers
            metrics = {**metrics, "val_bpb": metrics["val_loss"] * nats_to_bpb}
        s.metrics(metrics, step)
        history.append((step, metrics))
        s.progress(step / cfg.steps)
        if time.time() - last["t"] > 5 or "val_loss" in metrics or step == cfg.steps:
            last["t"] = time.time()
            shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
            s.log.info(f"{s.name} step {step}/{cfg.steps} {shown}")

    def sample_and_log(m) -> str:
        text = sample_fn(m)
        s.log.info(f"{s.name} sample: {text!r}")
        return text

    model.to(cfg.device)
    result = train(
        model,
        cfg,
        train_batches,
        val_batches,
        s.out / "checkpoints",
        on_log=on_log,
        sample_fn=sample_and_log if sample_fn else None,
        peak_flops=peak_flops(cfg.device),
    )
    s.progress(1.0)
    if history:
        curve = loss_curve(history, s.out / "loss.png", f"{s.name}: loss")
        s.image("loss-curve", curve, f"{s.name} loss curve")
    resumed = result.get("resumed_from")
    if resumed:
        s.log.info(f"{s.name}: resumed from {resumed}")
    result["resumed_from_step"] = int(Path(resumed).name.removeprefix("ckpt_")) if resumed else 0
    return result
