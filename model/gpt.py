"""The transformer: a Llama-style decoder (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases) in plain torch.

Parameter names follow Hugging Face's LlamaForCausalLM, so export is a rename-free copy of the state dict.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import GPTConfig

# `enable_gqa` lets SDPA broadcast kv heads itself (no repeat copy); it arrived in torch 2.5.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


class KVCache:
    """Keys/values of past positions for every layer, so sampling processes one new token per step.

    Storage is allocated on the first update, with the dtype/device of the keys (works under autocast too).
    """

    def __init__(self, n_layer: int, max_len: int):
        self.n_layer = n_layer
        self.max_len = max_len
        self.pos = 0  # number of positions already stored
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H_kv, T, D] at the current position; return all keys/values so far for this layer."""
        B, H, T, D = k.shape
        if self.k is None:
            self.k = k.new_zeros(self.n_layer, B, H, self.max_len, D)
            self.v = v.new_zeros(self.n_layer, B, H, self.max_len, D)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KVCache: {end} positions exceed max_len={self.max_len}")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def reset(self) -> None:
        self.pos = 0

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        """The absolute positions [T] of the next T tokens (the same for every row)."""
        return torch.arange(self.pos, self.pos + T, device=device)

    def attend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the new keys/values; return (all keys, all values, attention mask or None, is_causal)."""
        past, T = self.pos, k.shape[2]
        k, v = self.update(layer, k, v)
        if T == 1:
            return k, v, None, False  # one new query sees every cached key
        if past == 0:
            return k, v, None, True
        # query i sits at absolute position past+i and may see keys 0..past+i
        return k, v, torch.ones(T, past + T, dtype=torch.bool, device=k.device).tril(diagonal=past), False


class SlotKVCache:
    """Keys/values of up to `slots` independent sequences, each at its own position: continuous batching.

    A forward pass runs on rows 0..B-1 (the engine keeps its running sequences in the first slots): either one new
    token for each of the B rows, or a prompt (T tokens) for the single row `prefill_slot`. Decoding attends over the
    keys up to the longest row (`bind`), the others' padding masked out.
    """

    def __init__(self, n_layer: int, slots: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        self.max_len = max_len
        self.k = torch.zeros(n_layer, slots, n_kv_head, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.zeros(slots, dtype=torch.long, device=device)  # positions stored per slot
        self.prefill_slot: int | None = None  # set while a prompt is being prefilled
        self._keys_seen = torch.arange(max_len, device=device)

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        if self.prefill_slot is not None:
            start = int(self.pos[self.prefill_slot])
            return torch.arange(start, start + T, device=device)
        if T != 1:
            raise ValueError("SlotKVCache: decoding takes one token per row; prefill a prompt with prefill_slot")
        return self.pos[:self._rows][:, None]  # [B, 1]

    def bind(self, rows: int, longest: int) -> None:
        """The next forward decodes rows 0..rows-1, none of them with more than `longest` positions (the new token
        included); one mask serves every layer."""
        self._rows, self._len = rows, longest
        self._row_index = torch.arange(rows, device=self.pos.device)
        pos = self.pos[:rows]
        self._mask = (self._keys_seen[None, :longest] <= pos[:, None])[:, None, None, :]  # [B, 1, 1, longest]

    def attend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        B, _, T, _ = k.shape
        if self.prefill_slot is not None:
            s = self.prefill_slot
            start = int(self.pos[s])
            end = start + T
            self.k[layer, s, :, start:end] = k[0]
            self.v[layer, s, :, start:end] = v[0]
            keys, values = self.k[layer, s:s + 1, :, :end], self.v[layer, s:s + 1, :, :end]
            if start == 0:
                return keys, values, None, True
            return keys, values, torch.ones(T, end, dtype=torch.bool, device=k.device).tril(diagonal=start), False
        rows, pos = self._row_index, self.pos[:B]
        self.k[layer, rows, :, pos] = k[:, :, 0]
        self.v[layer, rows, :, pos] = v[:, :, 0]
        return self.k[layer, :B, :, :self._len], self.v[layer, :B, :, :self._len], self._mask, False

    def advance(self, T: int) -> None:
        if self.prefill_slot is not None:
            self.pos[self.prefill_slot] += T
        else:
            self.pos[:self._rows] += T

    def move(self, src: int, dst: int) -> None:
        """Copy slot src's sequence into slot dst (compaction when a sequence ends)."""
        n = int(self.pos[src])
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.pos[dst] = n

    def clear(self, slot: int) -> None:
        self.pos[slot] = 0


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [seq_len, head_dim] in the 'rotate half' layout used by HF Llama."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # under autocast q/k are bf16 while the tables are fp32
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.q_proj = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | SlotKVCache | None, layer: int) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        mask, causal = None, True
        if kv_cache is not None:
            k, v, mask, causal = kv_cache.attend(layer, k, v)

        if self.n_kv_head != self.n_head:
            if _SDPA_HAS_GQA:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
            else:
                rep = self.n_head // self.n_kv_head
                y = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                                   attn_mask=mask, is_causal=causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, kv_cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(config.seq_len, config.head_dim, config.rope_theta)
        # not persistent: derived from the config, so checkpoints hold only learned weights
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """normal(0.02) everywhere; residual output projections scaled by 1/sqrt(2*n_layer) (GPT-2) so the
        residual stream's variance does not grow with depth; norms start at 1."""
        small = 0.02 / (2 * self.config.n_layer) ** 0.5
        for name, p in self.named_parameters():
            if p.dim() < 2:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=small)
            else:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def new_kv_cache(self) -> KVCache:
        return KVCache(self.config.n_layer, self.config.seq_len)

    def new_slot_cache(self, slots: int) -> SlotKVCache:
        c, p = self.config, self.lm_head.weight
        return SlotKVCache(c.n_layer, slots, c.n_kv_head, c.seq_len, c.head_dim, p.dtype, p.device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None, kv_cache: KVCache | SlotKVCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx [B, T] -> (logits [B, T, vocab], loss). Loss is mean CE over targets != -1 and loss_mask == 1."""
        logits = self.lm_head(self.hidden(idx, kv_cache))
        loss = None
        if targets is not None:
            if loss_mask is not None:
                targets = targets.masked_fill(loss_mask == 0, -1)
            total = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                    ignore_index=-1, reduction="sum")
            # divide by a tensor count (no .item() sync); an all-masked batch gives loss 0, not nan
            loss = total / (targets != -1).sum().clamp(min=1)
        return logits, loss

    def hidden(self, idx: torch.Tensor, kv_cache: KVCache | SlotKVCache | None = None) -> torch.Tensor:
        """idx [B, T] -> the final normed hidden states [B, T, n_embd], what the lm_head (or a reward head) reads."""
        T = idx.shape[1]
        if kv_cache is None:
            if T > self.config.seq_len:
                raise ValueError(f"GPT.forward: {T} positions exceed config.seq_len={self.config.seq_len}")
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        else:
            pos = kv_cache.positions(T, idx.device)  # [T], or [B, 1] when every row is at its own position
            if int(pos.max()) >= self.config.seq_len:
                raise ValueError(f"GPT.forward: {int(pos.max()) + 1} positions exceed config.seq_len="
                                 f"{self.config.seq_len}")
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]
            if pos.dim() == 2:
                cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, D] against q/k [B, H, T, D]

        x = self.embed_tokens(idx)
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, kv_cache, i)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.norm(x)

    def num_params(self, exclude_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # parameters() counts a tied weight once
        if exclude_embedding:
            n -= self.embed_tokens.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 per non-embedding parameter (fwd+bwd matmuls) plus attention scores
        (12 * layers * width * seq_len), as in the PaLM/nanoGPT MFU estimate."""
        c = self.config
        return 6.0 * self.num_params(exclude_embedding=True) + 12.0 * c.n_layer * c.n_embd * c.seq_len

    def configure_optimizer(self, lr: float, weight_decay: float,
                            betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
        """AdamW with decay on 2D matmul weights only; norms and the token embedding are not decayed."""
        embedding = self.embed_tokens.weight
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 and p is not embedding else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        device_type = embedding.device.type
        # fused AdamW updates all tensors in one kernel: ~5x faster than the default per-tensor loop, on cpu too
        fused = True if device_type in ("cuda", "cpu") else None
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
