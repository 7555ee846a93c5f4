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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


# Fields marked so say where and how the run happens, never what it trains: a stage's cache key leaves them out, so
# every node of a multi-node run, or a rerun with another launcher, finds the same artifact.
RUNTIME = {"runtime": True}  # Field(..., json_schema_extra=RUNTIME); the one marker, for every config section


class TrainConfig(BaseModel):
    """How to train and how to launch: the preset's `pretrain`/`finetune` sections are its subclasses. It travels to
    the ranks as JSON (model_dump / model_validate); device and dtype "auto" are resolved by resolved()."""

    model_config = ConfigDict(extra="forbid")

    steps: int = 600
    batch_size: int = Field(8, description="Sequences per micro-batch on each process.")
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    schedule: Literal["cosine", "linear"] = "cosine"
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    ckpt_every: int = 200
    log_every: int = 10
    sample_every: int = 0
    keep_checkpoints: int = Field(2, description="Newest checkpoints kept in the artifact (also written on SIGTERM).")
    optimizer: Literal["adamw", "muon"] = Field("adamw", description="muon: Muon on the blocks' matrices, AdamW else.")
    muon_lr: float = 0.02
    bad_loss: Literal["stop", "skip"] = Field("stop", description="What a non-finite or spiking loss does.")
    spike_factor: float = Field(0.0, description="Loss above this x its running average is a spike; 0 disables.")
    max_bad_steps: int = Field(5, description="Consecutive skipped steps before 'skip' stops too.")
    prefetch: int = Field(2, description="Micro-batches the loader thread prepares ahead (0: no thread).",
                          json_schema_extra=RUNTIME)
    seed: int = 1337
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    compile: bool = False
    nproc: int = Field(1, ge=1, description="Processes (GPUs) on this node; >1 launches one per rank.")
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[0, 1, 2, 3] = Field(1, description="DeepSpeed ZeRO stage (strategy deepspeed).")
    launcher: Literal["torchrun", "deepspeed"] = Field("torchrun", json_schema_extra=RUNTIME)
    nnodes: int = Field(1, ge=1, description="Nodes taking part; each node runs the stage with its own node_rank.")
    node_rank: int = Field(0, ge=0, description="This node's index in 0..nnodes-1; node 0 hosts the rendezvous.",
                           json_schema_extra=RUNTIME)
    master_addr: str = Field("127.0.0.1", description="Node 0's address as the other nodes reach it (nnodes > 1).",
                             json_schema_extra=RUNTIME)
    master_port: int | None = Field(
        None, ge=1, le=65535, description="A free TCP port on node 0 for the rendezvous; needed when nnodes > 1.",
        json_schema_extra=RUNTIME,
    )
    hostfile: str | None = Field(
        None, description="DeepSpeed hostfile ('HOST slots=N' per line, the same on every node) for launcher "
                          "deepspeed on several nodes; each node's launcher starts its own ranks (no ssh).",
        json_schema_extra=RUNTIME,
    )

    @model_validator(mode="after")
    def _nodes(self) -> TrainConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        if self.nnodes > 1 and self.master_port is None:
            raise ValueError("nnodes > 1 needs master_port (and master_addr): the rendezvous on node 0")
        if self.nnodes > 1 and self.launcher == "deepspeed" and not self.hostfile:
            raise ValueError("launcher deepspeed on several nodes needs a hostfile")
        return self

    @classmethod
    def of(cls, section: BaseModel) -> TrainConfig:
        """The TrainConfig fields of `section` (a PretrainConfig, a FinetuneConfig, or any model naming the same
        fields), as a plain TrainConfig: what the ranks receive. Fields of its own (windows, init_from) stay behind."""
        data = section.model_dump()
        return cls.model_validate({k: data[k] for k in cls.model_fields if k in data})

    def resolved(self) -> TrainConfig:
        """A copy with device "auto" -> cuda if available else cpu, dtype "auto" -> bfloat16 on cuda else float32."""
        import torch  # here, not at the top: presets and the `factory` command read this module without torch

        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.dtype if self.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
        return self.model_copy(update={"device": device, "dtype": dtype})

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


class PretrainConfig(TrainConfig):
    """The preset's `pretrain:` section."""

    steps: int | Literal["auto"] = Field(600, description="'auto': the compute-optimal token budget: the scaling "
                                         "law `factory scaling` fitted on these token shards, else 20 tokens/param.")
    grad_accum: int | Literal["auto"] = Field(1, description="'auto': the batch-size rule (model.config).")
    windows: Literal["random", "sequential"] = "random"

    def budgeted(self, n_params: int, seq_len: int, tokens: int | None = None) -> PretrainConfig:
        """A copy with steps/grad_accum "auto" replaced by the depth-based budget (`tokens`, default 20 tokens per
        parameter, at the compute-optimal global batch, over all nodes' processes); given numbers are kept."""
        if self.steps != "auto" and self.grad_accum != "auto":
            return self
        fixed_accum = None if self.grad_accum == "auto" else self.grad_accum
        steps, accum = training_budget(n_params, seq_len, self.batch_size, self.world_size, tokens=tokens,
                                       grad_accum=fixed_accum)
        return self.model_copy(update={"steps": steps if self.steps == "auto" else self.steps,
                                       "grad_accum": accum if self.grad_accum == "auto" else self.grad_accum})


class FinetuneConfig(TrainConfig):
    """The preset's `finetune:` section."""

    init_from: str | None = Field(
        None, description="A Hugging Face Llama-architecture model folder to finetune instead of our base model."
    )
    max_seq_len: int | None = Field(None, description="Cap the context of an imported model (memory).")
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 10
    eval_every: int = 100
    ckpt_every: int = 100
