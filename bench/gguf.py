"""Our engine against llama.cpp (through llama-cpp-python) on the same model, exported with `factory export --format
gguf`: file size and next-token logit error per quantization, then decode tokens/s at batch 1, in the same run.

The model is the `tiny` preset's shape with random weights (bench/generate.py's, lm_head sharpened so greedy choices
are far from ties), or `--model DIR`, a model folder. Both decode greedily exactly --new-tokens tokens after a
prompt of random token ids (no stop token: llama.cpp's `generate` loop does not stop by itself, ours is given no stop
ids); the time includes the prefill. Before timing, the f32 file's greedy tokens must equal ours.

Both sides use one thread by default (--threads): on 2 cores shared with other processes, more threads measure the
machine's load (bench/generate.py's docstring). Rounds alternate who goes first; each side's best round counts.

Usage: python bench/gguf.py [--model DIR] [--new-tokens 128] [--prompt-len 32] [--rounds 5] [--threads 1] [--quick]
Last line: `ratio: X.XX` = ours / llama.cpp (f32 file) tokens/s.
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py shadows the standard library's `tokenize` for scripts in this folder: keep it off the path, and
# put the repository root on it (bench/generate.py's model and prompts are reused)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [os.path.dirname(HERE)]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.generate import make_prompts, tiny_model  # noqa: E402
from model.checkpoint import load_model  # noqa: E402
from model.engine import generate  # noqa: E402
from model.gguf_export import QUANTS, export_gguf  # noqa: E402
from model.tokenizer import Tokenizer, train_bpe  # noqa: E402


def llama_tokens(llm, prompt: list[int], new_tokens: int) -> list[int]:
    llm.reset()
    out = []
    for token in llm.generate(prompt, top_k=1, temp=0.0):
        out.append(token)
        if len(out) == new_tokens:
            return out
    return out


def rate(run, new_tokens: int) -> float:
    """Tokens/s of one call of `run`, which must make exactly new_tokens tokens."""
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    if len(out) != new_tokens:
        raise RuntimeError(f"expected {new_tokens} new tokens, got {len(out)}")
    return new_tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: tiny shape, random)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per sequence")
    parser.add_argument("--prompt-len", type=int, default=32, help="prompt length in tokens")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument("--threads", type=int, default=1, help="threads on both sides")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 16 new tokens, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.rounds, args.prompt_len = 16, 1, 16
    try:
        import llama_cpp
    except ImportError:
        raise SystemExit("llama-cpp-python is not installed: `make llama` builds it") from None
    torch.set_num_threads(args.threads)
    if args.model:
        model, tok = load_model(args.model).eval(), Tokenizer.from_file(args.model / "tokenizer.json")
    else:
        tok = train_bpe(["The quick brown fox jumps over the lazy dog. 12 + 30 = 42."] * 20, vocab_size=300)
        model = tiny_model(tok)
    cfg = model.config
    if args.prompt_len + args.new_tokens > cfg.seq_len:
        raise SystemExit(f"--prompt-len + --new-tokens must fit in the model's seq_len={cfg.seq_len}")
    prompt = make_prompts(1, args.prompt_len, cfg.vocab_size, tok.bos_id)[0]
    with torch.no_grad():
        ours_logits = model(torch.tensor([prompt]))[0][0].numpy()
    print(f"model: {model.num_params() / 1e6:.2f}M params ({cfg.n_layer} layers x {cfg.n_embd}, vocab "
          f"{cfg.vocab_size}, {'random' if args.model is None else args.model}), cpu, threads {args.threads}, "
          f"{args.new_tokens} new tokens after a {len(prompt)}-token prompt; our logits span "
          f"{ours_logits.min():.1f}..{ours_logits.max():.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        llms = {}
        print(f"{'quant':>5} | {'file MB':>8} | {'max |logit err|':>15} | {'mean |logit err|':>16}")
        for quant in QUANTS:
            path = export_gguf(model, tok, Path(tmp) / f"model-{quant}.gguf", quant)
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=cfg.seq_len, logits_all=True, verbose=False,
                                  n_threads=args.threads, n_threads_batch=args.threads, n_batch=cfg.seq_len)
            llm.eval(prompt)
            error = np.abs(np.array(llm.scores[: len(prompt)]) - ours_logits)
            print(f"{quant:>5} | {path.stat().st_size / 1e6:>8.2f} | {error.max():>15.2e} | {error.mean():>16.2e}")
            llms[quant] = llm
        ours = generate(model, prompt, args.new_tokens)
        same = llama_tokens(llms["f32"], prompt, args.new_tokens) == ours
        print(f"same tokens: {'yes' if same else 'no'} (greedy, f32 file, {args.new_tokens} tokens)")
        sides = {"ours": lambda: generate(model, prompt, args.new_tokens)}
        sides |= {f"llama.cpp {q}": (lambda llm=llm: llama_tokens(llm, prompt, args.new_tokens))
                  for q, llm in llms.items()}
        for run in sides.values():  # warm up untimed
            run()
        best = {name: 0.0 for name in sides}
        for r in range(args.rounds):
            order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]
            for name, run in order:
                best[name] = max(best[name], rate(run, args.new_tokens))
        print(f"{'decoder':>15} | {'tok/s':>8}")
        for name, tokens_per_s in best.items():
            print(f"{name:>15} | {tokens_per_s:>8,.0f}")
        print(f"ratio: {best['ours'] / best['llama.cpp f32']:.2f}")


if __name__ == "__main__":
    main()
