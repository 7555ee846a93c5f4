"""Stage `finetune`: supervised finetuning of the base model (or of a Hugging Face Llama model named by
`finetune.init_from`) on the labelers' conversations, loss on assistant tokens only. Preference tuning on the
comparisons comes after SFT in a later version of this stage."""

from __future__ import annotations

import json

from data.sources.fingerprint import fingerprint
from model.config import FinetuneConfig
from model.identity import IdentityConfig, save_identity, with_system_message
from tasks.core.stage import StageRun, stage


def _external(cfg, workdir, inputs: dict) -> dict:
    """An imported model's files are part of the key: replacing them retrains."""
    return {"init_from": fingerprint([cfg.finetune.init_from])} if cfg.finetune.init_from else {}


@stage("finetune", cycle="weekly", inputs=("pretrain", "ingest_labels"),
       config={"finetune": FinetuneConfig, "identity": IdentityConfig}, main_metric="val_loss", resumable=True,
       external=_external, follower=lambda cfg: cfg.finetune.node_rank > 0)
def finetune(s: StageRun) -> dict:
    # torch-using imports inside: declaring the stage stays fast (`factory` checks its input first)
    from model.checkpoint import save_model
    from model.engine import Engine
    from model.jobs import PROBE, finetune_job
    from tasks.core.training import run_training

    cfg = s.cfg.finetune
    base_dir = s.inputs["pretrain"].path / "model"
    args = {
        "base": str(base_dir),
        "init_from": cfg.init_from,
        "max_seq_len": cfg.max_seq_len,
        "labels": str(s.inputs["ingest_labels"].path),
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "eval_batches": cfg.eval_batches,
    }
    start = cfg.init_from or base_dir
    job, result = run_training(s, cfg, finetune_job, args)
    if cfg.node_rank > 0:  # another node's part of a multi-node run: node 0 writes the artifact
        return {}
    s.log.info(f"finetune: {job.info['conversations']} train and {job.info['val_conversations']} val conversations "
               f"from {start}")
    model, tok = job.model.to("cpu"), job.info["tokenizer"]
    save_model(model, s.out / "model")
    tok.save(s.out / "model" / "tokenizer.json")
    # assistant.json: who it was trained to be (name, maker, system message); the stages after it carry it on, and
    # whatever runs the model reads it (model.identity.load_identity)
    save_identity(s.cfg.identity, s.out / "model")
    probe = with_system_message(PROBE, s.cfg.identity)  # asked as a chat would ask it
    answer = Engine(model, tok).chat(probe, max_new_tokens=48)
    (s.out / "sample.json").write_text(json.dumps({"messages": probe, "answer": answer}, indent=2))
    s.log.info(f"finetune: {PROBE[-1]['content']!r} -> {answer!r}")
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
            "conversations": job.info["conversations"],
        },
        "metrics": {k: v for k, v in metrics.items() if v is not None},
    }
