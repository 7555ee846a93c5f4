"""Checkpoints: weights roundtrip exactly; training states restore the optimizer; an interrupted save is invisible."""
import json

import pytest
import torch

from model.checkpoint import latest_checkpoint, load_model, load_training_state, save_model, save_training_state
from model.config import GPTConfig
from model.gpt import GPT


def make_model(**kw) -> GPT:
    cfg = GPTConfig(vocab_size=50, seq_len=16, n_layer=2, n_embd=32, n_head=2, n_kv_head=1, mlp_hidden=96, **kw)
    return GPT(cfg)


def one_step(model: GPT, opt: torch.optim.Optimizer) -> None:
    idx = torch.randint(0, 50, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("tied", [False, True])
def test_saved_model_loads_with_identical_config_and_outputs(tmp_path, tied):
    torch.manual_seed(0)
    model = make_model(tie_embeddings=tied)
    save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == model.config.to_dict()
    loaded = load_model(tmp_path / "m")
    idx = torch.randint(0, 50, (1, 10))
    assert loaded.config == model.config
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    if tied:
        assert loaded.lm_head.weight is loaded.embed_tokens.weight


def test_load_model_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_training_state_restores_weights_optimizer_step_and_extra(tmp_path):
    torch.manual_seed(0)
    model = make_model()
    opt = model.configure_optimizer(lr=1e-2, weight_decay=0.1)
    one_step(model, opt)
    path = save_training_state(tmp_path, model, opt, step=7, extra={"tokens": 448, "micro_step": 7})
    assert path.name == "ckpt_000007" and latest_checkpoint(tmp_path) == path

    fresh = make_model()
    fresh_opt = fresh.configure_optimizer(lr=1e-2, weight_decay=0.1)
    state = load_training_state(path, fresh, fresh_opt)
    assert state == {"step": 7, "extra": {"tokens": 448, "micro_step": 7}}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True))
    # the restored Adam moments make the next step identical
    torch.manual_seed(1)
    one_step(model, opt)
    torch.manual_seed(1)
    one_step(fresh, fresh_opt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True))


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model = make_model()
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.0)
    for step in (10, 20, 30):
        save_training_state(tmp_path, model, opt, step, {}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000020", "ckpt_000030"]
    assert latest_checkpoint(tmp_path).name == "ckpt_000030"


def test_interrupted_save_is_not_visible_and_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    model = make_model()
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.0)
    save_training_state(tmp_path, model, opt, 10, {})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing optimizer.pt")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(tmp_path, model, opt, 20, {})
    assert latest_checkpoint(tmp_path).name == "ckpt_000010"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_000010"]


def test_leftover_temp_dir_from_a_killed_process_is_ignored(tmp_path):
    model = make_model()
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.0)
    save_training_state(tmp_path, model, opt, 10, {})
    stale = tmp_path / ".tmp_ckpt_000020_abcd"  # what a kill -9 mid-save leaves behind
    stale.mkdir()
    (stale / "state.json").write_text('{"step": 20, "extra": {}}')
    (tmp_path / "ckpt_000030").mkdir()  # a dir without state.json is not a checkpoint either
    assert latest_checkpoint(tmp_path).name == "ckpt_000010"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_training_state_refuses_a_model_of_another_shape(tmp_path):
    model = make_model()
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.0)
    path = save_training_state(tmp_path, model, opt, 1, {})
    other = GPT(GPTConfig(vocab_size=50, seq_len=16, n_layer=1, n_embd=32, n_head=2, n_kv_head=1, mlp_hidden=96))
    with pytest.raises(ValueError, match="does not match"):
        load_training_state(path, other, None)
