"""The training loop: the schedule, learning, gradient accumulation, eval/log hooks, and crash-resume."""
import math

import pytest
import torch

from model.config import GPTConfig
from model.gpt import GPT
from model.trainer import TrainConfig, lr_at, train

VOCAB, SEQ = 64, 32


def make_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, seq_len=SEQ, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=160))


def repeated_sequence_batches(batch_size: int = 4):
    """The same 33-token pattern at a shifted offset for each micro-batch index: easy to memorize."""
    pattern = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(42))
    stream = pattern.repeat(10)

    def batches(i: int):
        rows = torch.stack([stream[(i * batch_size + r) % 40:][: SEQ + 1] for r in range(batch_size)])
        return rows[:, :-1], rows[:, 1:], None
    return batches


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, batch_size=1, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(9, 99))
    linear = TrainConfig(steps=101, batch_size=1, lr=1e-3, warmup_steps=10, schedule="linear")
    assert lr_at(55, linear) == pytest.approx(1e-3 - 0.5 * 0.9e-3)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(50, TrainConfig(steps=100, batch_size=1, schedule="step"))


def test_tiny_model_memorizes_a_repeated_sequence(tmp_path):
    logs = {}
    cfg = TrainConfig(steps=60, batch_size=4, lr=1e-2, warmup_steps=5, log_every=5, eval_every=0, ckpt_every=0)
    result = train(make_model(), cfg, repeated_sequence_batches(), None, tmp_path,
                   on_log=lambda step, m: logs.__setitem__(step, m))
    assert logs[5]["loss"] > 3.0  # about ln(64) = 4.16 early on
    assert result["final_loss"] < 0.5
    assert result["steps"] == 60 and result["tokens"] == 60 * 4 * SEQ and result["tokens_per_s"] > 0
    assert set(logs[60]) >= {"loss", "lr", "tokens_per_s", "grad_norm"}
    assert (tmp_path / "ckpt_000060" / "state.json").exists()  # always checkpoints at the end


def test_eval_samples_and_mfu_are_reported_at_their_steps(tmp_path):
    batches = repeated_sequence_batches()
    logs = {}
    cfg = TrainConfig(steps=6, batch_size=4, log_every=3, eval_every=2, eval_batches=2, sample_every=3,
                      ckpt_every=0)
    result = train(make_model(), cfg, batches, lambda: (batches(1000 + i) for i in range(5)), tmp_path,
                   on_log=lambda step, m: logs.__setitem__(step, m), sample_fn=lambda model: "a sample",
                   peak_flops=1e12)
    assert sorted(logs) == [2, 3, 4, 6]
    assert "val_loss" in logs[2] and "loss" not in logs[2]
    assert "loss" in logs[3] and "val_loss" not in logs[3] and 0 < logs[3]["mfu"] < 100
    assert result["final_val_loss"] == logs[6]["val_loss"]
    assert result["samples"] == [{"step": 3, "text": "a sample"}, {"step": 6, "text": "a sample"}]


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    full = repeated_sequence_batches(batch_size=8)

    def halves(i: int):
        x, y, _ = full(i // 2)
        part = slice(0, 4) if i % 2 == 0 else slice(4, 8)
        return x[part], y[part], None

    common = dict(steps=3, lr=1e-2, warmup_steps=1, log_every=1, eval_every=0, ckpt_every=0)
    big, small = make_model(), make_model()
    train(big, TrainConfig(batch_size=8, **common), full, None, tmp_path / "a")
    train(small, TrainConfig(batch_size=4, grad_accum=2, **common), halves, None, tmp_path / "b")
    for a, b in zip(big.parameters(), small.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


class Crash(Exception):
    pass


def test_resume_after_a_crash_continues_the_same_loss_trajectory(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=4, lr=1e-2, warmup_steps=5, log_every=5, eval_every=0, ckpt_every=10)
    reference = {}
    train(make_model(), cfg, repeated_sequence_batches(), None, tmp_path / "ref",
          on_log=lambda step, m: reference.__setitem__(step, m["loss"]))

    resumed = {}

    def crash_at_25(step, metrics):
        resumed[step] = metrics["loss"]
        if step == 25:
            raise Crash("simulated preemption")

    with pytest.raises(Crash):
        train(make_model(), cfg, repeated_sequence_batches(), None, tmp_path / "run", on_log=crash_at_25)
    # a different init proves the weights come from the checkpoint
    result = train(make_model(seed=99), cfg, repeated_sequence_batches(), None, tmp_path / "run",
                   on_log=lambda step, m: resumed.__setitem__(step, m["loss"]))
    assert result["resumed_from"].endswith("ckpt_000020")
    assert result["steps"] == 40 and result["tokens"] == 40 * 4 * SEQ
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert math.isclose(resumed[step], reference[step], rel_tol=1e-4, abs_tol=1e-5), step
    # nothing left to do: a rerun returns at once
    again = train(make_model(), cfg, repeated_sequence_batches(), None, tmp_path / "run")
    assert again["resumed_from"].endswith("ckpt_000040") and again["tokens"] == 40 * 4 * SEQ


def test_a_diverged_loss_stops_training_with_the_step_named(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    cfg = TrainConfig(steps=5, batch_size=4, log_every=2, eval_every=0, ckpt_every=0)
    with pytest.raises(FloatingPointError, match="at step 1"):
        train(model, cfg, repeated_sequence_batches(), None, tmp_path)


def test_resuming_from_the_final_checkpoint_trains_nothing_and_still_reports_val_loss(tmp_path):
    batches = repeated_sequence_batches()
    val = lambda: (batches(1000 + i) for i in range(2))  # noqa: E731
    cfg = TrainConfig(steps=4, batch_size=4, log_every=2, eval_every=0, ckpt_every=0)
    first = train(make_model(), cfg, batches, val, tmp_path)
    again = train(make_model(seed=1), cfg, batches, val, tmp_path)
    assert again["resumed_from"].endswith("ckpt_000004") and again["tokens"] == first["tokens"]
    assert again["final_val_loss"] == pytest.approx(first["final_val_loss"])
