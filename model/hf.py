"""Hugging Face interoperability: export our model as a standard `LlamaForCausalLM` directory (what transformers,
vLLM and lm-evaluation-harness load), and import a Llama-architecture checkpoint to finetune it here.

Our parameter names are Hugging Face's without the `model.` prefix, and our RoPE uses the same rotate-half layout,
so both directions are a rename plus a config translation. No transformers import: plain json, safetensors, tokenizers.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from tokenizers import AddedToken, processors
from tokenizers import Tokenizer as HFTokenizer

from model.chat import BOS, ROLE_MARKERS, chat_template
from model.checkpoint import load_model, unwrap
from model.config import GPTConfig
from model.files import replace_dir
from model.gpt import GPT, rope_tables
from model.tokenizer import SPECIAL_TOKENS, Tokenizer

EOS, PAD = ROLE_MARKERS["assistant"][1], "<|pad|>"  # generation ends where the assistant's turn does
_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


# --------------------------------------------------------------------------------------------------- export


def hf_config(config: GPTConfig, tok: Tokenizer, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """LlamaConfig fields for our GPTConfig. RoPE is written both ways: `rope_theta` + `rope_scaling` (transformers
    4.x, vLLM) and `rope_parameters` (transformers 5); each version ignores the form it does not use."""
    dtype_name = _DTYPES.get(dtype, "float32")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.special_id(EOS),
        "pad_token_id": tok.pad_id,
    }


def _tokenizer_files(tok: Tokenizer, seq_len: int) -> dict[str, Any]:
    """tokenizer.json (adding <|bos|> in front like Llama's does, since every pretraining document started with it),
    tokenizer_config.json and special_tokens_map.json for transformers' PreTrainedTokenizerFast."""
    data = json.loads(tok.hf.to_str())
    hf = HFTokenizer.from_str(json.dumps(data))
    hf.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, tok.bos_id)]
    )
    added = {
        str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for t in data["added_tokens"]
    }
    specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "unk_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": seq_len,
        "padding_side": "left",  # decoder-only batched generation pads on the left
        "added_tokens_decoder": added,
        "additional_special_tokens": [s for s in SPECIAL_TOKENS if s not in specials.values()],
        "chat_template": chat_template(),
    }
    return {"tokenizer.json": hf.to_str(pretty=True), "tokenizer_config.json": config,
            "special_tokens_map.json": {**specials, "additional_special_tokens": config["additional_special_tokens"]}}


def _hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face names (a tied lm_head is left out, as transformers saves it)."""
    out = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            if not model.config.tie_embeddings:
                out[name] = p.detach().contiguous().cpu()
        else:
            out[f"model.{name}"] = p.detach().contiguous().cpu()
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2) + "\n")


def export_hf(model: GPT | torch.nn.Module | str | os.PathLike, out_dir: str | os.PathLike,
              tokenizer: Tokenizer | str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write a Hugging Face LlamaForCausalLM directory at `out_dir` from our model directory (model.safetensors,
    config.json, tokenizer.json) or from a GPT plus `tokenizer`. Built in a temp dir beside `out_dir`, then renamed
    into place; a non-empty `out_dir` is only replaced with `overwrite=True`. Returns `out_dir`."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"export_hf: {out} exists and is not empty (pass overwrite=True to replace it)")
    if isinstance(model, (str, os.PathLike)):
        source = Path(model)
        tokenizer = source / "tokenizer.json" if tokenizer is None else tokenizer
        model = load_model(source)
    if tokenizer is None:
        raise ValueError("export_hf: a GPT needs its tokenizer (a Tokenizer or a tokenizer.json path)")
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(tokenizer)
    gpt = unwrap(model)
    if tok.vocab_size > gpt.config.vocab_size:
        raise ValueError(f"export_hf: tokenizer has {tok.vocab_size} tokens but the model only "
                         f"{gpt.config.vocab_size} embedding rows")
    dtype = gpt.embed_tokens.weight.dtype

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp_"))
    try:
        os.chmod(tmp, 0o755)
        safetensors.torch.save_file(_hf_state_dict(gpt), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", hf_config(gpt.config, tok, dtype))
        _write_json(tmp / "generation_config.json", {
            "bos_token_id": tok.bos_id,
            # a chat turn ends at <|assistant_end|>; a document ends where the next <|bos|> would start
            "eos_token_id": [tok.special_id(EOS), tok.bos_id],
            "pad_token_id": tok.pad_id,
        })
        for name, data in _tokenizer_files(tok, gpt.config.seq_len).items():
            _write_json(tmp / name, data)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------------------------------- import


def _rope_theta(cfg: dict[str, Any], where: Path) -> float:
    """The RoPE base of a plain (unscaled) rotary embedding; any scaling or partial rotation is refused."""
    theta = cfg.get("rope_theta")
    for field in ("rope_scaling", "rope_parameters"):
        params = cfg.get(field)
        if not params:
            continue
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise ValueError(f"{where}: {field}.rope_type={kind!r} is not supported (only plain RoPE)")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError(f"{where}: {field}.partial_rotary_factor is not supported (only full RoPE)")
        theta = params.get("rope_theta", theta)
    if cfg.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{where}: partial_rotary_factor={cfg['partial_rotary_factor']} is not supported")
    return float(theta if theta is not None else 10000.0)


def gpt_config(cfg: dict[str, Any], where: Path, seq_len: int | None = None) -> GPTConfig:
    """Our GPTConfig for a Hugging Face Llama (or Mistral without sliding window) config.json; a clear ValueError
    naming the field for anything our transformer does not compute the same way. Defaults are LlamaConfig's."""
    model_type = cfg.get("model_type")
    if model_type not in ("llama", "mistral"):
        raise ValueError(f"{where}: model_type={model_type!r} is not supported (llama or mistral)")
    for field in ("attention_bias", "mlp_bias"):
        if cfg.get(field, False):
            raise ValueError(f"{where}: {field}=true is not supported (our transformer has no biases)")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{where}: hidden_act={act!r} is not supported (SwiGLU uses silu)")
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if field not in cfg:
            raise ValueError(f"{where}: config.json lacks {field!r}")
    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    if head_dim * n_head != cfg["hidden_size"]:
        raise ValueError(f"{where}: head_dim={head_dim} with {n_head} heads != hidden_size={cfg['hidden_size']} "
                         f"(not supported: our head_dim is hidden_size / num_attention_heads)")
    max_pos = cfg.get("max_position_embeddings", 2048)
    length = min(max_pos, seq_len) if seq_len else max_pos
    window = cfg.get("sliding_window")
    if window is not None and window < length:
        raise ValueError(f"{where}: sliding_window={window} < seq_len {length} is not supported "
                         f"(pass seq_len <= {window} to load it as full attention)")
    return GPTConfig(
        vocab_size=cfg.get("vocab_size", 32000),
        seq_len=length,
        n_layer=cfg["num_hidden_layers"],
        n_embd=cfg["hidden_size"],
        n_head=n_head,
        n_kv_head=cfg.get("num_key_value_heads") or n_head,
        mlp_hidden=cfg["intermediate_size"],
        rope_theta=_rope_theta(cfg, where),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint: sharded safetensors (index.json), single safetensors, or pytorch_model.bin."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if files:
        weights = {}
        for name in files:
            weights.update(safetensors.torch.load_file(str(directory / name), device="cpu"))
        return weights
    for name in ("pytorch_model.bin", "model.pt"):
        if (directory / name).exists():
            return torch.load(directory / name, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no *.safetensors or pytorch_model.bin weights")


def _our_state_dict(weights: dict[str, torch.Tensor], config: GPTConfig, where: Path) -> dict[str, torch.Tensor]:
    """Hugging Face names -> ours (drop `model.`), fp32; rotary inv_freq buffers (old checkpoints) are skipped."""
    state = {}
    for name, t in weights.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        state[name.removeprefix("model.")] = t.to(torch.float32)
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    elif "lm_head.weight" not in state:
        raise ValueError(f"{where}: no lm_head.weight and tie_word_embeddings is false")
    return state


def _hf_tokenizer(directory: Path) -> tuple[Tokenizer, list[str]]:
    """The checkpoint's tokenizer.json wrapped as ours; chat specials it lacks are added (returned by name)."""
    path = directory / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no tokenizer.json (a fast tokenizer file is needed)")
    hf = HFTokenizer.from_file(str(path))
    hf.no_truncation()
    hf.no_padding()
    missing = [s for s in SPECIAL_TOKENS if hf.token_to_id(s) is None]
    if missing:
        hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in missing])
    return Tokenizer(hf), missing


def load_hf(directory: str | os.PathLike, device: str | torch.device = "cpu",
            seq_len: int | None = None) -> tuple[GPT, Tokenizer]:
    """Our GPT (fp32) and Tokenizer from a Hugging Face Llama-architecture directory. `seq_len` caps
    max_position_embeddings (our RoPE tables are seq_len x head_dim). Chat special tokens the tokenizer lacks are
    added, and their embedding / lm_head rows start as the mean of the existing rows, so the model can be
    finetuned in our chat format."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{directory}: no config.json, not a Hugging Face model directory")
    config = gpt_config(json.loads(config_path.read_text()), config_path, seq_len)
    state = _our_state_dict(_read_weights(directory), config, directory)
    tok, added = _hf_tokenizer(directory)

    rows = max(config.vocab_size, tok.vocab_size)
    if added:
        new_ids = [tok.hf.token_to_id(s) for s in added]
        heads = ["embed_tokens.weight"] + ([] if config.tie_embeddings else ["lm_head.weight"])
        for name in heads:
            old = state[name]
            grown = torch.cat([old, old.new_empty(rows - old.shape[0], old.shape[1])])
            grown[new_ids] = old.mean(dim=0)
            state[name] = grown
        config.vocab_size = rows

    with torch.device("meta"):
        model = GPT(config)
    expected = set(model.state_dict()) - ({"lm_head.weight"} if config.tie_embeddings else set())
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"{directory}: weights do not match the config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    if config.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True, assign=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    cos, sin = rope_tables(config.seq_len, config.head_dim, config.rope_theta)
    model.rope_cos, model.rope_sin = cos.to(device), sin.to(device)
    return model, tok
