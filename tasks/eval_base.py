"""Stage `eval_base`: the base model's val bits-per-byte against a unigram baseline, a few-shot multiple-choice probe
built from the crawl, and text samples."""

from __future__ import annotations

import json

import numpy as np
from pydantic import Field

from data.evals.probes import build_mc_probe, few_shot_prefix
from data.tokens.documents import read_documents
from data.tokens.shards import TokenBatches, load_tokens
from model.tokenizer import Tokenizer
from tasks.core.config import Section
from tasks.core.stage import StageRun, stage


class EvalBaseConfig(Section):
    """How much of the base model's evaluation to run."""

    val_batches: int = Field(32, ge=1, description="Val batches scored for bits per byte.")
    probe_items: int = Field(100, ge=1, description="Multiple-choice items built from held-out crawl text.")
    probe_shots: int = Field(2, ge=0, description="Solved items shown before each question.")
    samples: list[str] = Field(["The module", "def ", "This function returns"], description="Prompts to complete.")
    sample_tokens: int = Field(48, ge=1, description="Tokens generated per sample.")


@stage("eval_base", cycle="yearly", inputs=("pretrain", "tokenize", "preprocess"),
       config={"eval_base": EvalBaseConfig}, main_metric="val_bpb")
def eval_base(s: StageRun) -> dict:
    import torch  # torch-using imports inside: declaring the stage stays fast (`factory` checks input first)

    from model.checkpoint import load_model
    from model.engine import Engine
    from model.evaluate import bits_per_byte, choice_logprobs, unigram_bpb

    cfg = s.cfg.eval_base
    model_dir = s.inputs["pretrain"].path / "model"
    model, tok = load_model(model_dir), Tokenizer.from_file(model_dir / "tokenizer.json")
    model.eval()
    shards = s.inputs["tokenize"].path / "shards"
    train_tokens, val_tokens = load_tokens(shards, "train"), load_tokens(shards, "val")
    token_bytes = np.array(tok.token_bytes(), dtype=np.int64)

    seq_len = model.config.seq_len
    val_batches = TokenBatches(val_tokens, 8, seq_len, 0).sequential(cfg.val_batches)
    bpb = bits_per_byte(model, val_batches, torch.tensor(token_bytes))
    scored = np.asarray(val_tokens[: cfg.val_batches * 8 * seq_len + 1])
    baseline = unigram_bpb(np.asarray(train_tokens), scored, token_bytes)

    val_docs = list(read_documents(sorted((s.inputs["preprocess"].path / "documents").glob("val-*.parquet"))))
    items = build_mc_probe(val_docs, cfg.probe_items + cfg.probe_shots, seed=0)
    shots, probe = items[: cfg.probe_shots], items[cfg.probe_shots :]
    prefix = few_shot_prefix(shots, cfg.probe_shots)
    results = []
    for item in probe:
        scores = choice_logprobs(model, tok, prefix + item["context"], [" " + c for c in item["choices"]])
        pick = int(np.argmax(scores))
        results.append({"id": item["id"], "correct": pick == item["answer"], "pick": pick, "answer": item["answer"]})
    accuracy = sum(r["correct"] for r in results) / max(1, len(results))
    chance = 1 / len(probe[0]["choices"]) if probe else 0.0

    engine = Engine(model, tok)
    samples = [{"prompt": p, "completion": engine.complete(p, max_new_tokens=cfg.sample_tokens)} for p in cfg.samples]
    (s.out / "samples.json").write_text(json.dumps(samples, indent=2))
    (s.out / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))

    metrics = {
        "val_bpb": bpb,
        "unigram_bpb": baseline,
        "bpb_ratio_to_unigram": bpb / baseline,
        "probe_accuracy": accuracy,
        "probe_chance": chance,
    }
    s.table("scores", [{"metric": k, "value": round(v, 4)} for k, v in metrics.items()], "base model evaluation")
    s.markdown("samples", "\n\n".join(f"**{x['prompt']}**{x['completion']}" for x in samples))
    s.log.info(f"eval_base: val bpb {bpb:.3f} (unigram {baseline:.3f}), probe {accuracy:.2f} (chance {chance:.2f})")
    return {"counts": {"probe_items": len(results)}, "metrics": metrics}
