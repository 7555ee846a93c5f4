"""lm-evaluation-harness on our models: `FactoryLM` answers lm_eval's three kinds of request (the log-likelihood of a
continuation, the rolling log-likelihood of a whole text, greedy generation until a stop string) with our transformer,
and `run_harness` runs tasks defined in local YAML + JSONL files (the shipped ones in data/evals/harness/) offline.

    python -m model.harness MODEL_DIR --tasks factory --limit 10
"""
from __future__ import annotations

import os

# Offline unless the caller says otherwise: tasks read local JSONL, and `datasets` reads these flags when imported
# (lm_eval imports it), so they are set before it is. `HF_DATASETS_OFFLINE=0` allows tasks from the hub again.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.tasks._factory import TaskFactory  # noqa: E402
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model.engine import BatchGenerator, GenRequest  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.tokenizer import Tokenizer  # noqa: E402

SHIPPED_TASKS = Path(__file__).resolve().parents[1] / "data" / "evals" / "harness"


def load_for_harness(model_dir: str | os.PathLike, device: str | None = None) -> tuple[GPT, Tokenizer]:
    """Our model folder (model.safetensors + config.json + tokenizer.json) or a Hugging Face Llama folder (what
    model/hf.py exports; its config.json names a `model_type`), loaded for inference."""
    from model.evaluate import load_assistant
    from model.hf import load_hf

    folder = Path(model_dir)
    config = folder / "config.json"
    if not config.exists():
        raise FileNotFoundError(f"{folder}: no config.json, not a model folder")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if "model_type" in json.loads(config.read_text()):
        model, tok = load_hf(folder, device=device)
        return model.eval(), tok
    return load_assistant(folder, device)


@register_model("factory")
class FactoryLM(LM):
    """One of our models as an lm_eval LM. Every text is scored as a document: <|bos|> first, as in pretraining.

    Registered as lm_eval's model "factory": once this module is imported,
    `lm_eval.simple_evaluate(model="factory", model_args="pretrained=FOLDER", ...)` builds it (from a shell:
    `python -m model.harness FOLDER`)."""

    def __init__(self, pretrained: str | os.PathLike | None = None, batch_size: int | str = 16,
                 device: str | None = None, max_gen_toks: int = 256, max_batch_size: int | None = None,
                 model: GPT | None = None, tokenizer: Tokenizer | None = None):
        super().__init__()
        if (pretrained is None) == (model is None):
            raise ValueError("FactoryLM: give either `pretrained` (a model folder) or `model` and `tokenizer`")
        if model is None:
            model, tokenizer = load_for_harness(pretrained, device)
        elif tokenizer is None:
            raise ValueError("FactoryLM: `model` needs its `tokenizer`")
        self.model, self.tok = model.eval(), tokenizer
        self._device = next(model.parameters()).device  # LM.device reads it
        self.batch_size = _batch_size(batch_size, max_batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self.name = str(pretrained) if pretrained is not None else "in-memory model"

    @property
    def seq_len(self) -> int:
        return self.model.config.seq_len

    @property
    def tokenizer_name(self) -> str:
        return f"factory:{self.name}"

    # ---------------------------------------------------------------------------------------------- log-likelihood

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(<|bos|> + context ids, continuation ids) the way lm_eval splits a pair: spaces that end the context move
        to the continuation (BPE joins a space to the word after it), the whole string is encoded, and the
        continuation is what follows the context's own encoding."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = self.tok.encode(context)
        whole = self.tok.encode(context + continuation)
        return [self.tok.bos_id, *context_ids], whole[len(context_ids):]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.score_pairs([self.encode_pair(*req.args) for req in requests], disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The whole text's log-likelihood after <|bos|>: windows of seq_len tokens, each token scored once and with
        as much context as fits (lm_eval's own window rule)."""
        pairs, owner = [], []
        for k, req in enumerate(requests):
            (text,) = req.args
            windows = get_rolling_token_windows(token_list=self.tok.encode(text), prefix_token=self.tok.bos_id,
                                                max_seq_len=self.seq_len, context_len=1)
            for context, continuation in map(make_disjoint_window, windows):
                pairs.append((list(context), list(continuation)))
                owner.append(k)
        totals = [0.0] * len(requests)
        for k, (logprob, _) in zip(owner, self.score_pairs(pairs, disable_tqdm), strict=True):
            totals[k] += logprob
        return totals

    @torch.no_grad()
    def score_pairs(self, pairs: Sequence[tuple[list[int], list[int]]],
                    disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        """(sum of the continuation's token log-probs, whether greedy decoding writes exactly it) for each
        (context ids, continuation ids). The context is cut from the left to fit seq_len; longest first, in batches
        padded on the right (causal attention: padding after a row never changes what it sees)."""
        rows = []
        for i, (context, continuation) in enumerate(pairs):
            if len(continuation) > self.seq_len:
                raise ValueError(f"FactoryLM: request {i}'s continuation has {len(continuation)} tokens, more than "
                                 f"the model's seq_len={self.seq_len}")
            rows.append(((context + continuation)[-(self.seq_len + 1):][:-1], continuation))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        bar = tqdm(total=len(rows), desc="scoring", disable=disable_tqdm)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            x = torch.full((len(chunk), len(rows[chunk[0]][0])), self.tok.pad_id, dtype=torch.long)
            for r, i in enumerate(chunk):
                x[r, :len(rows[i][0])] = torch.tensor(rows[i][0])
            hidden = self.model.hidden(x.to(self._device))
            for r, i in enumerate(chunk):
                inputs, continuation = rows[i]
                if not continuation:
                    continue
                # logits only where the continuation is predicted: a long context times a big vocab is GBs
                logits = self.model.lm_head(hidden[r, len(inputs) - len(continuation):len(inputs)]).float()
                logprobs = torch.log_softmax(logits, dim=-1)
                target = torch.tensor(continuation, device=self._device)
                total = logprobs.gather(1, target[:, None]).sum()
                out[i] = (float(total), bool((logits.argmax(dim=-1) == target).all()))
            bar.update(len(chunk))
        bar.close()
        return out

    # -------------------------------------------------------------------------------------------------- generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Each context continued (greedy unless the task asks to sample) until one of its `until` strings, a new
        <|bos|> (the document ended), `max_gen_toks` tokens or the end of the model's window; the text before the
        stop string is the answer. Requests run together in one continuous batch of `batch_size` rows."""
        bar = tqdm(total=len(requests), desc="generating", disable=disable_tqdm)
        runs = [self._generation(i, *req.args, on_done=lambda _: bar.update(1)) for i, req in enumerate(requests)]
        BatchGenerator(self.model, max_batch=self.batch_size).run(req for req, _ in runs)
        bar.close()
        return [_cut(self.tok.decode(req.tokens), until) for req, until in runs]

    def _generation(self, i: int, context: str, gen_kwargs: dict, on_done) -> tuple[GenRequest, list[str]]:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else [u for u in until if u]
        max_tokens = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
        sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0)) if sample else 0.0  # as transformers: no sampling, greedy
        kwargs.pop("temperature", None)  # given without do_sample
        top_k, top_p = kwargs.pop("top_k", None), float(kwargs.pop("top_p", 1.0))
        seed = kwargs.pop("seed", None)
        if kwargs:
            raise ValueError(f"FactoryLM.generate_until: request {i} has generation settings we do not support: "
                             f"{sorted(kwargs)} (supported: until, max_gen_toks, do_sample, temperature, top_k, "
                             f"top_p, seed)")
        if max_tokens < 1:
            raise ValueError(f"FactoryLM.generate_until: request {i}: max_gen_toks must be >= 1, got {max_tokens}")
        # the answer gets max_gen_toks of room, or half the window when that is more than half (a tiny model's
        # 128-token window would otherwise keep no context); generation also ends where the window is full
        room = min(max_tokens, self.seq_len // 2)
        ids = [self.tok.bos_id, *self.tok.encode(context)][-(self.seq_len - room):]

        def stop_at_string(req: GenRequest, token: int) -> None:
            if until and any(u in self.tok.decode(req.tokens) for u in until):
                req.finish("stop")

        req = GenRequest(ids, max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                         top_k=None if top_k is None else int(top_k), stop_ids=frozenset({self.tok.bos_id}),
                         on_token=stop_at_string, on_done=on_done)
        return req, until


def _cut(text: str, until: list[str]) -> str:
    """The text before the first stop string (lm_eval's rule: each string cuts in turn)."""
    for stop in until:
        text = text.split(stop)[0]
    return text


def _batch_size(batch_size: int | str, max_batch_size: int | None) -> int:
    """lm_eval passes "auto" or a number (as text from the command line); "auto" is 16, up to max_batch_size."""
    if str(batch_size).startswith("auto"):
        return max(1, min(16, int(max_batch_size or 16)))
    try:
        size = int(batch_size)
    except ValueError:
        raise ValueError(f"FactoryLM: batch_size must be a number or 'auto', got {batch_size!r}") from None
    if size < 1:
        raise ValueError(f"FactoryLM: batch_size must be >= 1, got {size}")
    return size


# ------------------------------------------------------------------------------------------------------ tasks


class LocalTaskManager(TaskManager):
    """lm_eval's task index over our folders, with one change: a YAML task's relative `dataset_kwargs.data_files`
    (and `data_dir`) are read relative to that YAML file. lm_eval hands them to `datasets` as they are, relative to
    the working directory, so a task folder would only run from one place."""

    def __init__(self, include_path: Sequence[str | os.PathLike], include_defaults: bool = False):
        super().__init__(include_path=[str(p) for p in include_path], include_defaults=include_defaults)
        if not isinstance(getattr(self, "_factory", None), TaskFactory):
            raise RuntimeError(f"lm_eval {_lm_eval_version()}: TaskManager builds tasks differently than the 0.4.13 "
                               f"this adapter was written against (no TaskFactory); pin lm_eval to <0.5")
        self._factory = _LocalFilesFactory()


class _LocalFilesFactory(TaskFactory):
    def _load_full_config(self, entry, overrides=None) -> dict[str, Any]:
        cfg = super()._load_full_config(entry, overrides)
        kwargs = cfg.get("dataset_kwargs")
        if entry.yaml_path is not None and isinstance(kwargs, dict):
            folder = Path(entry.yaml_path).parent
            local = {key: _beside(kwargs[key], folder) for key in ("data_files", "data_dir") if kwargs.get(key)}
            cfg["dataset_kwargs"] = {**kwargs, **local}
        return cfg


def _beside(paths: Any, folder: Path) -> Any:
    """`paths` (a path, a list of them, or a dict of split -> those) with each relative path made absolute against
    `folder`; absolute paths and URLs stay as they are."""
    if isinstance(paths, dict):
        return {split: _beside(p, folder) for split, p in paths.items()}
    if isinstance(paths, (list, tuple)):
        return [_beside(p, folder) for p in paths]
    if isinstance(paths, str) and "://" not in paths and not Path(paths).is_absolute():
        return str(folder / paths)
    return paths


def run_harness(model_dir: str | os.PathLike | FactoryLM, tasks: list[str], limit: int | None = None,
                num_fewshot: int | None = None, include_path: str | os.PathLike | Sequence[str | os.PathLike] = (),
                batch_size: int = 16, device: str | None = None, bootstrap_iters: int = 1000,
                include_defaults: bool = False) -> dict[str, Any]:
    """Run lm_eval `tasks` (task, tag or group names: `factory` is every shipped task) on a model folder (or a
    FactoryLM) and return plain JSON: {"results": {task: {metric: value, "<metric>_stderr": value or None}},
    "samples": {task: [one record per item: doc, arguments, responses, metrics]}, "n_shot", "n_samples", "versions",
    "lm_eval_version"}.

    The shipped tasks (data/evals/harness/) are always indexed; `include_path` adds folders of your own.
    `include_defaults` also indexes lm_eval's built-in tasks (they need their data from the hub: set
    HF_DATASETS_OFFLINE=0). `limit`: at most that many items per task; `num_fewshot` overrides the tasks' own."""
    import lm_eval

    extra = [include_path] if isinstance(include_path, (str, os.PathLike)) else list(include_path)
    folders = [SHIPPED_TASKS, *(Path(p) for p in extra)]
    missing = [str(p) for p in folders if not Path(p).is_dir()]
    if missing:
        raise FileNotFoundError(f"run_harness: include_path folder(s) not found: {missing}")
    if not tasks:
        raise ValueError("run_harness: no tasks given (`factory` runs every shipped task)")
    manager = LocalTaskManager(folders, include_defaults=include_defaults)
    unknown = [t for t in tasks if t not in manager.all_tasks and not manager.match_tasks([t])]
    if unknown:
        raise ValueError(f"run_harness: unknown task(s) {unknown}; the tasks, tags and groups in "
                         f"{[str(f) for f in folders]} are {sorted(manager.all_tasks)[:50]} (lm_eval skips a YAML "
                         f"file it cannot parse)")
    lm = model_dir if isinstance(model_dir, FactoryLM) else FactoryLM(model_dir, batch_size=batch_size, device=device)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                  log_samples=True, task_manager=manager, bootstrap_iters=bootstrap_iters)
    return plain_results(out)


def plain_results(out: dict[str, Any]) -> dict[str, Any]:
    """simple_evaluate's output as plain JSON: metric keys without lm_eval's ",none" filter suffix, "N/A" stderrs as
    None, tuples as lists, and per-item samples without their hashes."""
    results = {}
    for task, row in out["results"].items():
        results[task] = {_metric_name(key): _number(value) for key, value in row.items()
                         if key not in ("alias", "name", "sample_len")}  # labels, and the count n_samples has
    samples = {task: [{k: _plain(v) for k, v in s.items() if not k.endswith("_hash")} for s in items]
               for task, items in out.get("samples", {}).items()}
    return {
        "lm_eval_version": _lm_eval_version(),
        "results": results,
        "samples": samples,
        "n_shot": _plain(out.get("n-shot", {})),
        "n_samples": _plain(out.get("n-samples", {})),
        "versions": _plain(out.get("versions", {})),
    }


def _metric_name(key: str) -> str:
    metric, _, filter_name = key.partition(",")
    return metric if filter_name in ("", "none") else key


def _number(value: Any) -> Any:
    if isinstance(value, str) and value == "N/A":
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return _plain(value)


def _plain(value: Any) -> Any:
    """JSON types only: tuples as lists, numpy scalars as numbers, anything else as its str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.harness", description="Run lm-evaluation-harness tasks "
                                     "(the shipped ones: --tasks factory) on a model folder, offline.")
    parser.add_argument("model_dir", help="our model folder, or a Hugging Face folder exported by model/hf.py")
    parser.add_argument("--tasks", default="factory", help="comma-separated task, tag or group names")
    parser.add_argument("--limit", type=int, default=None, help="at most this many items per task")
    parser.add_argument("--num-fewshot", type=int, default=None, help="override the tasks' few-shot count")
    parser.add_argument("--include", action="append", default=[], help="another folder of task YAML files")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", default=None, help="write the whole result (with samples) to this JSON file")
    args = parser.parse_args(argv)
    out = run_harness(args.model_dir, [t for t in args.tasks.split(",") if t], limit=args.limit,
                      num_fewshot=args.num_fewshot, include_path=args.include, batch_size=args.batch_size,
                      device=args.device)
    if args.output:
        from model.files import atomic_write_json

        atomic_write_json(args.output, out)
    print(json.dumps(out["results"], indent=2))


if __name__ == "__main__":
    main()
