"""Tiny assistants for the serving tests: random weights and a real BPE tokenizer, saved as a finetune stage leaves
them, and registered in a workdir's real MLflow registry."""

from pathlib import Path

import torch

from model.checkpoint import save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import train_bpe

TEXT = ("The quick brown fox jumps over the lazy dog. 12 + 30 = 42. Paris is the capital of France. "
        "How many letters are in the word banana? There are six letters. ") * 40


def make_model_dir(folder: Path, seed: int = 0, seq_len: int = 128) -> Path:
    tok = train_bpe([TEXT], vocab_size=400)
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=tok.vocab_size, seq_len=seq_len, n_layer=2, n_embd=64, n_head=4, n_kv_head=2,
                    mlp_hidden=160)
    model = GPT(cfg)
    with torch.no_grad():  # sharpen the random model: greedy choices far from ties, answers that vary
        model.lm_head.weight.mul_(8)
        model.lm_head.weight[tok.special_id("<|assistant_end|>")] *= 0.05  # answers long enough to stream
        model.lm_head.weight[tok.special_id("<|user_start|>")] *= 0.05
        model.lm_head.weight[tok.bos_id] *= 0.05
    save_model(model, folder)
    tok.save(folder / "tokenizer.json")
    return folder


def register(workdir: Path, folder: Path, alias: str = "production") -> str:
    """Register `folder` as a new `assistant` version in the workdir's MLflow store and point `alias` at it."""
    from tasks.core import model_registry
    from tasks.core.tracking import client, experiment_id

    c = client(workdir)
    run = c.create_run(experiment_id(c, "serve-tests", workdir))
    version = model_registry.register(c, "assistant", folder, run.info.run_id, {})
    c.set_terminated(run.info.run_id)
    model_registry.move_alias(c, "assistant", alias, version)
    return version
