"""Stage `finetune`: supervised finetuning of the base model on the labelers' conversations (loss on assistant
tokens only). Preference tuning on the comparisons comes after SFT in a later version of this stage."""

from __future__ import annotations

import json
import shutil

from data.labels import read_jsonl
from model.checkpoint import load_model, save_model
from model.engine import Engine
from model.sft import ConversationBatches
from model.tokenizer import Tokenizer
from tasks.stage import StageRun, stage
from tasks.training import run_training

PROBE = [{"role": "user", "content": "Who made you?"}]


@stage("finetune", inputs=("pretrain", "ingest_labels", "register_base"), main_metric="val_loss", resumable=True)
def finetune(s: StageRun) -> dict:
    cfg = s.cfg.finetune
    base_dir = s.inputs["pretrain"].path / "model"
    model, tok = load_model(base_dir), Tokenizer.from_file(base_dir / "tokenizer.json")
    labels = s.inputs["ingest_labels"].path
    train = [r["messages"] for r in read_jsonl(labels / "conversations_train.jsonl")]
    val = [r["messages"] for r in read_jsonl(labels / "conversations_val.jsonl")]
    seq_len = model.config.seq_len
    train_batches = ConversationBatches(train, tok, cfg.batch_size, seq_len, cfg.seed)
    val_set = ConversationBatches(val or train[:64], tok, cfg.batch_size, seq_len, cfg.seed + 1)
    s.log.info(f"finetune: {len(train_batches)} train and {len(val_set)} val conversations from base {base_dir}")

    def sample(m) -> str:
        return Engine(m, tok).chat(PROBE, max_new_tokens=32)

    result = run_training(s, model, cfg, train_batches, lambda: val_set.sequential(cfg.eval_batches), sample)
    save_model(model.to("cpu"), s.out / "model")
    shutil.copy(base_dir / "tokenizer.json", s.out / "model" / "tokenizer.json")
    answer = Engine(model, tok).chat(PROBE, max_new_tokens=48)
    (s.out / "sample.json").write_text(json.dumps({"messages": PROBE, "answer": answer}, indent=2))
    s.log.info(f"finetune: {PROBE[0]['content']!r} -> {answer!r}")
    metrics = {
        "val_loss": result.get("final_val_loss"),
        "train_loss": result.get("final_loss"),
        "tokens_per_s": result.get("tokens_per_s"),
        "seconds": result.get("seconds"),
    }
    return {
        "counts": {
            "steps": result["steps"],
            "tokens": result["tokens"],
            "resumed_from_step": result["resumed_from_step"],
            "conversations": len(train_batches),
        },
        "metrics": {k: v for k, v in metrics.items() if v is not None},
    }
