"""A tiny assistant that has memorised a few tool-calling conversations (trained in a few seconds), so the tool loop
can be tested for real: asked one of them, it writes the call token for token; everything else it answers with
whatever it happens to continue with. Its identity (assistant.json) is the default one, so a chat without a system
message gets that system message, as the conversations it learned had."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from model.chat import render_conversation
from model.checkpoint import save_model
from model.config import GPTConfig
from model.gpt import GPT
from model.identity import IdentityConfig, save_identity
from model.tokenizer import Tokenizer, train_bpe
from model.tools import format_call
from serve.protocol import FunctionDef
from serve.tools import tools_text

IDENTITY = IdentityConfig()
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather now in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_SYSTEM = IDENTITY.system_text() + "\n\n" + tools_text({"get_weather": FunctionDef(**WEATHER["function"])})
DOCS_INSTRUCTIONS = "You answer from the river notes."

MULTIPLY = "What is 4821 times 37?"
MULTIPLY_ANSWER = "4821 * 37 = 178377."
WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_RESULT = "sunny, 21 C"
WEATHER_ANSWER = "It is sunny and 21 C in Paris."
GREETING = "Hello there"
GREETING_ANSWER = "Hello! How can I help?"
RIVERS = "What do the notes say about rivers?"


def call(name: str, arguments: dict) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [format_call(name, arguments)]}


CONVERSATIONS = [
    [{"role": "system", "content": IDENTITY.system_text()}, {"role": "user", "content": MULTIPLY},
     call("calculator", {"expression": "4821 * 37"}), {"role": "tool", "content": "178377"},
     {"role": "assistant", "content": MULTIPLY_ANSWER}],
    [{"role": "system", "content": WEATHER_SYSTEM}, {"role": "user", "content": WEATHER_QUESTION},
     call("get_weather", {"city": "Paris"}), {"role": "tool", "content": WEATHER_RESULT},
     {"role": "assistant", "content": WEATHER_ANSWER}],
    [{"role": "system", "content": WEATHER_SYSTEM}, {"role": "user", "content": GREETING},
     {"role": "assistant", "content": GREETING_ANSWER}],
    [{"role": "system", "content": DOCS_INSTRUCTIONS}, {"role": "user", "content": RIVERS},
     call("search", {"query": "rivers"}), {"role": "tool", "content": "[1] rivers (rivers.md)\nRivers flow."},
     {"role": "assistant", "content": "The notes say rivers flow to the sea."}],
]


def texts(conversations: list[list[dict]] = CONVERSATIONS) -> list[str]:
    out = []
    for convo in conversations:
        for m in convo:
            out.append(m["content"])
            out += m.get("tool_calls", [])
    return out


def make_tool_model(folder: Path, steps: int = 100, conversations: list[list[dict]] = CONVERSATIONS) -> Path:
    """Train the model on `conversations` until it repeats them (one torch thread, a few seconds), and save it as a
    finetune stage leaves a model; a folder that already holds it is reused."""
    if (folder / "model.safetensors").exists():
        return folder
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(folder, steps, conversations)
    finally:
        torch.set_num_threads(threads)


def _train(folder: Path, steps: int, conversations: list[list[dict]]) -> Path:
    tok = train_bpe(texts(conversations) * 20, vocab_size=600)
    rows = [render_conversation(tok, convo, max_len=256) for convo in conversations]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r[0] + [tok.pad_id] * (width - len(r[0])) for r in rows])
    mask = torch.tensor([r[1] + [0] * (width - len(r[1])) for r in rows], dtype=torch.bool)
    x, y, m = ids[:, :-1], ids[:, 1:], mask[:, 1:]
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, vocab_size=tok.vocab_size, seq_len=256, aspect_ratio=32, head_dim=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        logits, _ = model(x)
        loss = F.cross_entropy(logits[m], y[m])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(folder / "tokenizer.json")
    save_identity(IDENTITY, folder)
    save_model(model, folder)  # last: the folder is complete once the weights are there
    return folder


def tokenizer(folder: Path) -> Tokenizer:
    return Tokenizer.from_file(folder / "tokenizer.json")


def register_tool_model(workdir: Path, folder: Path, tags: dict | None = None) -> str:
    """Register `folder` as assistant@production in the workdir's MLflow store, with `tags` (e.g. index_path)."""
    from tasks.core import model_registry
    from tasks.core.tracking import client, experiment_id

    c = client(workdir)
    run = c.create_run(experiment_id(c, "serve-tests", workdir))
    version = model_registry.register(c, "assistant", folder, run.info.run_id, tags or {})
    c.set_terminated(run.info.run_id)
    model_registry.move_alias(c, "assistant", "production", version)
    return version
