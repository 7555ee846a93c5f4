"""The training jobs the stages run (model/jobs.py): finetuning reports a val loss only when there are val
conversations, never one measured on a slice of the train set."""
import json

import pytest

from model.checkpoint import save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.jobs import finetune_job
from model.tokenizer import train_bpe
from model.trainer import TrainConfig, train

QA = [("What is two plus two?", "Two plus two is four."), ("Name a red fruit.", "An apple is a red fruit."),
      ("Where do fish live?", "Fish live in water."), ("What color is the sky?", "The sky is blue.")]


def convo(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small base model with its tokenizer, as the pretrain stage leaves it."""
    out = tmp_path_factory.mktemp("base")
    tok = train_bpe([q + " " + a for q, a in QA] * 20, vocab_size=300)
    save_model(GPT(GPTConfig(vocab_size=tok.vocab_size, seq_len=64, n_layer=1, n_embd=32, n_head=2, n_kv_head=2,
                             mlp_hidden=96)), out)
    tok.save(out / "tokenizer.json")
    return out


def labels(directory, val: list[dict]):
    directory.mkdir()
    (directory / "conversations_train.jsonl").write_text("".join(json.dumps(convo(*qa)) + "\n" for qa in QA))
    (directory / "conversations_val.jsonl").write_text("".join(json.dumps(c) + "\n" for c in val))
    return directory


@pytest.mark.parametrize("val", [[], [convo("What is three plus one?", "Three plus one is four.")]],
                         ids=["no-val", "val"])
def test_finetuning_reports_val_loss_only_with_val_conversations(base, tmp_path, val):
    args = {"base": str(base), "init_from": None, "labels": str(labels(tmp_path / "labels", val)), "batch_size": 2,
            "seed": 0, "eval_batches": 2}
    job = finetune_job(args)
    assert job.info["conversations"] == 4 and job.info["val_conversations"] == len(val)
    logs = {}
    cfg = TrainConfig(steps=4, batch_size=2, log_every=1, eval_every=2, ckpt_every=0, warmup_steps=1)
    result = train(job.model, cfg, job.train_batches, job.val_batches, tmp_path / "ckpt",
                   on_log=lambda step, m: logs.__setitem__(step, m))
    assert sorted(logs) == [1, 2, 3, 4]
    evaluated = [step for step, m in logs.items() if "val_loss" in m]
    if val:
        assert evaluated == [2, 4] and result["final_val_loss"] == logs[4]["val_loss"] > 0
    else:
        assert job.val_batches is None and evaluated == [] and result["final_val_loss"] is None
