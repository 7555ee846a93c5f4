"""Decode tokens/s of our engine against Hugging Face transformers' `generate` on the same weights, in the same run.

The weights are ours, exported with model.hf.export_hf and loaded with LlamaForCausalLM.from_pretrained (fp32, the
default sdpa attention, DynamicCache), so both sides compute the same model. Both decode greedily and make exactly
--new-tokens tokens per sequence: ours with no stop tokens, HF with min_new_tokens = max_new_tokens. Batch 1 is
model.engine.generate against HF generate on one prompt; batch B is model.engine.BatchGenerator with B GenRequests
against HF generate on the B prompts left-padded with an attention mask. Time includes the prefill on both sides.
Before timing, a few prompts are decoded by both at batch 1: the tokens must be the same.

The model is the `tiny` preset's shape (configs/tiny.yaml) with random weights, its lm_head sharpened so greedy
choices are far from ties; or `--model DIR`, a model folder (config.json, model.safetensors, tokenizer.json).
Prompts are random token ids of different lengths after <|bos|> (throughput does not depend on what they say).

Both run on one torch thread by default (--threads 0: torch's default), so the figures measure the implementations
rather than the machine's load: on 2 cores shared with other processes, OpenMP's barriers make every op wait for a
descheduled thread (decode measured 20-40x slower at 2 threads than at 1 on a loaded 2-core machine, both sides).

Usage: python bench/generate.py [--model DIR] [--new-tokens 128] [--prompt-len 32] [--batch 8] [--rounds 5]
       [--threads 1] [--quick]
Rounds alternate who goes first; each side's best round counts (other processes share the cores: the best round is
the one least disturbed). Last line: `ratio: X.XX` = ours / HF tokens/s, the lower of the batch-1 and batch-B ratios.
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py shadows the standard library's `tokenize` for scripts in this folder: keep it off the path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from model.checkpoint import load_model  # noqa: E402
from model.engine import BatchGenerator, GenRequest, generate  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.hf import export_hf  # noqa: E402
from model.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe  # noqa: E402

CHECK_PROMPTS = 2  # prompts decoded by both before timing, to check the tokens agree


def tiny_model(tok: Tokenizer) -> GPT:
    """The tiny preset's shape with random weights; lm_head sharpened (greedy far from ties, so fp32 rounding in
    either implementation cannot flip a choice), the end-of-turn rows damped (HF's min_new_tokens masks them)."""
    from tasks.core.config import load_config

    preset = load_config("tiny")
    torch.manual_seed(0)
    model = GPT(preset.model.gpt_config(preset.tokenizer.vocab_size))
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
        for token in ("<|assistant_end|>", "<|bos|>"):
            model.lm_head.weight[tok.special_id(token)] *= 0.05
    return model.eval()


def load(args: argparse.Namespace, tmp: Path) -> tuple[GPT, Tokenizer, torch.nn.Module, Path]:
    """(our model, its tokenizer, the same weights as transformers' LlamaForCausalLM, the export folder)."""
    import transformers

    if args.model:
        model, tok = load_model(args.model).eval(), Tokenizer.from_file(args.model / "tokenizer.json")
    else:  # a tokenizer only for the export's files: the prompts are ids
        tok = train_bpe(["The quick brown fox jumps over the lazy dog. 12 + 30 = 42."] * 20, vocab_size=300)
        model = tiny_model(tok)
    out = export_hf(model, tmp / "hf", tok)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        theirs = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    return model, tok, theirs, out


def make_prompts(n: int, length: int, vocab: int, bos: int) -> list[list[int]]:
    """n prompts of random ordinary-token ids after <|bos|>, lengths spread around `length` (HF has to pad)."""
    g = torch.Generator().manual_seed(1)
    lengths = [max(2, length - n + 2 * i) for i in range(n)]
    return [[bos] + torch.randint(len(SPECIAL_TOKENS), vocab, (k - 1,), generator=g).tolist() for k in lengths]


def ours_batch1(model: GPT, prompt: list[int], new_tokens: int) -> list[list[int]]:
    return [generate(model, prompt, new_tokens)]


def ours_batched(model: GPT, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    done = BatchGenerator(model, max_batch=len(prompts)).run(GenRequest(list(p), new_tokens) for p in prompts)
    return [r.tokens for r in done]


@torch.no_grad()
def hf_generate(theirs: torch.nn.Module, prompts: list[list[int]], new_tokens: int, pad_id: int) -> list[list[int]]:
    """HF greedy generate, left-padded with an attention mask; the new tokens of each row."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = theirs.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, pad_token_id=pad_id)
    return out[:, width:].tolist()


def same_greedy_tokens(model: GPT, theirs: torch.nn.Module, prompts: list[list[int]], new_tokens: int,
                       tok: Tokenizer) -> bool:
    """Both give the same tokens at batch 1, compared up to where ours first makes an end-of-turn token (HF's
    min_new_tokens forbids those)."""
    ends = {tok.special_id("<|assistant_end|>"), tok.bos_id}
    for prompt in prompts:
        mine = ours_batch1(model, prompt, new_tokens)[0]
        hf = hf_generate(theirs, [prompt], new_tokens, tok.pad_id)[0]
        n = next((i for i, t in enumerate(mine) if t in ends), len(mine))
        if mine[:n] != hf[:n]:
            first = next(i for i in range(n) if mine[i] != hf[i])
            print(f"prompt of {len(prompt)} tokens: ours and HF differ from new token {first} "
                  f"(ours {mine[first:first + 5]}, HF {hf[first:first + 5]})")
            return False
    return True


def timed(run: Callable[[], list[list[int]]], new_tokens: int) -> float:
    """Generated tokens/s of one call; every sequence must have made exactly new_tokens tokens."""
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    if any(len(seq) != new_tokens for seq in out):
        raise RuntimeError(f"expected {new_tokens} new tokens per sequence, got {[len(s) for s in out]}")
    return len(out) * new_tokens / seconds


def measure(args: argparse.Namespace, model: GPT, tok: Tokenizer, theirs: torch.nn.Module) -> None:
    """The sanity check, then the rounds at batch 1 and batch args.batch; prints the table and the ratio."""
    cfg = model.config
    if args.prompt_len + args.batch + args.new_tokens > cfg.seq_len:
        raise SystemExit(f"--prompt-len + --batch + --new-tokens must fit in the model's seq_len={cfg.seq_len}")
    print(f"model: {model.num_params() / 1e6:.2f}M params ({cfg.n_layer} layers x {cfg.n_embd}, vocab "
          f"{cfg.vocab_size}, {'random' if args.model is None else args.model}), fp32 cpu, threads "
          f"{torch.get_num_threads()}, {args.new_tokens} new tokens per sequence, prompts ~{args.prompt_len} tokens")
    prompts = make_prompts(args.batch, args.prompt_len, cfg.vocab_size, tok.bos_id)
    same = same_greedy_tokens(model, theirs, prompts[:CHECK_PROMPTS], args.new_tokens, tok)
    print(f"same tokens: {'yes' if same else 'no'} (greedy, batch 1, {CHECK_PROMPTS} prompts)")

    n = args.new_tokens
    sides = {
        1: {"ours": lambda: ours_batch1(model, prompts[0], n),
            "hf": lambda: hf_generate(theirs, prompts[:1], n, tok.pad_id)},
        args.batch: {"ours": lambda: ours_batched(model, prompts, n),
                     "hf": lambda: hf_generate(theirs, prompts, n, tok.pad_id)},
    }
    best: dict[tuple[int, str], float] = {}
    for batch, runs in sides.items():
        for run in runs.values():  # warm up (first-call allocations, lazy inits) untimed
            run()
        for r in range(args.rounds):
            order = list(runs.items()) if r % 2 == 0 else list(runs.items())[::-1]
            rates = {name: timed(run, n) for name, run in order}
            for name, rate in rates.items():
                best[batch, name] = max(best.get((batch, name), 0.0), rate)
            print(f"batch {batch} round {r}: ours {rates['ours']:,.0f} tok/s | HF {rates['hf']:,.0f} tok/s")

    print(f"{'batch':>5} | {'ours tok/s':>11} | {'HF tok/s':>11} | {'ours/HF':>7}")
    ratios = []
    for batch in sides:
        ratios.append(best[batch, "ours"] / best[batch, "hf"])
        print(f"{batch:>5} | {best[batch, 'ours']:>11,.0f} | {best[batch, 'hf']:>11,.0f} | {ratios[-1]:>7.2f}")
    print(f"ratio: {min(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: tiny shape, random)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per sequence")
    parser.add_argument("--prompt-len", type=int, default=32, help="mean prompt length in tokens")
    parser.add_argument("--batch", type=int, default=8, help="the batched size (batch 1 is always measured)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side and batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 16 new tokens, batch 4, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.batch, args.rounds, args.prompt_len = 16, 4, 1, 16
    if args.new_tokens < 1 or args.batch < 2 or args.rounds < 1:
        parser.error("--new-tokens and --rounds must be >= 1, --batch >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:  # the export lives while HF's model may map its weights
        model, tok, theirs, _ = load(args, Path(tmp))
        measure(args, model, tok, theirs)


if __name__ == "__main__":
    main()
