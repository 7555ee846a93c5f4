"""The training loop: the schedule, learning, gradient accumulation, eval/log hooks, crash-resume, the bad-loss policy,
the loader thread, checkpoint rotation and Muon."""
import json
import math

import pytest
import torch
from pydantic import ValidationError

from model.config import GPTConfig
from model.gpt import GPT
from model.trainer import BadLoss, TrainConfig, lr_at, train

VOCAB, SEQ = 64, 32
PATTERN = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(42))
# tokens the pattern never holds: a micro-batch that starts with one gets a bad loss (see with_bad_losses)
NAN_MARK, SPIKE_MARK = sorted(set(range(VOCAB)) - set(PATTERN.tolist()))[:2]


def make_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, seq_len=SEQ, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=160))


def repeated_sequence_batches(batch_size: int = 4):
    """The same 33-token pattern at a shifted offset for each micro-batch index: easy to memorize."""
    stream = PATTERN.repeat(10)

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
    with pytest.raises(ValidationError, match="schedule"):
        TrainConfig(steps=100, batch_size=1, schedule="step")


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
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
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


def with_bad_losses(model: GPT) -> GPT:
    """`model`, whose loss is nan on a batch starting with NAN_MARK and 50x itself on one starting with SPIKE_MARK."""
    factors = {NAN_MARK: float("nan"), SPIKE_MARK: 50.0}

    def hook(module, args, output):
        logits, loss = output
        factor = factors.get(int(args[0][0, 0]))
        if loss is not None and factor is not None:
            return logits, loss * factor

    model.register_forward_hook(hook)
    return model


def marked(batches, marks: dict[int, int]):
    """`batches` with micro-batch i starting with token marks[i], for the i in marks."""
    def marked_batches(i: int):
        x, y, mask = batches(i)
        if i in marks:
            x = x.clone()
            x[0, 0] = marks[i]
        return x, y, mask
    return marked_batches


def test_skip_drops_a_nan_step_without_touching_the_weights_or_the_optimizer(tmp_path):
    model = with_bad_losses(make_model())
    snapshots, logs = [], {}

    def snapshot(m: GPT) -> str:  # sample_fn runs after every step: the weights as each step left them
        snapshots.append([p.detach().clone() for p in m.parameters()])
        return ""

    cfg = TrainConfig(steps=8, batch_size=4, lr=1e-2, warmup_steps=2, log_every=1, eval_every=0, ckpt_every=0,
                      sample_every=1, bad_loss="skip")
    result = train(model, cfg, marked(repeated_sequence_batches(), {3: NAN_MARK}), None, tmp_path,
                   on_log=lambda step, m: logs.__setitem__(step, m), sample_fn=snapshot)
    assert result["skipped_steps"] == 1
    assert math.isnan(logs[4]["loss"]) and logs[4]["skipped_steps"] == 1 and "skipped_steps" not in logs[3]
    assert logs[8]["skipped_steps"] == 1
    assert all(torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3], strict=True))  # step 4 changed nothing
    assert not any(torch.equal(a, b) for a, b in zip(snapshots[3], snapshots[4], strict=True))  # step 5 trained again
    assert math.isfinite(result["final_loss"]) and result["final_loss"] < logs[1]["loss"]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    optimizer = torch.load(tmp_path / "ckpt_000008" / "optimizer.pt", weights_only=True)
    assert {float(s["step"]) for s in optimizer["state"].values()} == {7.0}  # AdamW stepped 7 times, not 8


def test_skip_gives_up_after_max_bad_steps_in_a_row_but_not_when_they_are_apart(tmp_path):
    model = with_bad_losses(make_model())
    cfg = TrainConfig(steps=20, batch_size=4, log_every=1, eval_every=0, ckpt_every=0, bad_loss="skip", max_bad_steps=3)
    always_bad = marked(repeated_sequence_batches(), {i: NAN_MARK for i in range(20)})
    with pytest.raises(BadLoss, match=r"loss is nan.* at step 4 \(.*'skip', 4 bad steps in a row") as info:
        train(model, cfg, always_bad, None, tmp_path / "always")
    assert isinstance(info.value, FloatingPointError)
    initial = make_model().parameters()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), initial, strict=True))  # no step was applied

    apart = marked(repeated_sequence_batches(), {i: NAN_MARK for i in (1, 2, 3, 5, 6, 7)})
    result = train(with_bad_losses(make_model()), cfg, apart, None, tmp_path / "apart")
    assert result["skipped_steps"] == 6 and math.isfinite(result["final_loss"])


def test_stop_raises_bad_loss_on_a_nan_after_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=4, log_every=1, eval_every=0, ckpt_every=2)
    with pytest.raises(BadLoss, match=r"loss is nan.* at step 5 \(.*policy 'stop'") as info:
        train(with_bad_losses(make_model()), cfg, marked(repeated_sequence_batches(), {4: NAN_MARK}), None, tmp_path)
    assert isinstance(info.value, FloatingPointError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000002", "ckpt_000004"]


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_loss_spike_is_skipped_or_stops_training_per_the_policy(tmp_path, policy):
    logs = {}
    cfg = TrainConfig(steps=16, batch_size=4, lr=1e-2, warmup_steps=2, log_every=1, eval_every=0, ckpt_every=0,
                      spike_factor=3, bad_loss=policy)
    run = lambda: train(with_bad_losses(make_model()), cfg,  # noqa: E731
                        marked(repeated_sequence_batches(), {12: SPIKE_MARK}), None, tmp_path,
                        on_log=lambda step, m: logs.__setitem__(step, m))
    if policy == "stop":
        with pytest.raises(BadLoss, match=r"spiked to .* at step 13 \("):
            run()
        assert sorted(logs) == list(range(1, 13))
    else:
        result = run()
        assert result["skipped_steps"] == 1 and logs[13]["skipped_steps"] == 1 and "skipped_steps" not in logs[12]
        assert logs[13]["loss"] > 3 * logs[12]["loss"] and logs[16]["loss"] < logs[12]["loss"] * 1.5


def test_without_spike_factor_a_spike_is_trained_through(tmp_path):
    logs = {}
    cfg = TrainConfig(steps=16, batch_size=4, lr=1e-2, warmup_steps=2, log_every=1, eval_every=0, ckpt_every=0,
                      spike_factor=0, bad_loss="stop")
    result = train(with_bad_losses(make_model()), cfg, marked(repeated_sequence_batches(), {12: SPIKE_MARK}), None,
                   tmp_path, on_log=lambda step, m: logs.__setitem__(step, m))
    assert result["skipped_steps"] == 0 and sorted(logs) == list(range(1, 17))
    assert logs[13]["loss"] > 10 * logs[12]["loss"]  # the spike happened and was not flagged


class LoaderError(Exception):
    pass


@pytest.mark.parametrize("prefetch", [0, 2])
def test_an_error_in_the_batch_loader_surfaces_from_train_after_the_steps_before_it(tmp_path, prefetch):
    batches = repeated_sequence_batches()

    def failing(i: int):
        if i == 3:
            raise LoaderError("shard 7 is truncated")
        return batches(i)

    logs = {}
    cfg = TrainConfig(steps=10, batch_size=4, log_every=1, eval_every=0, ckpt_every=0, prefetch=prefetch)
    with pytest.raises(LoaderError, match="^shard 7 is truncated$"):
        train(make_model(), cfg, failing, None, tmp_path, on_log=lambda step, m: logs.__setitem__(step, m))
    assert sorted(logs) == [1, 2, 3]


def test_prefetching_changes_nothing_but_the_timing(tmp_path):
    models, logs = [], []
    for prefetch in (0, 2):
        model = make_model()
        cfg = TrainConfig(steps=5, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=2, log_every=1, eval_every=0,
                          ckpt_every=0, prefetch=prefetch)
        train(model, cfg, repeated_sequence_batches(), None, tmp_path / str(prefetch),
              on_log=lambda step, m: logs.append(m))
        models.append(model)
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True))
    assert len(logs) == 10 and all(m["data_ms"] >= 0 for m in logs)


def test_only_the_newest_keep_checkpoints_are_kept(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=4, log_every=5, eval_every=0, ckpt_every=2, keep_checkpoints=3)
    train(make_model(), cfg, repeated_sequence_batches(), None, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000006", "ckpt_000008", "ckpt_000010"]


def test_muon_trains_and_resumes_with_the_same_loss_trajectory(tmp_path):
    cfg = TrainConfig(steps=20, batch_size=4, lr=1e-2, warmup_steps=3, log_every=1, eval_every=0, ckpt_every=5,
                      optimizer="muon")
    reference = {}
    train(make_model(), cfg, repeated_sequence_batches(), None, tmp_path / "ref",
          on_log=lambda step, m: reference.__setitem__(step, m["loss"]))
    assert reference[1] > 3.5 and reference[20] < 0.2 * reference[1]

    resumed = {}

    def crash_at_13(step, metrics):
        resumed[step] = metrics["loss"]
        if step == 13:
            raise Crash("simulated preemption")

    with pytest.raises(Crash):
        train(make_model(), cfg, repeated_sequence_batches(), None, tmp_path / "run", on_log=crash_at_13)
    optimizer = torch.load(tmp_path / "run" / "ckpt_000010" / "optimizer.pt", weights_only=True)
    assert any("momentum_buffer" in s for s in optimizer["state"].values())
    result = train(make_model(seed=99), cfg, repeated_sequence_batches(), None, tmp_path / "run",
                   on_log=lambda step, m: resumed.__setitem__(step, m["loss"]))
    assert result["resumed_from"].endswith("ckpt_000010")
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert math.isclose(resumed[step], reference[step], rel_tol=1e-4, abs_tol=1e-5), step


def test_a_resumed_run_keeps_the_skip_count_and_the_spike_average(tmp_path):
    batches = marked(repeated_sequence_batches(), {2: NAN_MARK, 10: SPIKE_MARK})
    common = dict(batch_size=4, lr=1e-2, warmup_steps=2, log_every=1, eval_every=0, ckpt_every=0, bad_loss="skip",
                  spike_factor=3)
    first = train(with_bad_losses(make_model()), TrainConfig(steps=10, **common), batches, None, tmp_path)
    assert first["skipped_steps"] == 1
    extra = json.loads((tmp_path / "ckpt_000010" / "state.json").read_text())["extra"]
    assert extra["skipped_steps"] == 1 and extra["bad_in_a_row"] == 0 and 0 < extra["loss_avg"] < 4.2

    logs = {}
    # the spike at step 11 is the first step after the resume: only a restored running average can catch it
    second = train(with_bad_losses(make_model()), TrainConfig(steps=14, **common), batches, None, tmp_path,
                   on_log=lambda step, m: logs.__setitem__(step, m))
    assert second["resumed_from"].endswith("ckpt_000010")
    assert second["skipped_steps"] == 2 and logs[11]["skipped_steps"] == 2 and logs[14]["skipped_steps"] == 2
