"""`factory scaling`: a scaling-law sweep over the yearly cycle's token shards, as a Prefect flow.

Each run of the sweep is the `pretrain` stage at one depth and token budget: a cached artifact like any stage's (a
rerun of the sweep reuses it), tracked as a nested MLflow run under the sweep's parent run. Then (model/scaling.py):
- the Chinchilla law L(N, D) = E + A / N^alpha + B / D^beta fitted to the runs' final val losses (approach 3), with
  bootstrap intervals, and the IsoFLOP minima (approach 2) with the power law N_opt = k C^a through them;
- the compute-optimal N and D for a FLOP budget and the tokens per parameter the law implies;
- a forecast: the val loss of a run larger than any in the sweep, predicted from the fit, then trained and compared.

N counts the parameters that do matmuls (all but the input embedding, a table lookup), so C = 6 N D is the training
compute. The result lands in <workdir>/scaling/<token shards' key>/ (fit.json, plots), where `pretrain.steps: auto`
finds it for the same data and tokenizer.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.context import get_run_context

from flows.cycles import build

DEPTHS = [1, 2, 3, 4]
# tokens. The tiny data's train split is ~490k tokens: the largest budget is 2 epochs (Muennighoff et al. 2023: up to
# ~4 epochs of repeated data are worth about as much as fresh data)
BUDGETS = [120_000, 240_000, 480_000, 960_000]
# One learning rate for every run: the sweep measures size and data, not tuning. At the tiny preset's 3e-3 (tuned for
# its 1,500-step depth-4 run) deeper models trained worse than shallower ones on these short runs (at 480k tokens:
# depth 2 5.56, depth 3 5.77, depth 6 6.01 nats); at 1e-3 loss falls with size (6.28, 5.71 at depth 4, 5.67 at 6).
LR = 1e-3


def law_params(model_section, vocab_size: int, depth: int) -> int:
    """N for the law at `depth` (model.scaling.law_params), counted without allocating."""
    import torch

    from model.gpt import GPT
    from model.scaling import law_params as count

    with torch.device("meta"):
        return count(GPT(model_section.model_copy(update={"depth": depth}).gpt_config(vocab_size)))


def whole_steps(tokens: int, batch_size: int, seq_len: int) -> int:
    """Steps of one micro-batch that train at least `tokens` (a run trains steps x batch_size x seq_len tokens)."""
    return max(1, math.ceil(tokens / (batch_size * seq_len)))


def run_overrides(depth: int, tokens: int, batch_size: int, seq_len: int, lr: float) -> list[str]:
    """The pretrain settings of one sweep run: `tokens` at one micro-batch a step, `lr`, warmup 5% of the steps, one
    eval and one checkpoint at the end, no compile (it costs more than it saves on a run this short)."""
    steps = whole_steps(tokens, batch_size, seq_len)
    return [f"model.depth={depth}", f"pretrain.steps={steps}", "pretrain.grad_accum=1", f"pretrain.lr={lr}",
            f"pretrain.warmup_steps={max(1, steps // 20)}", f"pretrain.eval_every={steps}",
            f"pretrain.ckpt_every={steps}", f"pretrain.sample_every={steps}", "pretrain.compile=false"]


def check_grid(depths: list[int], budgets: list[int] | None, flops: list[float] | None) -> None:
    """A clear ValueError for a sweep the law cannot be fitted to (it has 5 parameters) before anything trains."""
    columns = flops or budgets or BUDGETS
    if len(set(depths)) < 2 or len(set(columns)) < 2:
        raise ValueError("scaling: the law needs at least 2 distinct depths and 2 distinct token budgets (or FLOP "
                         f"slices); got depths {depths}, {'flops' if flops else 'budgets'} {columns}")
    if len(set(depths)) * len(set(columns)) < 6:
        raise ValueError(f"scaling: {len(set(depths))} depths x {len(set(columns))} budgets = "
                         f"{len(set(depths)) * len(set(columns))} runs; the law has 5 parameters: give at least 6")
    if min(depths) < 1 or min(columns) <= 0:
        raise ValueError("scaling: depths must be >= 1 and budgets (or FLOPs) positive")


def plan(config, vocab_size: int, depths: list[int], budgets: list[int] | None,
         flops: list[float] | None) -> list[dict]:
    """The sweep's runs: depths x token budgets, or depths on IsoFLOP slices (tokens = C / 6N for each C)."""
    runs = []
    for depth in depths:
        n = law_params(config.model, vocab_size, depth)
        wanted = [(int(c / (6 * n)), c) for c in flops] if flops else [(t, None) for t in budgets or BUDGETS]
        for tokens, c in wanted:
            runs.append({"depth": depth, "params": n, "tokens_planned": tokens, "flops_slice": c})
    return runs


def _train(ctx, config, done: dict, run: dict, lr: float) -> dict:
    """Pretrain one run of the sweep (or reuse its artifact); its row: depth, N, D, C, val loss, artifact."""
    from tasks.core.config import with_overrides
    from tasks.core.stage import Context

    cfg = config.pretrain
    overrides = run_overrides(run["depth"], run["tokens_planned"], cfg.batch_size, config.model.seq_len, lr)
    run_ctx = Context(ctx.workdir, with_overrides(config, overrides), [], ctx.parent_run_id, ctx.experiment)
    artifact = build(run_ctx, "pretrain", done, f"pretrain-d{run['depth']}-{run['tokens_planned']}")
    manifest = artifact.manifest
    tokens = int(manifest["counts"]["tokens"])
    return {**run, "tokens": tokens, "flops": 6.0 * run["params"] * tokens,
            "val_loss": float(manifest["metrics"]["val_loss"]), "artifact": str(artifact.path)}


@flow(name="scaling")
def scaling_sweep(
    preset: str = "tiny",
    workdir: str = "./work",
    overrides: list[str] = [],
    depths: list[int] = DEPTHS,
    budgets: list[int] | None = None,
    flops: list[float] | None = None,
    forecast_depth: int | None = None,
    forecast_tokens: int | None = None,
    budget_flops: float | None = None,
    bootstrap: int = 200,
    lr: float = LR,
) -> dict:
    """Pretrain a grid of small models (depths x token budgets, or depths on IsoFLOP slices), fit the scaling law
    with intervals, and check a forecast for a larger run (default: two layers deeper than the sweep's deepest, at
    its largest budget) by training it. Returns the fit (also written to <workdir>/scaling/<key>/fit.json)."""
    from model.tokenizer import Tokenizer
    from tasks.core import registry
    from tasks.core.config import load_config
    from tasks.core.stage import Context
    from tasks.core.tracking import Run
    from tasks.pretrain import fit_file

    log = get_run_logger()
    workdir = str(Path(workdir).expanduser().resolve())
    os.makedirs(workdir, exist_ok=True)
    config = load_config(preset, overrides)
    check_grid(depths, budgets, flops)
    flow_run = get_run_context().flow_run
    parent = Run.start(Path(workdir), "scaling", f"scaling-{flow_run.name}",
                       tags={"prefect_flow_run_id": str(flow_run.id), "preset": config.preset})
    ctx = Context(workdir, config, [], parent.run_id, "scaling")
    try:
        done: dict = {}
        for name in registry.upstream(["tokenize", "train_tokenizer"]):
            done[name] = build(ctx, name, done)
        vocab = Tokenizer.from_file(done["train_tokenizer"].path / "tokenizer.json").vocab_size
        runs = plan(config, vocab, depths, budgets, flops)
        parent.params({"preset": preset, "overrides": overrides, "depths": depths, "budgets": budgets,
                       "flops": flops, "runs": len(runs), "lr": lr})
        rows = []
        for i, run in enumerate(runs):
            rows.append(_train(ctx, config, done, run, lr))
            log.info(f"scaling: run {i + 1}/{len(runs)} depth {run['depth']} N {run['params']:,} "
                     f"D {rows[-1]['tokens']:,} -> val_loss {rows[-1]['val_loss']:.4f}")
        report = analyse(rows, bootstrap, budget_flops)
        depth_f = forecast_depth or max(depths) + 2
        batch, seq_len = config.pretrain.batch_size, config.model.seq_len  # predicted for the tokens it will train
        tokens_f = whole_steps(forecast_tokens or max(r["tokens"] for r in rows), batch, seq_len) * batch * seq_len
        target = {"depth": depth_f, "params": law_params(config.model, vocab, depth_f), "tokens_planned": tokens_f,
                  "flops_slice": None}
        report["forecast"] = forecast(report, target)
        log.info(f"scaling: forecast for depth {depth_f}, N {target['params']:,}, D {tokens_f:,}: "
                 f"val_loss {report['forecast']['predicted']:.4f}; training it to check")
        actual = _train(ctx, config, done, target, lr)
        report["forecast"] |= {"actual": actual["val_loss"], "tokens": actual["tokens"],
                               "artifact": actual["artifact"]}
        report["forecast"]["rel_error"] = (report["forecast"]["predicted"] - actual["val_loss"]) / actual["val_loss"]
        report |= {"runs": rows, "data": {"tokenize": done["tokenize"].build_id,
                                          "train_tokenizer": done["train_tokenizer"].build_id},
                   "model": config.model.model_dump(exclude={"depth"}), "batch_size": config.pretrain.batch_size,
                   "lr": lr}
        out = fit_file(Path(workdir), done["tokenize"].build_id)
        publish(report, out, parent, Path(workdir))
    except BaseException:
        parent.end("FAILED")
        raise
    parent.end()
    f = report["forecast"]
    log.info(f"scaling: law {report['law']}; {report['optimal']['tokens_per_param']:.1f} tokens/param at "
             f"{report['optimal']['flops']:.3g} FLOPs; forecast {f['predicted']:.4f} vs actual {f['actual']:.4f} "
             f"({100 * f['rel_error']:+.2f}%); written to {out}")
    return report


def analyse(rows: list[dict], bootstrap: int, budget_flops: float | None) -> dict:
    """The fits: the law with intervals, IsoFLOP minima and their power law, the compute-optimal split of
    `budget_flops` (default: 10x the sweep's largest run)."""
    import numpy as np

    from model import scaling

    n, d, loss = (np.array([r[k] for r in rows], dtype=float) for k in ("params", "tokens", "val_loss"))
    law = scaling.fit_law(n, d, loss)
    budget = budget_flops or 10 * float(max(6 * n * d))
    intervals = scaling.bootstrap_law(n, d, loss, samples=bootstrap, flops=budget) if bootstrap else {}
    sliced = all(r["flops_slice"] for r in rows)
    # runs on a slice are grouped by the slice's C: their D was rounded up to whole steps
    points = (n, np.array([r["flops_slice"] for r in rows]) / (6 * n), loss) if sliced else \
        scaling.isoflop_slices(n, d, loss)
    minima = scaling.isoflop_minima(*points) if len(points[0]) else []
    isoflop = {"minima": minima, "points": [list(map(float, p)) for p in zip(*points, strict=True)],
               "from": "runs on IsoFLOP slices" if sliced else "each size's losses interpolated in log C"}
    if len(minima) >= 2:
        k, a = scaling.power_law([m["flops"] for m in minima], [m["params"] for m in minima])
        isoflop["params_power_law"] = {"k": k, "a": a}
    optimal = {"flops": budget, **law.optimal(budget)}
    residuals = (law.loss(n, d) - loss) / loss
    return {"law": law.as_dict(), "intervals": intervals, "optimal": optimal, "isoflop": isoflop,
            "fit_rel_error_max": float(np.abs(residuals).max()), "params_exponent": law.beta / (law.alpha + law.beta)}


def forecast(report: dict, target: dict) -> dict:
    from model.scaling import Law

    law = Law(**report["law"])
    return {"depth": target["depth"], "params": target["params"], "tokens_planned": target["tokens_planned"],
            "predicted": float(law.loss(target["params"], target["tokens_planned"]))}


def publish(report: dict, out: Path, parent, workdir: Path) -> None:
    """fit.json (atomic), the plots, a Prefect table and markdown summary, and all of it in the parent MLflow run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from model.files import atomic_write_text
    from tasks.core import plots
    from tasks.core.stage import image_artifact

    out.parent.mkdir(parents=True, exist_ok=True)
    law, f = report["law"], report["forecast"]
    pictures = plots.scaling_plots(report, out.parent)
    atomic_write_text(out, json.dumps(report, indent=2))
    parent.metrics({**{f"law.{k}": v for k, v in law.items()},
                    "optimal.tokens_per_param": report["optimal"]["tokens_per_param"],
                    "forecast.predicted": f["predicted"], "forecast.actual": f["actual"],
                    "forecast.rel_error": f["rel_error"]})
    parent.log_file(out)
    table = [{k: r[k] for k in ("depth", "params", "tokens", "flops", "val_loss")} for r in report["runs"]]
    create_table_artifact(table, key="scaling-runs", description="scaling sweep: one pretrain run per row")
    parent.log_text(json.dumps(table, indent=2), "scaling-runs.json")
    summary = summary_markdown(report)
    create_markdown_artifact(summary, key="scaling-fit", description="scaling law fit and forecast")
    parent.log_text(summary, "scaling-fit.md")
    for p in pictures:
        image_artifact(parent, workdir, f"scaling-{p.stem}".replace("_", "-"), p, p.stem, p.stem.replace("_", " "))


def summary_markdown(report: dict) -> str:
    law, ci, opt, f = report["law"], report["intervals"], report["optimal"], report["forecast"]

    def with_ci(key: str, fmt: str) -> str:
        lo_hi = ci.get(key)
        return f"{law[key]:{fmt}}" + (f" [{lo_hi[0]:{fmt}}, {lo_hi[1]:{fmt}}]" if lo_hi else "")

    ratio_ci = " [{:.1f}, {:.1f}]".format(*ci["tokens_per_param"]) if "tokens_per_param" in ci else ""
    lines = [
        "## Scaling law L(N, D) = E + A / N^alpha + B / D^beta",
        f"{len(report['runs'])} runs; fit's largest relative error {100 * report['fit_rel_error_max']:.2f}%",
        "",
        "| parameter | fit [95% bootstrap interval] |",
        "|---|---|",
        *(f"| {k} | {with_ci(k, fmt)} |" for k, fmt in (("E", ".3f"), ("A", ".4g"), ("B", ".4g"), ("alpha", ".3f"),
                                                        ("beta", ".3f"))),
        "",
        f"**Compute-optimal at {opt['flops']:.3g} FLOPs:** N = {opt['params']:,.0f}, D = {opt['tokens']:,.0f}, "
        f"**{opt['tokens_per_param']:.1f} tokens per parameter**{ratio_ci} (Chinchilla: ~20), predicted loss "
        f"{opt['loss']:.4f}.",
        "",
        f"**Forecast:** depth {f['depth']} (N = {f['params']:,}), D = {f['tokens']:,}: predicted val loss "
        f"{f['predicted']:.4f}, trained {f['actual']:.4f}: **{100 * f['rel_error']:+.2f}%**.",
    ]
    iso = report["isoflop"]
    if iso["minima"]:
        lines += ["", f"**IsoFLOP minima** ({iso['from']}):", "", "| FLOPs | N_opt | loss | sizes |",
                  "|---|---|---|---|",
                  *(f"| {m['flops']:.3g} | {m['params']:,.0f} | {m['loss']:.4f} | {m['runs']} |"
                    for m in iso["minima"])]
        if "params_power_law" in iso:
            lines.append(f"\nN_opt ~ C^{iso['params_power_law']['a']:.3f} "
                         f"(the law's beta/(alpha+beta): {report['params_exponent']:.3f})")
    else:
        lines += ["", f"**IsoFLOP minima:** none inside the sweep ({iso['from']}): widen the depths or budgets."]
    return "\n".join(lines)
