"""Peak memory of crawl reading + preprocess as the crawl grows: 1x and --scale x the same shards' worth of pages.

Every shard is read, filtered and written as a stream (bounded by the shard writer's row group, not by the shard or
the crawl), and the run-wide dedup holds one MinHash bucket / phrase partition at a time, so peak RSS should stay
flat while the crawl grows --scale times. Each size runs in a fresh process (ru_maxrss never goes down).

Usage: python bench/memory.py [--pages 300] [--scale 10] [--workers 2] [--rows-per-shard 100] [--workdir DIR]
Last line: `ratio: X.XX` = peak RSS at 1x / peak RSS at --scale x (1.00 = flat; higher is better).
"""

from __future__ import annotations

import os
import sys

# bench/tokenize.py shadows the standard library's `tokenize` for scripts in this folder: keep it off the path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def measure(warc: Path, copies: int, out: Path, workers: int, rows_per_shard: int) -> dict:
    """In this (fresh) process: preprocess `copies` copies of the WARC; the peaks and counts as a dict."""
    from tasks.core.config import load_config
    from tasks.preprocess import preprocess_warc

    started = time.perf_counter()
    cfg = load_config("tiny").preprocess  # thresholds for documentation pages: most pages go through every step
    result = preprocess_warc([warc] * copies, out, workers=workers, cfg=cfg, rows_per_shard=rows_per_shard)
    return {"copies": copies, "records": result["records"], "kept": result["kept"],
            "input_mb": round(copies * warc.stat().st_size / 2**20, 1),
            "raw_shards": len(list((out / "crawl" / "documents").glob("*.parquet"))),
            "seconds": round(time.perf_counter() - started, 1),
            "worker_peak_rss_mb": round(result["worker_peak_rss_mb"], 1),
            "driver_peak_rss_mb": round(result["driver_peak_rss_mb"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=300, help="pages in the sample WARC (1x)")
    parser.add_argument("--scale", type=int, default=10, help="the larger crawl is this many copies")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows-per-shard", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("WARC", "COPIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-memory-"))

    if args.child:
        out = workdir / f"x{args.child[1]}"
        shutil.rmtree(out, ignore_errors=True)
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]), out, args.workers, args.rows_per_shard)))
        shutil.rmtree(out, ignore_errors=True)
        return

    from data.samples.warc import build_sample_warc

    warc = workdir / f"sample-{args.pages}.warc.gz"
    if not warc.exists():
        build_sample_warc(warc, max_pages=args.pages)
    rows = []
    for copies in (1, args.scale):
        cmd = [sys.executable, __file__, "--child", str(warc), str(copies), "--workers", str(args.workers),
               "--rows-per-shard", str(args.rows_per_shard), "--workdir", str(workdir)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        print(json.dumps(rows[-1]))
    small, large = rows
    peak = {r["copies"]: max(r["worker_peak_rss_mb"], r["driver_peak_rss_mb"]) for r in rows}
    print(f"{args.scale}x the crawl ({large['input_mb']} MB of WARC, {large['raw_shards']} shards): peak RSS "
          f"{peak[args.scale]:.0f} MB vs {peak[1]:.0f} MB at 1x ({small['input_mb']} MB, {small['raw_shards']} shards)")
    print(f"ratio: {peak[1] / peak[args.scale]:.2f}")


if __name__ == "__main__":
    main()
