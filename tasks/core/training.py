"""Glue shared by `pretrain` and `finetune`: the section's TrainConfig, one process in the task or several started by
a launcher (model/launch.py), on this node or several, and every log step reported to MLflow and Prefect."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from model import checkpoint as ckpt
from model import launch
from model.trainer import TrainConfig, peak_flops, train
from tasks.core.plots import loss_curve
from tasks.core.stage import StageRun


def run_training(s: StageRun, section: BaseModel, build: Callable[[dict], launch.TrainJob], args: dict):
    """Build the job (model + batches) with `build` (a module-level function of model/, which every rank imports by
    name) and train it to section.steps, checkpointing under the artifact so a rerun after a crash resumes.
    `section` is a TrainConfig (PretrainConfig, FinetuneConfig) with numbers for steps and grad_accum. With nproc >
    1 or nnodes > 1 the ranks run as subprocesses of a launcher and this process follows their metrics, then loads
    the final weights. Returns (the built job with trained weights, result)."""
    cfg = TrainConfig.of(section).resolved()
    builder = f"{build.__module__}:{build.__name__}"
    job = launch.build(builder, args)
    nats_to_bpb = job.info.get("nats_to_bpb")
    ckpt_dir = s.out / "checkpoints"
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

    if cfg.nproc > 1 or cfg.nnodes > 1:
        where = f" on node {cfg.node_rank} of {cfg.nnodes}" if cfg.nnodes > 1 else ""
        zero = f" ZeRO-{cfg.zero_stage}" if cfg.strategy == "deepspeed" else ""
        s.log.info(f"{s.name}: {cfg.nproc} processes{where}, {cfg.strategy}{zero}, via {cfg.launcher}")
        spec = launch.Job(builder=builder, args=args, train=cfg, ckpt_dir=str(ckpt_dir))
        result = launch.run(spec, s.out / "launch", on_log=on_log, on_output=lambda line: s.log.info(line))
        for sample in result.get("samples", []):
            s.log.info(f"{s.name} sample at step {sample['step']}: {sample['text']!r}")
        ckpt.load_training_state(ckpt.latest_checkpoint(ckpt_dir), job.model, None)  # the ranks' final weights
    else:
        def sample_and_log(m) -> str:
            text = job.sample_fn(m)
            s.log.info(f"{s.name} sample: {text!r}")
            return text

        job.model.to(cfg.device)
        result = train(job.model, cfg, job.train_batches, job.val_batches, ckpt_dir, on_log=on_log,
                       sample_fn=sample_and_log if job.sample_fn else None, peak_flops=peak_flops(cfg.device))
    s.progress(1.0)
    if history:
        curve = loss_curve(history, s.out / "loss.png", f"{s.name}: loss")
        s.image("loss-curve", curve, f"{s.name} loss curve")
    resumed = result.get("resumed_from")
    if resumed:
        s.log.info(f"{s.name}: resumed from {resumed}")
    result["resumed_from_step"] = int(Path(resumed).name.removeprefix("ckpt_")) if resumed else 0
    return job, result
