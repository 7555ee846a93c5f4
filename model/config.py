"""Model shape (GPTConfig) and the sizing rules, as nanochat does it: one knob, depth, sets everything.

- width, heads, MLP: GPTConfig.from_depth (n_embd = depth * aspect_ratio, heads of head_dim).
- token budget: chinchilla_tokens, 20 tokens per parameter (Hoffmann et al. 2022).
- batch size: batch_tokens, the compute-optimal batch of DeepSeek LLM (Bi et al. 2024, B = 0.292 * C^0.3271 tokens for
  C = 6 * params * tokens FLOPs), rounded to a power of two.
training_budget turns those into optimizer steps and gradient accumulation for a given micro-batch and world size;
`pretrain.steps: auto` and `pretrain.grad_accum: auto` in a preset use it. ModelSection is the preset's `model:`
section (the knob and the sizing constants), which builds the GPTConfig.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass
class GPTConfig:
    vocab_size: int
    seq_len: int
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    mlp_hidden: int  # SwiGLU hidden width
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"GPTConfig: n_head={self.n_head} must be divisible by n_kv_head={self.n_kv_head}")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"GPTConfig: head_dim={self.n_embd // self.n_head} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int, seq_len: int, aspect_ratio: int = 64,
                   head_dim: int = 64, kv_ratio: int = 1, **kwargs: Any) -> GPTConfig:
        """The one-knob sizing rule (as in nanochat): depth sets everything else.

        - n_embd     = depth * aspect_ratio, rounded up to a multiple of head_dim
        - n_head     = n_embd // head_dim
        - n_kv_head  = n_head // kv_ratio   (kv_ratio > 1 gives grouped-query attention)
        - mlp_hidden = 8/3 * n_embd rounded up to a multiple of 32 (SwiGLU with ~4x-MLP parameter count)
        Extra kwargs (rope_theta, norm_eps, tie_embeddings) pass through.
        """
        if depth < 1:
            raise ValueError(f"from_depth: depth must be >= 1, got {depth}")
        n_embd = math.ceil(depth * aspect_ratio / head_dim) * head_dim
        n_head = n_embd // head_dim
        if kv_ratio < 1 or n_head % kv_ratio:
            raise ValueError(f"from_depth: kv_ratio={kv_ratio} must divide n_head={n_head}")
        mlp_hidden = math.ceil(8 * n_embd / 3 / 32) * 32
        return cls(vocab_size=vocab_size, seq_len=seq_len, n_layer=depth, n_embd=n_embd, n_head=n_head,
                   n_kv_head=n_head // kv_ratio, mlp_hidden=mlp_hidden, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown keys {sorted(unknown)}")
        return cls(**d)


class ModelSection(BaseModel):
    """The preset's `model:` section: the depth knob and the constants of the sizing rule (GPTConfig.from_depth)."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(4, description="The one knob: width, heads and token budget follow from it.")
    aspect_ratio: int = 32
    head_dim: int = 32
    kv_ratio: int = 1
    seq_len: int = 256

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig.from_depth(self.depth, vocab_size, self.seq_len, aspect_ratio=self.aspect_ratio,
                                    head_dim=self.head_dim, kv_ratio=self.kv_ratio)


TOKENS_PER_PARAM = 20


def chinchilla_tokens(n_params: int) -> int:
    """Compute-optimal token budget from Hoffmann et al. 2022 ("Chinchilla"): about 20 training tokens per parameter."""
    return int(TOKENS_PER_PARAM * n_params)


def batch_tokens(n_params: int, tokens: int) -> int:
    """Compute-optimal global batch in tokens (DeepSeek LLM's fit B = 0.292 * C^0.3271, C = 6ND FLOPs), rounded to
    the nearest power of two: ~16K tokens for 2M params, ~256K for 124M, ~1M for 1B."""
    compute = 6.0 * n_params * tokens
    return 2 ** round(math.log2(0.292 * compute ** 0.3271))


def training_budget(n_params: int, seq_len: int, micro_batch: int, world: int = 1,
                    tokens: int | None = None, grad_accum: int | None = None) -> tuple[int, int]:
    """(steps, grad_accum) for `tokens` training tokens (default: the Chinchilla budget) at the compute-optimal
    batch, given `micro_batch` sequences of seq_len per process and `world` processes; a given grad_accum is kept
    and only the steps follow from it."""
    tokens = tokens if tokens is not None else chinchilla_tokens(n_params)
    if n_params < 1 or tokens < 1:
        raise ValueError(f"training_budget: params ({n_params}) and tokens ({tokens}) must be positive")
    per_micro_step = micro_batch * seq_len * world
    if grad_accum is None:
        grad_accum = max(1, round(batch_tokens(n_params, tokens) / per_micro_step))
    steps = max(1, math.ceil(tokens / (per_micro_step * grad_accum)))
    return steps, grad_accum
