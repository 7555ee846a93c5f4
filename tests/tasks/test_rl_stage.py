"""The rl stage's build on micro artifacts (a one-layer model that likes to answer '1', a few labels): the manifest's
metric names, held-out problems that are never trained on, resuming after a crash, and the disabled path."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import build_skill, held_out_items
from model.checkpoint import load_model, save_model
from model.rl_config import RLConfig
from tasks.evals import EvalsConfig
from tasks.rl import HELD_OUT_SEED_OFFSET, problems
from tasks.rl import rl as rl_stage
from tests.model.test_rl import micro_policy, tok  # noqa: F401  (tok: the module's tokenizer fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeStageRun(SimpleNamespace):
    """What the build function uses of StageRun, recorded (the stage runs through Prefect and MLflow in the e2e
    pipeline tests; these look at its training and held-out sets up close)."""

    name = "rl"
    log = logging.getLogger("test")

    def metrics(self, metrics: dict, step: int = 0) -> None:
        self.logged = [*getattr(self, "logged", []), (step, metrics)]

    def table(self, name: str, rows: list[dict], description: str = "") -> None:
        self.tables = {**getattr(self, "tables", {}), name: rows}

    def image(self, name: str, path, description: str = "") -> None:
        self.images = {**getattr(self, "images", {}), name: path}

    def progress(self, fraction: float) -> None:
        self.fractions = [*getattr(self, "fractions", []), fraction]


def user(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}


def write_labels(folder, train=(), val=()):
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "conversations_train.jsonl", [user("Hello there"), *map(user, train)])
    write_jsonl(folder / "conversations_val.jsonl", [user("Good morning"), *map(user, val)])
    comparison = {"id": "c1", "prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}
    write_jsonl(folder / "comparisons_train.jsonl", [comparison])
    write_jsonl(folder / "comparisons_val.jsonl", [])
    return folder


@pytest.fixture
def start(tmp_path, tok):  # noqa: F811
    """A 'preference' artifact: a micro policy leaning towards '1' (right when the letter appears once)."""
    model = micro_policy(tok, 0.0, end_logit=0.7)
    with torch.no_grad():
        model.lm_head.weight[tok.encode("1")[0], 0] = 0.7
    folder = tmp_path / "preference"
    save_model(model, folder / "model")
    tok.save(folder / "model" / "tokenizer.json")
    return folder


def small(**kw) -> SimpleNamespace:
    rl = RLConfig(**{**dict(skills=["letter_count"], steps=4, lr=1e-2, warmup_steps=0, k=4, prompts_per_step=2,
                            max_new_tokens=8, train_problems=12, eval_problems=4, eval_k=2, eval_every=2,
                            ckpt_every=2, log_every=1, device="cpu"), **kw})
    return SimpleNamespace(rl=rl, evals=EvalsConfig(skills=["letter_count"], items_per_task=2))


def build(cfg, start, labels, out):
    s = FakeStageRun(cfg=cfg, inputs={"preference": SimpleNamespace(path=start),
                                      "ingest_labels": SimpleNamespace(path=labels)}, out=out)
    out.mkdir(parents=True, exist_ok=True)
    return s, rl_stage.build(s)


def prompts(items) -> set[str]:
    return {i["messages"][-1]["content"].lower() for i in items}


def test_held_out_problems_are_never_trained_on_nor_evals_items_nor_val_prompts(tmp_path):
    cfg = RLConfig(skills=["letter_count", "arithmetic"], train_problems=40, eval_problems=20, seed=3)
    evals = EvalsConfig(skills=["letter_count", "arithmetic"], items_per_task=5, seed=3)  # the training stream's start
    naive_held = held_out_items(cfg.skills, 20, cfg.seed + HELD_OUT_SEED_OFFSET, [])
    naive_train = [ex.prompt for ex in build_skill("arithmetic").examples(40, cfg.seed)]
    in_train_labels, in_val_labels = naive_held[0]["messages"][0]["content"], naive_train[-1]
    labels = write_labels(tmp_path / "labels", train=[in_train_labels], val=[in_val_labels])

    train, held = problems(cfg, evals, labels)
    assert len(train) == 80 and len(held) == 40
    assert not prompts(train) & prompts(held)
    assert in_train_labels.lower() not in prompts(held)  # a prompt an earlier stage trained on is not held out
    assert in_val_labels.lower() not in prompts(train)  # nor is a val prompt trained on
    scored = held_out_items(evals.skills, evals.items_per_task, evals.seed, read_jsonl(labels /
                                                                                        "conversations_train.jsonl"))
    assert len(prompts(scored)) == 10 and not prompts(scored) & prompts(train)  # the evals stage's items stay unseen


def test_the_stage_trains_writes_the_model_and_reports_pass_rates_before_and_after(tmp_path, start):
    labels = write_labels(tmp_path / "labels")
    s, result = build(small(), start, labels, tmp_path / "out")
    m = result["metrics"]
    for name in ("pass@1", "pass@k", "greedy"):
        for when in ("before", "after"):
            assert 0.0 <= m[f"{name}_{when}"] <= 1.0 and f"{name}_{when}.letter_count" in m
    assert m["problems_kept"] + m["problems_dropped"] == 12 and m["problems_kept"] > 0 and m["seconds"] > 0
    assert result["counts"]["steps"] == 4 and result["info"]["mode"] == "grpo"
    trained = load_model(s.out / "model")
    assert (s.out / "model" / "tokenizer.json").exists()
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                      load_model(start / "model").state_dict().values(), strict=True))
    held = read_jsonl(s.out / "held_out.jsonl")
    assert len(held) == 4 and not prompts(held) & prompts(read_jsonl(s.out / "train_problems.jsonl"))
    assert [r["skill"] for r in s.tables["pass-rates"]] == ["letter_count", "all"]
    assert s.images["curves"].exists() and s.fractions[-1] == 1.0
    assert any("pass@1" in logged for _, logged in s.logged)  # held-out pass rates per evaluation, to MLflow
    assert json.dumps(result)  # the manifest holds it


def test_a_crashed_stage_resumes_from_its_checkpoint_to_the_same_model(tmp_path, start, monkeypatch):
    labels = write_labels(tmp_path / "labels")
    _, whole = build(small(), start, labels, tmp_path / "whole")

    import model.rl

    real, steps = model.rl.verifiable_rewards, []

    def crash_at_step_3(items, texts, weight=0.0):
        steps.extend([1] if len(items) == 2 * 4 else [])  # a training step's 2 prompts x 4 answers (not selection's)
        if len(steps) == 4:  # the checkpoint is at step 2
            raise RuntimeError("killed")
        return real(items, texts, weight)

    monkeypatch.setattr(model.rl, "verifiable_rewards", crash_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        build(small(), start, labels, tmp_path / "crashed")
    monkeypatch.setattr(model.rl, "verifiable_rewards", real)
    s, resumed = build(small(), start, labels, tmp_path / "crashed")
    assert resumed["counts"]["resumed_from_step"] == 2
    a, b = load_model(tmp_path / "whole" / "model"), load_model(s.out / "model")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert resumed["metrics"]["pass@1_after"] == whole["metrics"]["pass@1_after"]


def test_rejection_mode_trains_on_the_best_correct_answers(tmp_path, start):
    labels = write_labels(tmp_path / "labels")
    s, result = build(small(mode="rejection", rounds=2, sft_steps=2, sft_batch_size=2), start, labels, tmp_path / "o")
    assert result["counts"]["steps"] == 4 and result["info"]["mode"] == "rejection"
    chosen = json.loads((s.out / "checkpoints" / "round_000.json").read_text())["conversations"]
    assert chosen and all(c[-1]["role"] == "assistant" for c in chosen)
    assert "pass@1_after" in result["metrics"]


def test_a_disabled_stage_passes_its_input_model_on(tmp_path, start):
    labels = write_labels(tmp_path / "labels")
    s, result = build(small(enabled=False), start, labels, tmp_path / "out")
    assert result["metrics"] == {} and result["info"] == {"skipped": True}
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (s.out / "model" / name).read_bytes() == (start / "model" / name).read_bytes()
        assert (s.out / "model" / name).stat().st_ino == (start / "model" / name).stat().st_ino  # a hard link


def test_the_stage_comes_after_preference_and_is_keyed_on_the_evals_items_it_keeps_unseen():
    assert (rl_stage.name, rl_stage.cycle, rl_stage.inputs) == ("rl", "weekly", ("preference", "ingest_labels"))
    assert (rl_stage.main_metric, rl_stage.resumable) == ("pass@1_after", True)
    assert rl_stage.config == {"rl": RLConfig, "evals": EvalsConfig}


def test_a_model_that_solves_no_training_problem_is_passed_on_untrained(tmp_path, tok):  # noqa: F811
    folder = tmp_path / "preference"
    save_model(micro_policy(tok, 0.0, end_logit=0.7), folder / "model")  # no leaning towards any digit
    tok.save(folder / "model" / "tokenizer.json")
    s, result = build(small(), folder, write_labels(tmp_path / "labels"), tmp_path / "out")
    m = result["metrics"]
    assert (m["problems_kept"], m["problems_dropped"], result["counts"]["steps"]) == (0, 12, 0)
    assert m["pass@1_after"] == m["pass@1_before"] and m["greedy_after"] == m["greedy_before"]
    assert (s.out / "model" / "model.safetensors").read_bytes() == (folder / "model" / "model.safetensors").read_bytes()
