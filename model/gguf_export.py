"""GGUF export, for the llama.cpp-based runtimes people run models with locally (llama.cpp, LM Studio, Ollama).

Written with the `gguf` package of the llama.cpp project, as its own converter (convert_hf_to_gguf.py) writes a
LlamaForCausalLM: the `llama` architecture's keys, tensors under llama.cpp's names (the package's own map from
Hugging Face names, ours being those without `model.`), and the query/key rows reordered from our rotate-half RoPE
layout to the interleaved pairs llama.cpp rotates. The tokenizer goes in as GPT-2-style byte-level BPE: every token's
byte-level string, its type (our special tokens are control tokens), the merges, bos/eos (<|assistant_end|> ends
a turn, so it is also the end-of-turn token) and the pre-tokenizer `llama-bpe`, whose split is GPT-4's, ours.
The Jinja chat template is the one the Hugging Face export carries; an Ollama Modelfile beside the file spells the
same format in Go's template language.

Quantizations: f32, f16 (matrices in half precision) and q8_0 (matrices in 8-bit blocks of 32 with a scale; a
matrix whose rows are not a multiple of 32 stays f16). Norm weights stay f32, as llama.cpp's converter keeps them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch

from model.chat import BOS, ROLE_MARKERS, chat_template
from model.checkpoint import unwrap
from model.files import atomic_path
from model.gpt import GPT
from model.tokenizer import SPECIAL_TOKENS, Tokenizer

Quant = Literal["f32", "f16", "q8_0"]
QUANTS: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
EOS = ROLE_MARKERS["assistant"][1]
PRE_TOKENIZER = "llama-bpe"  # llama.cpp's name for the GPT-4 split Llama 3 uses, which is ours


def interleave_rope(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder a q/k projection's output rows per head from rotate-half (x[i] pairs with x[i + d/2]) to interleaved
    (x[2i] pairs with x[2i + 1]), the layout llama.cpp's `llama` RoPE rotates."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights (float32, CPU) under llama.cpp's tensor names, q and k rows interleaved for its RoPE."""
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.n_layer)
    out = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # llama.cpp reuses token_embd when there is no output tensor
        target = names.get_name(f"model.{name}" if name != "lm_head.weight" else name, try_suffixes=(".weight",))
        if target is None:
            raise ValueError(f"gguf export: no llama.cpp name for tensor {name!r}")
        w = p.detach().to("cpu", torch.float32)
        if name.endswith("self_attn.q_proj.weight"):
            w = interleave_rope(w, config.n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            w = interleave_rope(w, config.n_kv_head)
        out[target] = w.contiguous()
    return out


def _tensor_data(weight: torch.Tensor, quant: Quant) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    array = weight.numpy()
    if array.ndim == 1 or quant == "f32":
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if quant == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return array.astype(np.float16), gguf.GGMLQuantizationType.F16


def vocabulary(tok: Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, their types, merges "a b"): rows past the tokenizer's vocabulary are unused padding tokens."""
    data = json.loads(tok.hf.to_str())
    by_id = {i: t for t, i in tok.hf.get_vocab(with_added_tokens=True).items()}
    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if text in SPECIAL_TOKENS else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, [int(t) for t in types], merges


def export_gguf(model: GPT | torch.nn.Module, tok: Tokenizer, out: str | os.PathLike, quant: Quant = "f32",
                name: str = "llm-factory") -> Path:
    """Write `model` with its tokenizer and chat template as one GGUF file at `out` (atomically: a temp file renamed
    into place). Returns the path."""
    if quant not in QUANTS:
        raise ValueError(f"gguf export: quant {quant!r} is not one of {sorted(QUANTS)}")
    gpt = unwrap(model)
    config = gpt.config
    if tok.vocab_size > config.vocab_size:
        raise ValueError(f"gguf export: the tokenizer has {tok.vocab_size} tokens, the model {config.vocab_size} rows")
    path = Path(out).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges = vocabulary(tok, config.vocab_size)
    with atomic_path(path, suffix=".gguf") as tmp:
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        writer.add_name(name)
        writer.add_file_type(QUANTS[quant][1])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_vocab_size(config.vocab_size)
        writer.add_context_length(config.seq_len)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.mlp_hidden)
        writer.add_head_count(config.n_head)
        writer.add_head_count_kv(config.n_kv_head)
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(PRE_TOKENIZER)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tok.bos_id)
        writer.add_eos_token_id(tok.special_id(EOS))
        writer.add_eot_token_id(tok.special_id(EOS))
        writer.add_pad_token_id(tok.pad_id)
        writer.add_add_bos_token(True)  # every pretraining document started with <|bos|>
        writer.add_add_eos_token(False)
        writer.add_chat_template(chat_template())
        for tensor_name, weight in gguf_tensors(gpt).items():
            data, dtype = _tensor_data(weight, quant)
            writer.add_tensor(tensor_name, data, raw_dtype=dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def modelfile(gguf_name: str, seq_len: int) -> str:
    """An Ollama Modelfile for the GGUF file `gguf_name` beside it: our chat format as a Go template (Ollama adds
    <|bos|> itself, from the file's add_bos_token), the end of an assistant turn as the stop, the context length."""
    turns = "".join(
        f'{{{{- {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{start}{{{{ .Content }}}}{end}'
        for i, (role, (start, end)) in enumerate(ROLE_MARKERS.items())
    )
    template = f"{{{{- range .Messages }}}}{turns}{{{{- end }}}}{{{{- end }}}}{ROLE_MARKERS['assistant'][0]}"
    return (f"FROM ./{gguf_name}\n"
            f'TEMPLATE """{template}"""\n'
            f'PARAMETER stop "{EOS}"\n'
            f'PARAMETER stop "{BOS}"\n'
            f"PARAMETER num_ctx {seq_len}\n")


def read_gguf(path: str | os.PathLike) -> dict:
    """What a GGUF file holds, through the `gguf` reader: {"fields": {key: value}, "tensors": {name: (type name,
    float32 array in our [out, in] layout, dequantized)}}."""
    reader = gguf.GGUFReader(str(path))
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        fields[key] = value
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF lists dims innermost first
        array = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        tensors[t.name] = (t.tensor_type.name, array)
    return {"fields": fields, "tensors": tensors}
