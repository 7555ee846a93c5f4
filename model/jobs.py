"""Training jobs the `pretrain` and `finetune` tasks run: each builder turns JSON arguments (paths and sizes) into a
model and its batches. The same builder runs in the task's process for one-process training and in every rank that
model/launch.py starts, so all ranks see the same model and data. No Prefect or MLflow here: workers import it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.tokens.shards import TokenBatches, load_tokens
from model.checkpoint import load_model
from model.config import GPTConfig
from model.engine import Engine
from model.gpt import GPT
from model.launch import TrainJob
from model.sft import ConversationBatches
from model.tokenizer import Tokenizer


def pretrain_job(args: dict[str, Any]) -> TrainJob:
    """args: tokenizer (tokenizer.json), shards (dir of {train,val}-*.bin), model (GPTConfig dict), batch_size,
    seed, eval_batches, windows ("random" | "sequential"), sample_prompt (or None), init_from (an HF dir or None)."""
    config = GPTConfig.from_dict(args["model"])
    tok = Tokenizer.from_file(args["tokenizer"])
    shards = Path(args["shards"])
    train_tokens, val_tokens = load_tokens(shards, "train"), load_tokens(shards, "val")
    torch.manual_seed(args["seed"])  # the same initial weights in every process and every rerun
    model = GPT(config)
    batch_size, seq_len, seed = args["batch_size"], config.seq_len, args["seed"]
    train_batches = TokenBatches(train_tokens, batch_size, seq_len, seed, windows=args.get("windows", "random"))
    val = TokenBatches(val_tokens, batch_size, seq_len, seed + 1)

    def val_batches():
        return ((x, y, None) for x, y in val.sequential(args["eval_batches"]))

    # nats/token -> bits/byte of exactly the val windows the trainer evaluates
    targets = np.concatenate([y.numpy().ravel() for _, y, _ in val_batches()])
    nats_to_bpb = len(targets) / (math.log(2) * max(1, int(np.array(tok.token_bytes())[targets].sum())))
    prompt = args.get("sample_prompt")
    sample_fn = (lambda m: Engine(m, tok).complete(prompt, max_new_tokens=32)) if prompt else None
    return TrainJob(model, train_batches, val_batches, sample_fn,
                    info={"nats_to_bpb": nats_to_bpb, "train_tokens": len(train_tokens), "tokenizer": tok})


PROBE = [{"role": "user", "content": "Who made you?"}]


def finetune_job(args: dict[str, Any]) -> TrainJob:
    """args: base (our model dir with tokenizer.json), init_from (a Hugging Face Llama dir that replaces base, or
    None), labels (ingest_labels artifact dir), batch_size, seed, eval_batches, max_seq_len (caps imported models)."""
    from data.chat.labels import read_jsonl

    if args.get("init_from"):
        from model.hf import load_hf
        model, tok = load_hf(args["init_from"], seq_len=args.get("max_seq_len"))
    else:
        base = Path(args["base"])
        model, tok = load_model(base), Tokenizer.from_file(base / "tokenizer.json")
    labels = Path(args["labels"])
    train = [r["messages"] for r in read_jsonl(labels / "conversations_train.jsonl")]
    val = [r["messages"] for r in read_jsonl(labels / "conversations_val.jsonl")]
    seq_len = model.config.seq_len
    train_batches = ConversationBatches(train, tok, args["batch_size"], seq_len, args["seed"])
    # no val conversations, no val loss: a slice of the train set under that name would only show memorization
    val_set = ConversationBatches(val, tok, args["batch_size"], seq_len, args["seed"] + 1) if val else None
    return TrainJob(model, train_batches, (lambda: val_set.sequential(args["eval_batches"])) if val_set else None,
                    lambda m: Engine(m, tok).chat(PROBE, max_new_tokens=32),
                    info={"tokenizer": tok, "conversations": len(train_batches),
                          "val_conversations": len(val_set) if val_set else 0})
