"""What the stages after SFT (reward_model, preference, rl) share: reporting model/posttrain.run_loop's progress, its
evaluations as a table, and passing a model on unchanged when a stage is off."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tasks.core.stage import StageRun


def loop_reporter(s: StageRun, steps: int) -> Callable[[int, dict], None]:
    """run_loop's on_log for a stage: every log and evaluation to MLflow, progress to Prefect, a line now and then."""
    last = {"t": 0.0}

    def on_log(step: int, metrics: dict) -> None:
        s.metrics(metrics, step)
        s.progress(step / max(1, steps))
        evaluation = "loss" not in metrics
        if evaluation or time.time() - last["t"] > 10 or step == steps:
            last["t"] = time.time()
            shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
            s.log.info(f"{s.name} step {step}/{steps}{' eval' if evaluation else ''}: {shown}")

    return on_log


def eval_rows(evals: list[tuple[int, dict]]) -> list[dict]:
    """run_loop's evaluations as table rows: the step, then each number."""
    return [{"step": step, **{k: round(v, 4) for k, v in m.items() if isinstance(v, (int, float))}}
            for step, m in evals]


def link_copy(src: Path, dst: Path) -> None:
    """dst as a copy of the folder src, its files hard-linked where the filesystem allows (artifacts never change
    in place: a rebuilt file is a new file), else copied."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def first_and_kept(result: dict) -> tuple[dict, dict]:
    """run_loop's first evaluation and that of the weights the run kept: its last evaluation, or the one its guard
    rolled back to (the last evaluation then judged weights that were thrown away)."""
    evals = result["evals"]
    if not evals:
        return {}, {}
    kept = evals[-1][1]
    if result["stopped"] and result["rolled_back_to"] is not None:
        kept = dict(evals)[result["rolled_back_to"]]
    return evals[0][1], kept


def comparisons(labels: Path) -> tuple[list[dict], list[dict]]:
    """The ingest_labels artifact's comparisons: (train, held out). Held out from every stage so far: no val pair asks
    what SFT or these stages trained on (model.preference.unseen). A week may bring none."""
    from data.chat.labels import read_jsonl
    from model.preference import unseen

    train = read_jsonl(labels / "comparisons_train.jsonl")
    val = read_jsonl(labels / "comparisons_val.jsonl")
    return train, unseen(val, [*read_jsonl(labels / "conversations_train.jsonl"), *train])
