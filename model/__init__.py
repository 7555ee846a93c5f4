"""The shared torch package: model config and transformer, tokenizer, chat format, sampling, training, checkpoints.

Import from the submodules (`from model.gpt import GPT`); the names below load lazily so that `model.tokenizer`
users (e.g. data workers) do not pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"GPTConfig": "model.config", "chinchilla_tokens": "model.config", "GPT": "model.gpt",
         "Tokenizer": "model.tokenizer", "train_bpe": "model.tokenizer", "Engine": "model.engine",
         "TrainConfig": "model.trainer", "train": "model.trainer",
         "save_model": "model.checkpoint", "load_model": "model.checkpoint"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
