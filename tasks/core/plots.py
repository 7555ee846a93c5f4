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


def scaling_plots(report: dict, folder: Path) -> list[Path]:
    """A scaling sweep's three pictures: loss vs FLOPs per model size (runs, the law's curve, the forecast), the
    fitted surface L(N, D) with the runs and the compute-optimal frontier, and the IsoFLOP curves with their minima."""
    import numpy as np

    from model.scaling import Law

    law, runs, f = Law(**report["law"]), report["runs"], report["forecast"]
    sizes = sorted({r["params"] for r in runs} | {f["params"]})
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, color in zip(sizes, colors, strict=True):
        mine = [r for r in runs if r["params"] == n]
        tokens = [r["tokens"] for r in mine] or [f["tokens"]]
        d = np.geomspace(min(tokens) / 1.5, max(tokens) * 1.5, 50)
        ax.plot(6 * n * d, law.loss(n, d), "-", color=color, alpha=0.6)
        if mine:
            ax.plot([r["flops"] for r in mine], [r["val_loss"] for r in mine], "o", color=color, label=f"N={n:,}")
    if "actual" in f:
        c = 6 * f["params"] * f["tokens"]
        ax.plot([c], [f["predicted"]], "x", color="red", markersize=10, label="forecast")
        ax.plot([c], [f["actual"]], "*", color="red", markersize=12, label=f"trained N={f['params']:,}")
    ax.set(xscale="log", xlabel="training FLOPs (6ND)", ylabel="val loss (nats/token)", title="loss vs compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    paths = [_save(fig, folder / "loss_vs_flops.png")]

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ns = np.array([r["params"] for r in runs] + [f["params"]], dtype=float)
    ds = np.array([r["tokens"] for r in runs] + [f.get("tokens", f["tokens_planned"])], dtype=float)
    gn, gd = np.meshgrid(np.geomspace(ns.min() / 2, ns.max() * 2, 80), np.geomspace(ds.min() / 2, ds.max() * 2, 80))
    contour = ax.contour(gn, gd, law.loss(gn, gd), levels=12, cmap="viridis")
    ax.clabel(contour, fontsize=7)
    ax.scatter(ns[:-1], ds[:-1], c="black", s=15, label="runs")
    ax.scatter(ns[-1:], ds[-1:], c="red", marker="*", s=80, label="forecast run")
    budgets = np.geomspace(6 * gn.min() * gd.min(), 6 * gn.max() * gd.max(), 40)
    frontier = [law.optimal(c) for c in budgets]
    ax.plot([o["params"] for o in frontier], [o["tokens"] for o in frontier], "r--", label="compute-optimal")
    ax.set(xscale="log", yscale="log", xlim=(gn.min(), gn.max()), ylim=(gd.min(), gd.max()),
           xlabel="parameters N", ylabel="tokens D", title="fitted L(N, D)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, folder / "law_surface.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    iso = report["isoflop"]
    points = np.array(iso["points"]) if iso["points"] else np.empty((0, 3))
    levels = sorted({round(float(np.log(6 * n * d)), 6) for n, d, _ in points})
    for level, color in zip(levels, plt.cm.plasma(np.linspace(0, 0.85, max(1, len(levels)))), strict=False):
        mine = points[np.isclose(np.log(6 * points[:, 0] * points[:, 1]), level, atol=0.1)]
        ax.plot(mine[:, 0], mine[:, 2], "o", color=color, label=f"C={np.exp(level):.2g}")
        if len(mine) >= 3:
            coef = np.polyfit(np.log(mine[:, 0]), mine[:, 2], 2)
            x = np.geomspace(mine[:, 0].min(), mine[:, 0].max(), 40)
            ax.plot(x, np.polyval(coef, np.log(x)), "-", color=color, alpha=0.6)
    for m in iso["minima"]:
        ax.plot([m["params"]], [m["loss"]], "kv", markersize=8)
    ax.set(xscale="log", xlabel="parameters N", ylabel="val loss (nats/token)",
           title=f"IsoFLOP curves ({iso['from']}); minima marked")
    ax.grid(alpha=0.3, which="both")
    if levels:
        ax.legend(fontsize=8)
    paths.append(_save(fig, folder / "isoflop.png"))
    return paths
