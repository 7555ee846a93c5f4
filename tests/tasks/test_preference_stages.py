"""The reward_model and preference stages built as their Prefect tasks build them (tasks.core.stage.execute: key, MLflow
run, manifest) on micro inputs made here: a random micro SFT model and generated comparisons (building real ones means
pretraining and finetuning)."""

import json

import pytest
import torch
from prefect.states import State

from data.chat.labels import write_jsonl
from data.chat.synthetic import generate_comparisons
from model.checkpoint import save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.tokenizer import train_bpe
from tasks.core.artifacts import Artifact
from tasks.core.config import load_config
from tasks.core.registry import spec
from tasks.core.stage import Context, execute
from tasks.core.tracking import client

MICRO = ["reward_model.steps=4", "reward_model.eval_every=2", "reward_model.batch_size=4",
         "preference.steps=4", "preference.eval_every=2", "preference.batch_size=4", "preference.eval_items=2",
         "preference.max_new_tokens=8", "preference.k=2", "preference.prompts_per_step=2"]


@pytest.fixture(scope="module", autouse=True)
def one_mlflow_store(tmp_path_factory):
    """The tests' stage runs share one MLflow database: making one costs seconds (schema migrations)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        yield


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> dict[str, Artifact]:
    """A finetune artifact (a random micro model with a BPE tokenizer) and an ingest_labels one (generated
    comparisons, split 40 / 8, and a few conversations)."""
    root = tmp_path_factory.mktemp("inputs")
    comparisons = generate_comparisons(48, seed=1)
    labels = root / "ingest_labels"
    write_jsonl(labels / "comparisons_train.jsonl", comparisons[:40])
    write_jsonl(labels / "comparisons_val.jsonl", comparisons[40:])
    conversations = [{"messages": [{"role": "user", "content": c["prompt"]},
                                   {"role": "assistant", "content": c["chosen"]}]} for c in comparisons[:4]]
    write_jsonl(labels / "conversations_train.jsonl", conversations)
    write_jsonl(labels / "conversations_val.jsonl", [])
    tok = train_bpe([json.dumps(c) for c in comparisons] * 2, vocab_size=400)
    torch.manual_seed(0)
    folder = root / "finetune" / "model"
    save_model(GPT(GPTConfig(vocab_size=tok.vocab_size, seq_len=128, n_layer=1, n_embd=32, n_head=2, n_kv_head=2,
                             mlp_hidden=64)), folder)
    tok.save(folder / "tokenizer.json")
    return {"finetune": Artifact("finetune", "f", root / "finetune", {"build_id": "finetune-1"}),
            "ingest_labels": Artifact("ingest_labels", "l", labels, {"build_id": "labels-1"})}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One workdir for the module: a stage built by one test is reused (not rebuilt) by the next."""
    return tmp_path_factory.mktemp("work")


def build(name: str, workdir, inputs: dict[str, Artifact], *overrides: str) -> Artifact:
    result = execute(spec(name), Context(str(workdir), load_config("tiny", [*MICRO, *overrides])), inputs)
    return result.data if isinstance(result, State) else result


def test_the_reward_model_is_trained_evaluated_saved_and_registered(workdir, upstream, prefect_server):
    from model.preference import RewardModel

    rm = build("reward_model", workdir, upstream)
    assert {"pref_accuracy", "pref_accuracy_before", "val_loss", "seconds"} <= set(rm.metrics)
    assert rm.metrics["pref_accuracy_before"] == 0.5 and rm.counts["val_pairs"] == 8
    assert len(RewardModel.load(rm.path / "reward").score(["Hi"], ["Hello!"])) == 1
    versions = client(workdir).search_model_versions("name='reward'")
    assert [v.tags["artifact_key"] for v in versions] == [rm.key]
    assert rm.manifest["info"]["model_version"] == str(versions[0].version)


def test_dpo_then_rlhf_report_their_metrics_under_the_agreed_names(workdir, upstream, prefect_server):
    from model.evaluate import load_assistant

    inputs = {**upstream, "reward_model": build("reward_model", workdir, upstream)}
    dpo = build("preference", workdir, inputs)
    assert {"reward_margin", "reward_margin_before", "pref_accuracy", "pref_accuracy_before", "win_rate",
            "win_rate_checks", "seconds"} <= set(dpo.metrics)
    assert dpo.metrics["reward_margin_before"] == 0.0 and dpo.counts["steps"] == 4
    load_assistant(dpo.path / "model", "cpu")

    rlhf = build("preference", workdir, inputs, "preference.method=rlhf", "preference.steps=2")
    assert rlhf.key != dpo.key
    assert {"win_rate", "rm_score", "rm_score_before", "pref_accuracy", "task_score", "kl_greedy", "repetition",
            "length_ratio", "stopped"} <= set(rlhf.metrics)
    assert rlhf.manifest["info"]["method"] == "rlhf" and (rlhf.path / "model" / "model.safetensors").exists()


def test_disabled_stages_pass_the_sft_model_on_and_rlhf_needs_a_reward_model(tmp_path, upstream, prefect_server):
    off = ["reward_model.enabled=false", "preference.enabled=false"]
    rm = build("reward_model", tmp_path, upstream, *off)
    assert rm.metrics == {} and rm.manifest["info"] == {"skipped": True} and not (rm.path / "reward").exists()
    pref = build("preference", tmp_path, {**upstream, "reward_model": rm}, *off)
    assert pref.metrics == {} and pref.manifest["info"] == {"skipped": True}
    sft = upstream["finetune"].path / "model"
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (pref.path / "model" / name).read_bytes() == (sft / name).read_bytes()

    cfg = load_config("tiny", ["reward_model.enabled=false", "preference.method=rlhf"])
    with pytest.raises(ValueError, match="reward_model.enabled is false"):
        spec("preference").check(cfg, tmp_path)
    with pytest.raises(ValueError, match="needs a reward model"):
        build("preference", tmp_path, {**upstream, "reward_model": rm}, "reward_model.enabled=false",
              "preference.method=rlhf")
