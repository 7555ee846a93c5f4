"""Stage `pretrain`: train the Llama-style GPT on the token shards; the final model lands in the artifact's `model/`.

With `steps: auto` the token budget is compute-optimal for the model's size: from the scaling law `factory scaling`
fitted on the same token shards (and tokenizer, which they were made with) for the same model family, else 20
tokens per parameter (Chinchilla's ratio). The fit in use is part of the key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from model.config import ModelSection, PretrainConfig, chinchilla_tokens
from model.tokenizer import Tokenizer
from tasks.core.stage import StageRun, stage


def fit_file(workdir: Path, tokenize_key: str) -> Path:
    """Where `factory scaling` writes its fit for the token shards with this key."""
    return Path(workdir) / "scaling" / tokenize_key / "fit.json"


def scaling_fit(workdir: Path, tokenize_key: str, model) -> tuple[dict | None, str]:
    """(the sweep's fit for these token shards, or None; why). A fit for another model family (aspect ratio, head
    size, context) does not apply."""
    path = fit_file(workdir, tokenize_key)
    if not path.is_file():
        return None, f"no scaling fit for these token shards ({path}): `factory scaling` makes one"
    fit = json.loads(path.read_text())
    family = model.model_dump(exclude={"depth"})
    if fit.get("model") != family:
        return None, f"the scaling fit in {path} is for the model family {fit.get('model')}, not {family}"
    return fit, f"the scaling fit {path}"


def largest_run_flops(fit: dict) -> float:
    return max(r["flops"] for r in fit["runs"])


def fitted_tokens(fit: dict, n_law: int, source: str) -> tuple[int | None, str]:
    """(the fit's compute-optimal tokens for a model of n_law parameters, or None; why): None when that run would
    cost over 100x the sweep's largest (model.scaling.trusted_tokens)."""
    from model.scaling import REACH, Law, trusted_tokens

    law, largest = Law(**fit["law"]), largest_run_flops(fit)
    tokens = trusted_tokens(law, n_law, largest)
    if tokens is None:
        wanted = law.tokens_for(n_law)
        return None, (f"{source} puts this size's optimum at {wanted:.3g} tokens ({6 * n_law * wanted:.3g} FLOPs), "
                      f"over {REACH:.0f}x its largest run ({largest:.3g} FLOPs): an unchecked extrapolation, so 20 "
                      f"tokens/param (a sweep nearer this size would answer)")
    return int(tokens), f"{tokens / n_law:.1f} tokens per (non-embedding) param from {source}"


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    if cfg.pretrain.steps != "auto":
        return {}
    fit, _ = scaling_fit(workdir, inputs["tokenize"].build_id, cfg.model)
    return {"scaling_law": fit and {"law": fit["law"], "largest_run_flops": largest_run_flops(fit)}}


def follower(cfg) -> bool:
    """Nodes other than 0 of a multi-node run train, but node 0 writes the artifact."""
    return cfg.pretrain.node_rank > 0


@stage("pretrain", cycle="yearly", inputs=("tokenize", "train_tokenizer"),
       config={"model": ModelSection, "pretrain": PretrainConfig}, main_metric="val_loss", resumable=True,
       follower=follower, external=_external)
def pretrain(s: StageRun) -> dict:
    # torch-using imports inside: declaring the stage stays fast (`factory` checks its input first)
    import torch

    from model.checkpoint import save_model
    from model.gpt import GPT
    from model.jobs import pretrain_job
    from model.scaling import law_params
    from tasks.core.training import run_training

    cfg = s.cfg.pretrain
    tok_path = s.inputs["train_tokenizer"].path / "tokenizer.json"
    config = s.cfg.model.gpt_config(Tokenizer.from_file(tok_path).vocab_size)
    with torch.device("meta"):  # counted without allocating (the job builds the real model)
        shape = GPT(config)
    n_params, n_law = shape.num_params(), law_params(shape)
    seq_len = s.cfg.model.seq_len
    if cfg.steps == "auto" or cfg.grad_accum == "auto":  # the compute-optimal budget at the optimal batch
        tokens, why = None, "20 tokens/param"
        if cfg.steps == "auto":
            fit, source = scaling_fit(s.workdir, s.inputs["tokenize"].build_id, s.cfg.model)
            tokens, why = fitted_tokens(fit, n_law, source) if fit else (None, f"{source}; 20 tokens/param")
            s.log.info(f"pretrain: steps auto: {why}")
            s.mlflow.params({"pretrain.tokens_per_param": tokens / n_law if tokens else 20})
        cfg = cfg.budgeted(n_params, seq_len, tokens)
        s.log.info(f"pretrain: depth {s.cfg.model.depth} -> {cfg.steps} steps x grad_accum {cfg.grad_accum} ({why})")
    tokens_planned = cfg.steps * cfg.batch_size * cfg.grad_accum * cfg.world_size * seq_len
    s.log.info(
        f"pretrain: {n_params / 1e6:.2f}M params, {tokens_planned:,} tokens planned "
        f"({tokens_planned / max(1, chinchilla_tokens(n_params)):.2f}x the 20 tokens/param budget)"
    )
    s.mlflow.params({"model.params": n_params, "model.config": config.to_dict(),
                     "pretrain.steps_resolved": cfg.steps, "pretrain.grad_accum_resolved": cfg.grad_accum})
    args = {
        "tokenizer": str(tok_path),
        "shards": str(s.inputs["tokenize"].path / "shards"),
        "model": config.to_dict(),
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "eval_batches": cfg.eval_batches,
        "windows": cfg.windows,
        "sample_prompt": s.cfg.eval_base.samples[0],
    }
    job, result = run_training(s, cfg, pretrain_job, args)
    if follower(s.cfg):
        return {}
    s.log.info(f"pretrain: {job.info['train_tokens']:,} train tokens in the shards")
    save_model(job.model.to("cpu"), s.out / "model")
    shutil.copy(tok_path, s.out / "model" / "tokenizer.json")
    val_loss, nats_to_bpb = result.get("final_val_loss"), job.info["nats_to_bpb"]
    metrics = {
        **{k: v for k, v in result.items() if isinstance(v, (int, float))},
        "params": n_params,
        "val_loss": val_loss,
        "val_bpb": val_loss * nats_to_bpb if val_loss is not None else None,
        "train_loss": result.get("final_loss"),
    }
    metrics = {k: v for k, v in metrics.items() if v is not None}
    return {
        "counts": {
            "steps": result["steps"],
            "tokens": result["tokens"],
            "resumed_from_step": result["resumed_from_step"],
            "skipped_steps": result.get("skipped_steps", 0),
        },
        "metrics": metrics,
    }
