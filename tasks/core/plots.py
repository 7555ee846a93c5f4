"""Plots people would rather look at than read: training curves and eval scores, as PNG files (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from model.files import atomic_path


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:  # matplotlib picks the format from the name
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curve(history: list[tuple[int, dict]], path: Path, title: str) -> Path:
    """Train loss at every log step and val loss (and bits per byte, if logged) at eval steps."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("loss", "-"), ("val_loss", "o-")):
        points = [(step, m[key]) for step, m in history if key in m]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=key.replace("_", " "), markersize=4)
    bpb = [(step, m["val_bpb"]) for step, m in history if "val_bpb" in m]
    if bpb:
        ax.plot(*zip(*bpb, strict=True), "s--", label="val bits/byte", markersize=4)
    ax.set(xlabel="step", ylabel="nats/token (bits/byte)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def score_bars(scores: dict[str, float], path: Path, title: str, baseline: dict[str, float] | None = None,
               labels: tuple[str, str] = ("candidate", "production"), ylabel: str = "accuracy") -> Path:
    """One bar per eval task (and the production model's, or another baseline's, beside it where it has one)."""
    tasks = list(scores)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(tasks)), 4))
    width = 0.4 if baseline else 0.6
    xs = range(len(tasks))
    bars = ax.bar(
        [x - (width / 2 if baseline else 0) for x in xs], [scores[t] for t in tasks], width, label=labels[0]
    )
    ax.bar_label(bars, fmt="%.2f")  # a zero score is otherwise an invisible bar
    if baseline:
        shown = [(x, baseline[t]) for x, t in zip(xs, tasks, strict=True) if t in baseline]
        prod = ax.bar([x + width / 2 for x, _ in shown], [v for _, v in shown], width, label=labels[1])
        ax.bar_label(prod, fmt="%.2f")
        ax.legend()
    ax.set_xticks(list(xs), tasks, rotation=20)
    ax.set(ylim=(0, 1.05), ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def metric_curves(history: list[tuple[int, dict]], keys: list[str], path: Path, title: str) -> Path:
    """One panel per metric name in `keys` (e.g. reward and KL at train steps, pass@1 at evals), each plotted at the
    steps whose metrics hold it; a name no step holds gets no panel."""
    keys = [k for k in keys if any(k in m for _, m in history)]
    fig, axes = plt.subplots(len(keys) or 1, 1, figsize=(7, 2.4 * max(1, len(keys))), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=False):
        points = [(step, m[key]) for step, m in history if key in m]
        ax.plot(*zip(*points, strict=True), "o-" if len(points) < 12 else "-", markersize=4)
        ax.set(ylabel=key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set(xlabel="step")
    axes[0, 0].set_title(title)
    return _save(fig, path)
