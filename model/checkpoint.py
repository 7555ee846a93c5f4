"""Checkpoints: model weights (safetensors) + config.json, and resumable training states written atomically."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from model.config import GPTConfig
from model.files import atomic_path, atomic_write_text, replace_dir
from model.gpt import GPT

_CKPT_RE = re.compile(r"^ckpt_(\d{6,})$")


def unwrap(model: torch.nn.Module) -> GPT:
    """The plain GPT inside a DDP and/or torch.compile wrapper."""
    while True:
        if hasattr(model, "module"):  # DDP / DeepSpeed engine
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def save_model(model: torch.nn.Module, directory: str | os.PathLike) -> None:
    """Write model.safetensors and config.json into `directory`; each file is written to a temp name then renamed."""
    model = unwrap(model)
    directory = Path(directory)
    state = model.state_dict()
    if model.config.tie_embeddings:  # one tensor under two names: keep the embedding's (load_model re-ties it)
        state.pop("lm_head.weight", None)
    # copies: under DeepSpeed ZeRO the parameters are views into one flat buffer, which safetensors refuses
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        safetensors.torch.save_file(tensors, tmp, metadata={"format": "pt"})
    atomic_write_text(directory / "config.json", json.dumps(model.config.to_dict(), indent=2) + "\n")


def _read_config(directory: Path) -> GPTConfig:
    path = directory / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no config.json, not a model directory")
    return GPTConfig.from_dict(json.loads(path.read_text()))


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> GPT:
    directory = Path(directory)
    config = _read_config(directory)
    weights = directory / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{directory}: no model.safetensors")
    with torch.device(device):
        model = GPT(config)
    safetensors.torch.load_model(model, str(weights), strict=True, device=str(device))
    return model


def save_training_state(directory: str | os.PathLike, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None, step: int, extra: dict[str, Any], keep: int = 2,
                        staging: Path | None = None) -> Path:
    """Write `directory/ckpt_{step:06d}/` (model.safetensors, config.json, optimizer.pt, rng.pt, state.json).

    Everything goes into a hidden temp dir that is renamed into place last, so an interrupted save never looks like a
    checkpoint. Then only the newest `keep` checkpoints are kept. `staging` is a hidden temp dir the caller already
    filled (DeepSpeed's partitioned optimizer state); optimizer None writes no optimizer.pt.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        state_text = json.dumps({"step": step, "extra": extra}, indent=2) + "\n"
    except TypeError as e:
        raise TypeError(f"save_training_state: 'extra' must be JSON-serializable: {e}") from None
    final = directory / f"ckpt_{step:06d}"
    tmp = staging or Path(tempfile.mkdtemp(dir=directory, prefix=f".tmp_ckpt_{step:06d}_"))
    try:
        os.chmod(tmp, 0o755)
        save_model(model, tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        (tmp / "state.json").write_text(state_text)
        replace_dir(tmp, final)  # re-saving the same step (e.g. after a resume) swaps the old one out whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _CKPT_RE.match(p.name)) and (p / "state.json").exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    ckpts = _checkpoints(Path(directory))
    return ckpts[-1] if ckpts else None


def load_training_state(path: str | os.PathLike, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restore weights, optimizer and RNG from a checkpoint dir into the given objects; return state.json's contents."""
    path = Path(path)
    if not (path / "state.json").exists():
        raise FileNotFoundError(f"{path}: no state.json, not a complete training checkpoint")
    model = unwrap(model)
    config = _read_config(path)
    if config != model.config:
        raise ValueError(f"{path}: checkpoint config {config} does not match the model's {model.config}")
    device = next(model.parameters()).device
    safetensors.torch.load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))
    if optimizer is not None:
        if not (path / "optimizer.pt").exists():
            raise FileNotFoundError(f"{path}: no optimizer.pt (a DeepSpeed checkpoint? resume it with strategy "
                                    f"deepspeed and the same world size)")
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    restore_rng(path)
    return read_state(path)


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "state.json").read_text())


def restore_rng(path: Path) -> None:
    rng_path = Path(path) / "rng.pt"
    if rng_path.exists():
        rng = torch.load(rng_path, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
