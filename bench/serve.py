"""Streaming chat throughput of the real server (serve/ over model.engine.BatchGenerator) with 1 client, then with
--clients concurrent clients: how much continuous batching gains.

The server is the one `factory serve` runs (flows.serving.build_app on a model folder, its request store in a temp
workdir) under uvicorn on a free 127.0.0.1 port, in a thread of this process. The model is the `tiny` preset's shape
with random weights, its lm_head sharpened and the end-of-turn rows damped so every answer runs to max_tokens; or
`--model DIR` (config.json, model.safetensors, tokenizer.json). Each client (an asyncio task over one shared httpx
client) sends its chat requests one after another (`stream: true`, temperature 0, fixed max_tokens, usage in the
last chunk); a level stops starting requests after --duration seconds and cuts those still open --grace seconds
later (counted as errors), so a run always ends.

Reported per level: requests, errors, time to first token (the first chunk with text) and latency (to `[DONE]`),
p50/p99, and generated tokens/s (completion tokens of all requests over the level's wall time). Rounds alternate
which level goes first; each level's best round is reported (other processes share the cores: the best round is the
one least disturbed).

Usage: python bench/serve.py [--model DIR] [--clients 32] [--requests 8] [--single-requests 32] [--max-tokens 64]
       [--rounds 2] [--duration 20] [--grace 10] [--threads N] [--quick]
Last line: `ratio: X.XX` = tokens/s at --clients clients / tokens/s at 1 client (higher is better).
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py shadows the standard library's `tokenize` for scripts in this folder: keep it off the path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
# the repository root: serve/ may be newer than the virtual environment's editable install
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import torch  # noqa: E402

from model.checkpoint import save_model  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.tokenizer import train_bpe  # noqa: E402

QUESTIONS = ["What is the capital of France?", "How many letters are in the word banana?",
             "Add 12 and 30.", "Write a haiku about the sea.", "Why is the sky blue?",
             "Name three prime numbers.", "Translate 'good morning' into German.", "What does a compiler do?"]


# --------------------------------------------------------------------------------------------------- the server


def synthetic_tokenizer(vocab_size: int):
    """A byte-level BPE of exactly the preset's vocab size, trained in a second on pseudo-words with a Zipf
    distribution (every id the model can sample decodes to text)."""
    rng = random.Random(0)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    words = ["".join(rng.choices(letters, weights=range(26, 0, -1), k=rng.randint(2, 9))) for _ in range(6000)]
    weights = [1 / (i + 1) for i in range(len(words))]
    texts = [" ".join(rng.choices(words, weights=weights, k=200)) + "." for _ in range(500)]
    return train_bpe(texts, vocab_size=vocab_size)


def make_model_dir(folder: Path) -> Path:
    """The tiny preset's model shape with random weights, sharpened so answers run to max_tokens, as a model
    folder the server loads."""
    from tasks.core.config import load_config

    preset = load_config("tiny")
    tok = synthetic_tokenizer(preset.tokenizer.vocab_size)
    torch.manual_seed(0)
    model = GPT(preset.model.gpt_config(tok.vocab_size))
    with torch.no_grad():
        model.lm_head.weight.mul_(8)  # greedy choices far from ties
        for token in ("<|assistant_end|>", "<|user_start|>", "<|bos|>"):  # the chat stop tokens: never chosen
            model.lm_head.weight[tok.special_id(token)] *= 0.05
    save_model(model, folder)
    tok.save(folder / "tokenizer.json")
    return folder


# --------------------------------------------------------------------------------------------------- the clients


@dataclass
class Result:
    ttft: float | None = None
    latency: float | None = None
    tokens: int = 0
    error: str | None = None


async def chat(client: httpx.AsyncClient, url: str, model: str, question: str, max_tokens: int) -> Result:
    """One streamed chat request, timed from sending it to its first text and to `[DONE]`."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "temperature": 0}
    result = Result()
    start = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            result.error = f"HTTP {response.status_code}"
            return result
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                result.latency = time.perf_counter() - start
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                result.error = chunk["error"].get("message", "error")
                return result
            if result.ttft is None and any(c["delta"].get("content") for c in chunk["choices"]):
                result.ttft = time.perf_counter() - start
            if chunk.get("usage"):
                result.tokens = chunk["usage"]["completion_tokens"]
    if result.latency is None:
        result.error = "the stream ended without [DONE]"
    return result


async def client_loop(client: httpx.AsyncClient, url: str, model: str, index: int, requests: int, max_tokens: int,
                      stop_at: float, cut_at: float, results: list[Result]) -> None:
    """One client: up to `requests` requests one after another, none started after stop_at, none open past cut_at."""
    for i in range(requests):
        if time.monotonic() >= stop_at:
            return
        question = QUESTIONS[(index + i) % len(QUESTIONS)]
        try:
            results.append(await asyncio.wait_for(chat(client, url, model, question, max_tokens),
                                                  cut_at - time.monotonic()))
        except TimeoutError:
            results.append(Result(error="cut at the deadline"))
        except httpx.HTTPError as exc:
            results.append(Result(error=f"{type(exc).__name__}: {exc}"))


async def level(url: str, model: str, clients: int, requests: int, max_tokens: int, duration: float,
                grace: float) -> dict:
    """`clients` concurrent clients of `requests` requests each; the level's figures."""
    results: list[Result] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(duration + grace)) as client:
        start = time.perf_counter()
        stop_at = time.monotonic() + duration
        cut_at = stop_at + grace
        await asyncio.gather(*(client_loop(client, url, model, c, requests, max_tokens, stop_at, cut_at, results)
                               for c in range(clients)))
        wall = time.perf_counter() - start
    ok = [r for r in results if r.error is None]
    errors = [r.error for r in results if r.error is not None]
    if errors:
        print(f"{clients} clients: {len(errors)} errors, e.g. {errors[0]}")
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    latencies = [r.latency for r in ok]
    return {"clients": clients, "requests": len(results), "errors": len(errors),
            "ttft_p50": percentile(ttfts, 50), "ttft_p99": percentile(ttfts, 99),
            "latency_p50": percentile(latencies, 50), "latency_p99": percentile(latencies, 99),
            "tokens": sum(r.tokens for r in ok), "wall": wall, "tokens_per_s": sum(r.tokens for r in ok) / wall}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank, as latency reports use); nan when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: tiny shape, random)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients of the second level")
    parser.add_argument("--requests", type=int, default=8, help="requests per client at --clients clients")
    parser.add_argument("--single-requests", type=int, default=32, help="requests of the single client")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds a level may start requests")
    parser.add_argument("--grace", type=float, default=10.0, help="then seconds before open requests are cut")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both levels (alternating which goes first)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: the server's, the cores but one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 clients, 2+2 requests of 8 tokens")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.requests, args.single_requests, args.max_tokens, args.rounds = 4, 2, 2, 8, 1
    if min(args.requests, args.single_requests, args.max_tokens, args.rounds) < 1 or args.duration <= 0:
        parser.error("--requests, --single-requests, --max-tokens, --rounds and --duration must be positive")
    if args.clients < 2:
        parser.error("--clients must be >= 2 (the single client is always measured)")
    logging.getLogger("factory.serve").setLevel(logging.WARNING)

    from flows.serving import build_app, running
    from serve.app import ServeSettings
    from serve.engine import set_threads

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = args.model or make_model_dir(Path(tmp) / "bench")
        settings = ServeSettings(max_batch=max(32, args.clients), max_queue=max(64, 2 * args.clients),
                                 max_tokens=max(1024, args.max_tokens))
        set_threads(args.threads)  # as factory serve does
        app = build_app(Path(tmp) / "work", str(folder), settings, poll_s=0)
        cfg = app.state.served.current.gen.model.config
        print(f"model: {cfg.n_layer} layers x {cfg.n_embd}, vocab {cfg.vocab_size} "
              f"({'random, sharpened' if args.model is None else folder}), threads {torch.get_num_threads()}, "
              f"max_batch {settings.max_batch}, max_tokens {args.max_tokens} per request, streamed")
        name = app.state.served.name
        with running(app) as url:
            def run(clients: int, requests: int) -> dict:
                return asyncio.run(level(url, name, clients, requests, args.max_tokens, args.duration, args.grace))

            run(2, 1)  # untimed: the first forward passes allocate, the first request opens the store
            levels = {1: args.single_requests, args.clients: args.requests}
            best: dict[int, dict] = {}
            for r in range(args.rounds):
                order = list(levels.items()) if r % 2 == 0 else list(levels.items())[::-1]
                rows = {clients: run(clients, requests) for clients, requests in order}
                for clients, row in rows.items():
                    if clients not in best or row["tokens_per_s"] > best[clients]["tokens_per_s"]:
                        best[clients] = row
                print(f"round {r}: " + " | ".join(f"{c} client{'s' if c > 1 else ''} {rows[c]['tokens_per_s']:,.0f} "
                                                  f"tok/s" for c in levels))

    print(f"{'clients':>7} | {'requests':>8} | {'errors':>6} | {'ttft p50':>8} | {'ttft p99':>8} | "
          f"{'latency p50':>11} | {'latency p99':>11} | {'tokens/s':>8}")
    for r in best.values():
        print(f"{r['clients']:>7} | {r['requests']:>8} | {r['errors']:>6} | {r['ttft_p50']:>7.3f}s | "
              f"{r['ttft_p99']:>7.3f}s | {r['latency_p50']:>10.3f}s | {r['latency_p99']:>10.3f}s | "
              f"{r['tokens_per_s']:>8,.0f}")
    single, many = best[1], best[args.clients]
    if single["tokens_per_s"] <= 0:
        raise SystemExit("the single client generated no tokens: no ratio")
    print(f"ratio: {many['tokens_per_s'] / single['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
