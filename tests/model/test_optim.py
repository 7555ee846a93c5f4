"""Muon (Newton-Schulz orthogonalized momentum) with AdamW for the rest, as one optimizer, and build_optimizer."""
import copy
import io

import pytest
import torch

from model.config import GPTConfig
from model.gpt import GPT
from model.optim import Muon, build_optimizer, newton_schulz

VOCAB, SEQ = 64, 32


def make_model(seed: int = 0, **kwargs) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, seq_len=SEQ, n_layer=2, n_embd=64, n_head=4, n_kv_head=2,
                         mlp_hidden=160, **kwargs))


def fixed_batch(batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, VOCAB, (batch_size, SEQ + 1), generator=torch.Generator().manual_seed(42))
    return rows[:, :-1], rows[:, 1:]


def train_steps(model: GPT, opt: torch.optim.Optimizer, steps: int, base_lr: float = 3e-3) -> list[float]:
    """Constant schedule applied as the trainer does: group lr = scheduled lr * lr_scale."""
    x, y = fixed_batch()
    losses = []
    for _ in range(steps):
        for group in opt.param_groups:
            group["lr"] = base_lr * group.get("lr_scale", 1.0)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


# Rectangular random matrices: a square one has singular values near 0 that 5 steps cannot lift (harmless for Muon).
@pytest.mark.parametrize("shape", [(128, 32), (32, 128)], ids=["tall", "wide"])
def test_newton_schulz_gives_near_orthogonal_polar_factor(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = newton_schulz(g)
    assert out.shape == g.shape and out.dtype == g.dtype
    singular = torch.linalg.svdvals(out)
    assert (singular - 1).abs().max() < 0.35  # the quintic lands in ~[0.68, 1.16], not exactly on 1
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    assert torch.nn.functional.cosine_similarity(out.flatten(), polar.flatten(), dim=0) > 0.95


def test_newton_schulz_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz(torch.randn(3, 4, 5))


def test_muon_rejects_vectors_in_a_muon_group():
    with pytest.raises(ValueError, match="use_muon=False"):
        Muon([torch.nn.Parameter(torch.ones(8))])


def test_muon_gets_block_matrices_and_adamw_the_embedding_head_and_norms():
    model = make_model()
    opt = build_optimizer(model, "muon", lr=3e-3, weight_decay=0.1, muon_lr=0.02)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    adamw = {names[id(p)] for g in opt.param_groups if not g["use_muon"] for p in g["params"]}
    expected_muon = {n for n, p in model.named_parameters() if n.startswith("layers.") and p.ndim == 2}
    assert muon == expected_muon and len(muon) == 2 * 7  # q k v o gate up down per block
    assert {"embed_tokens.weight", "lm_head.weight", "norm.weight", "layers.0.input_layernorm.weight"} <= adamw
    assert muon | adamw == set(names.values()) and not muon & adamw

    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == expected_muon | {"lm_head.weight"}
    muon_group = next(g for g in opt.param_groups if g["use_muon"])
    assert muon_group["lr"] == 0.02 and muon_group["lr_scale"] == pytest.approx(0.02 / 3e-3)
    assert all(g["lr"] == 3e-3 and g["lr_scale"] == 1.0 for g in opt.param_groups if not g["use_muon"])


def test_tied_embedding_is_one_adamw_param():
    model = make_model(tie_embeddings=True)
    opt = build_optimizer(model, "muon", lr=3e-3, weight_decay=0.1)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))


def test_adamw_name_is_the_models_own_optimizer():
    model = make_model()
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1, betas=(0.8, 0.9))
    reference = model.configure_optimizer(1e-3, 0.1, (0.8, 0.9))
    assert type(opt) is torch.optim.AdamW
    assert [(g["lr"], g["weight_decay"], g["betas"], [id(p) for p in g["params"]]) for g in opt.param_groups] == \
        [(g["lr"], g["weight_decay"], g["betas"], [id(p) for p in g["params"]]) for g in reference.param_groups]
    assert all("lr_scale" not in g for g in opt.param_groups)
    with pytest.raises(ValueError, match="'adamw' or 'muon'"):
        build_optimizer(model, "sgd", lr=1e-3, weight_decay=0.0)


def test_muon_memorizes_a_fixed_batch():
    model = make_model()
    opt = build_optimizer(model, "muon", lr=3e-3, weight_decay=0.0, muon_lr=0.02)
    losses = train_steps(model, opt, 30)
    assert losses[0] > 3.5  # ~ln(64) at init
    assert losses[-1] < 0.1 * losses[0]  # ~0.23 of ~4.2; with the blocks frozen (muon_lr ~ 0) it stays ~1.1


def test_state_dict_round_trip_continues_bitwise_identically():
    model = make_model()
    opt = build_optimizer(model, "muon", lr=3e-3, weight_decay=0.1)
    train_steps(model, opt, 3)

    resumed = copy.deepcopy(model)
    resumed_opt = build_optimizer(resumed, "muon", lr=1.0, weight_decay=0.0)  # hyperparameters come from the state
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as the trainer's checkpoint does
    buffer.seek(0)
    resumed_opt.load_state_dict(torch.load(buffer, weights_only=True))
    assert [g["lr_scale"] for g in resumed_opt.param_groups] == [g["lr_scale"] for g in opt.param_groups]

    train_steps(model, opt, 3)
    train_steps(resumed, resumed_opt, 3)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name
