"""Stage `pretrain`: train the Llama-style GPT on the token shards; the final model lands in the artifact's `model/`."""

from __future__ import annotations

import math
import shutil

import numpy as np

from data.shards import TokenBatches, load_tokens
from model.checkpoint import save_model
from model.config import GPTConfig, chinchilla_tokens
from model.engine import Engine
from model.gpt import GPT
from model.tokenizer import Tokenizer
from tasks.stage import StageRun, stage
from tasks.training import run_training


def model_config(s: StageRun, vocab_size: int) -> GPTConfig:
    m = s.cfg.model
    return GPTConfig.from_depth(
        m.depth, vocab_size, m.seq_len, aspect_ratio=m.aspect_ratio, head_dim=m.head_dim, kv_ratio=m.kv_ratio
    )


@stage(
    "pretrain",
    inputs=("tokenize", "train_tokenizer"),
    sections=("model", "pretrain"),
    version="1",
    main_metric="val_loss",
    resumable=True,
)
def pretrain(s: StageRun) -> dict:
    cfg = s.cfg.pretrain
    tok_path = s.inputs["train_tokenizer"].path / "tokenizer.json"
    tok = Tokenizer.from_file(tok_path)
    shards = s.inputs["tokenize"].path / "shards"
    train_tokens, val_tokens = load_tokens(shards, "train"), load_tokens(shards, "val")

    model = GPT(model_config(s, tok.vocab_size))
    n_params = model.num_params()
    tokens_planned = cfg.steps * cfg.batch_size * cfg.grad_accum * s.cfg.model.seq_len
    s.log.info(
        f"pretrain: {n_params / 1e6:.2f}M params, {len(train_tokens):,} train tokens, "
        f"{tokens_planned:,} planned "
        f"({tokens_planned / max(1, chinchilla_tokens(n_params)):.2f}x the 20 tokens/param budget)"
    )
    s.mlflow.params({"model.params": n_params, "model.config": model.config.to_dict()})

    train_batches = TokenBatches(train_tokens, cfg.batch_size, s.cfg.model.seq_len, cfg.seed)
    val = TokenBatches(val_tokens, cfg.batch_size, s.cfg.model.seq_len, cfg.seed + 1)
    prompt = s.cfg.eval_base.samples[0]

    def sample(m) -> str:
        return Engine(m, tok).complete(prompt, max_new_tokens=32)

    val_batches = lambda: ((x, y, None) for x, y in val.sequential(cfg.eval_batches))  # noqa: E731
    # bits per byte of the val windows the trainer evaluates (eval_base computes it exactly, per target token)
    targets = np.concatenate([y.numpy().ravel() for _, y, _ in val_batches()])
    nats_to_bpb = len(targets) / (math.log(2) * max(1, int(np.array(tok.token_bytes())[targets].sum())))
    result = run_training(s, model, cfg, train_batches, val_batches, sample, nats_to_bpb)
    save_model(model.to("cpu"), s.out / "model")
    shutil.copy(tok_path, s.out / "model" / "tokenizer.json")
    val_loss = result.get("final_val_loss")
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
        },
        "metrics": metrics,
    }
