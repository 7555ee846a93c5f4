"""Stage `tokenize`: document shards -> token shards (uint16 when the vocab fits, uint32 otherwise; bos before every
document), one document shard per worker, in parallel; the manifest counts documents and tokens exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from data.tokens.shards import SPLITS, plan_token_shards, token_dtype, tokenize_document_shard
from model.config import RUNTIME
from model.tokenizer import Tokenizer
from tasks.core.config import Section
from tasks.core.parallel import map_shards, resolve_workers
from tasks.core.stage import StageRun, stage


def tokenize_documents(documents: Path, tokenizer: Path, out_dir: Path, tokens_per_shard: int = 10_000_000,
                       workers: int = 0, dask_address: str | None = None,
                       on_shard: Callable[[int, int], None] | None = None) -> dict:
    """Tokenize every `{train,val}-*.parquet` under `documents` into token shards in `out_dir`; returns the counts
    (docs, tokens and token shards per split, dtype). The files are the same whatever `workers` is."""
    jobs = plan_token_shards(documents, tokenizer, out_dir, tokens_per_shard, resolve_workers(workers))
    # Largest shards first, so that no worker starts a big one when the others are about to finish.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].documents.stat().st_size)
    done = 0

    def progress(i: int, result: dict) -> None:
        nonlocal done
        done += 1
        if on_shard is not None:
            on_shard(done, len(jobs))

    results = map_shards(tokenize_document_shard, [jobs[i] for i in order], workers, dask_address,
                         name="tokenize_shard", on_result=progress)
    by_job = dict(zip(order, results, strict=True))
    counts: dict = {}
    for split in SPLITS:
        mine = [by_job[i] for i, job in enumerate(jobs) if job.prefix.startswith(f"{split}-")]
        counts[f"docs_{split}"] = sum(r["docs"] for r in mine)
        counts[f"tokens_{split}"] = sum(r["tokens"] for r in mine)
        counts[f"shards_{split}"] = sum(len(r["shards"]) for r in mine)
        counts[f"document_shards_{split}"] = len(mine)
    dtypes = {r["dtype"] for r in results} or {token_dtype(Tokenizer.from_file(tokenizer).vocab_size).name}
    (counts["dtype"],) = dtypes
    return counts


class TokenizeConfig(Section):
    """Documents to token shards."""

    tokens_per_shard: int = Field(10_000_000, ge=1, description="Tokens per shard file at most.")
    workers: int = Field(0, ge=0, json_schema_extra=RUNTIME,
                         description="Processes tokenizing document shards in parallel (0: all cores).")
    dask_address: str | None = Field(None, json_schema_extra=RUNTIME,
                                     description="A Dask scheduler (tcp://host:8786): shards run there.")


@stage("tokenize", cycle="yearly", inputs=("preprocess", "train_tokenizer"), config={"tokenize": TokenizeConfig},
       main_metric="tokens_train")
def tokenize(s: StageRun) -> dict:
    cfg = s.cfg.tokenize
    documents = s.inputs["preprocess"].path / "documents"
    where = f"Dask at {cfg.dask_address}" if cfg.dask_address else f"{resolve_workers(cfg.workers)} process(es)"

    def progress(done: int, total: int) -> None:
        s.progress(done / total)
        if done == total or done % max(1, total // 10) == 0:
            s.log.info(f"tokenize: {done}/{total} document shards")

    counts = tokenize_documents(documents, s.inputs["train_tokenizer"].path / "tokenizer.json", s.out / "shards",
                                cfg.tokens_per_shard, cfg.workers, cfg.dask_address, progress)
    s.log.info(
        f"tokenize: {counts['tokens_train']:,} train and {counts['tokens_val']:,} val tokens ({counts['dtype']}) in "
        f"{counts['shards_train']} + {counts['shards_val']} shards under {s.out / 'shards'}, from "
        f"{counts['document_shards_train']} + {counts['document_shards_val']} document shards on {where}"
    )
    return {"counts": counts, "metrics": {"tokens_train": counts["tokens_train"], "tokens_val": counts["tokens_val"]}}
