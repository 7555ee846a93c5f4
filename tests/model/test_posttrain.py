"""The post-SFT loop: schedule, resume after a crash, and the guard's rollback."""

import pytest
import torch

from model.posttrain import LoopConfig, lr_at, run_loop


class Crash(Exception):
    pass


def _toy(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _step_fn(model):
    def step(i: int):
        g = torch.Generator().manual_seed(i)  # deterministic in the step, as the loop asks
        x = torch.randn(16, 4, generator=g)
        loss = ((model(x).squeeze(-1) - x.sum(-1)) ** 2).mean()
        return loss, {"x_mean": float(x.mean())}
    return step


def _eval(model):
    x = torch.linspace(-1, 1, 32).repeat(4, 1).T
    return lambda: {"val_loss": float(((model(x).squeeze(-1) - x.sum(-1)) ** 2).mean())}


CFG = LoopConfig(steps=12, lr=5e-2, warmup_steps=2, eval_every=4, ckpt_every=3, log_every=1, device="cpu")


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = LoopConfig(steps=10, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    assert [lr_at(s, cfg) for s in (0, 1)] == [0.5, 1.0]
    assert lr_at(2, cfg) == pytest.approx(1.0) and lr_at(10, cfg) == pytest.approx(0.1)
    assert lr_at(6, cfg) < lr_at(3, cfg)


def test_it_learns_and_evaluates_before_between_and_after(tmp_path):
    model = _toy()
    result = run_loop(model, CFG, _step_fn(model), tmp_path / "ckpt", evaluate=_eval(model))
    assert [step for step, _ in result["evals"]] == [0, 4, 8, 12]
    assert result["evals"][-1][1]["val_loss"] < 0.5 * result["evals"][0][1]["val_loss"]
    assert result["steps"] == 12 and result["resumed_from_step"] == 0 and result["stopped"] is None


def test_a_rerun_after_a_crash_resumes_and_ends_bitwise_equal(tmp_path):
    whole = _toy()
    run_loop(whole, CFG, _step_fn(whole), tmp_path / "a", evaluate=_eval(whole))

    def crash_at_7(step, metrics):
        if step == 7 and "loss" in metrics:
            raise Crash

    crashed = _toy()
    with pytest.raises(Crash):
        run_loop(crashed, CFG, _step_fn(crashed), tmp_path / "b", evaluate=_eval(crashed), on_log=crash_at_7)
    resumed = _toy(seed=99)  # a fresh process: the weights come from the checkpoint
    result = run_loop(resumed, CFG, _step_fn(resumed), tmp_path / "b", evaluate=_eval(resumed))
    assert result["resumed_from_step"] == 6
    assert [step for step, _ in result["evals"]] == [0, 4, 8, 12]  # the evaluations before the crash are kept
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_guard_stops_the_run_and_rolls_back_to_its_last_accepted_evaluation(tmp_path):
    model = _toy()
    seen = {}

    def evaluate():
        step = len(seen)
        seen[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"reward": float(step), "pref_accuracy": 0.8 if step < 2 else 0.5}

    def guard(evals):
        return "preference accuracy fell" if evals[-1][1]["pref_accuracy"] < evals[0][1]["pref_accuracy"] - 0.1 \
            else None

    result = run_loop(model, CFG, _step_fn(model), tmp_path / "ckpt", evaluate=evaluate, guard=guard)
    assert result["stopped"] == "preference accuracy fell" and result["rolled_back_to"] == 4
    assert result["steps"] == 8
    for name, value in model.state_dict().items():  # the weights evaluated at step 4, not those of step 8
        assert torch.equal(value, seen[1][name])
    again = run_loop(model, CFG, _step_fn(model), tmp_path / "ckpt", evaluate=evaluate, guard=guard)
    assert again["stopped"] == "preference accuracy fell" and again["steps"] == 8  # a rerun does not train on


def test_the_first_evaluation_is_the_baseline_the_guard_never_stops(tmp_path):
    model = _toy()
    seen = []

    def guard(evals):
        seen.append(len(evals))
        return "always"

    result = run_loop(model, CFG, _step_fn(model), tmp_path / "ckpt", evaluate=_eval(model), guard=guard)
    assert seen == [2] and result["stopped"] == "always" and result["rolled_back_to"] == 0 and result["steps"] == 4
