"""The transformer: shapes, loss masking, causality, GQA semantics, the sizing rules and the optimizer groups."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.config import GPTConfig, chinchilla_tokens
from model.gpt import GPT


def tiny_config(**kw) -> GPTConfig:
    base = dict(vocab_size=97, seq_len=32, n_layer=2, n_embd=64, n_head=4, n_kv_head=4, mlp_hidden=160)
    base.update(kw)
    return GPTConfig(**base)


def test_forward_returns_logits_for_every_position_and_loss_near_uniform_at_init():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx = torch.randint(0, 97, (3, 20))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 20, 97)
    assert abs(loss.item() - math.log(97)) < 0.3  # small init -> near-uniform predictions
    logits_only, no_loss = model(idx)
    assert no_loss is None and torch.allclose(logits_only, logits)


def test_loss_counts_only_masked_positions_and_ignores_minus_one_targets():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx, targets = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    mask = torch.zeros(2, 16, dtype=torch.long)
    mask[0, 3:9] = 1
    mask[1, 10:] = 1
    logits, loss = model(idx, targets, loss_mask=mask)
    expected = F.cross_entropy(logits[mask.bool()], targets[mask.bool()])
    assert torch.allclose(loss, expected, atol=1e-5)
    # -1 targets are the same as mask 0
    _, loss_ignore = model(idx, targets.masked_fill(mask == 0, -1))
    assert torch.allclose(loss_ignore, expected, atol=1e-5)


def test_fully_masked_batch_gives_zero_loss_not_nan():
    model = GPT(tiny_config())
    idx = torch.randint(0, 97, (1, 8))
    _, loss = model(idx, idx, loss_mask=torch.zeros(1, 8))
    assert loss.item() == 0.0


def test_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    a = torch.randint(0, 97, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 97
    la, _ = model(a)
    lb, _ = model(b)
    assert torch.allclose(la[0, :8], lb[0, :8], atol=1e-5)
    assert not torch.allclose(la[0, 8:], lb[0, 8:], atol=1e-3)


def test_gqa_equals_full_attention_with_each_kv_head_shared_by_its_query_group():
    torch.manual_seed(0)
    gqa = GPT(tiny_config(n_kv_head=2))
    mha = GPT(tiny_config(n_kv_head=4))
    head_dim = 16
    assert gqa.layers[0].self_attn.k_proj.weight.shape == (2 * head_dim, 64)
    assert gqa.num_params() < mha.num_params()
    state = gqa.state_dict()
    for name, w in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            # query heads 0,1 use kv head 0; heads 2,3 use kv head 1
            state[name] = w.view(2, head_dim, 64).repeat_interleave(2, dim=0).reshape(4 * head_dim, 64)
    mha.load_state_dict(state)
    idx = torch.randint(0, 97, (2, 10))
    assert torch.allclose(gqa(idx)[0], mha(idx)[0], atol=1e-5)


def test_from_depth_sets_width_heads_and_mlp_from_one_knob():
    c = GPTConfig.from_depth(4, vocab_size=4096, seq_len=256)
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head) == (4, 256, 4, 4)
    assert c.mlp_hidden == 704 and c.mlp_hidden % 32 == 0 and abs(c.mlp_hidden - 8 / 3 * 256) < 32
    # width rounds up to a multiple of head_dim; kv_ratio gives GQA
    c = GPTConfig.from_depth(3, vocab_size=100, seq_len=64, aspect_ratio=40, head_dim=32, kv_ratio=2)
    assert (c.n_embd, c.n_head, c.n_kv_head) == (128, 4, 2)
    with pytest.raises(ValueError, match="kv_ratio"):
        GPTConfig.from_depth(1, vocab_size=100, seq_len=64, kv_ratio=3)


def test_config_json_roundtrip_and_rejects_unknown_keys():
    c = GPTConfig.from_depth(2, vocab_size=300, seq_len=64, tie_embeddings=True)
    assert GPTConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown keys"):
        GPTConfig.from_dict({**c.to_dict(), "dropout": 0.1})


def test_chinchilla_budget_is_twenty_tokens_per_parameter():
    assert chinchilla_tokens(1_000_000) == 20_000_000


def test_tied_embeddings_share_one_weight_and_count_once():
    tied, untied = GPT(tiny_config(tie_embeddings=True)), GPT(tiny_config())
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.num_params() - tied.num_params() == 97 * 64
    assert untied.num_params(exclude_embedding=True) == untied.num_params() - 97 * 64


def test_flops_per_token_is_six_n_plus_attention():
    model = GPT(tiny_config())
    n = model.num_params(exclude_embedding=True)
    assert model.flops_per_token() == 6 * n + 12 * 2 * 64 * 32


def test_optimizer_decays_only_matmul_weights():
    model = GPT(tiny_config())
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p is not model.embed_tokens.weight for p in decay["params"])
    assert any(p is model.embed_tokens.weight for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_sequence_longer_than_seq_len_is_rejected():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="seq_len=32"):
        model(torch.zeros(1, 33, dtype=torch.long))
