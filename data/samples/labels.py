"""The demo's labeling inbox: batches of conversations and comparisons as a labeling team would deliver
them, including a handful of the mistakes real deliveries contain. CLI: `python -m data.samples.labels OUT_DIR`."""

from __future__ import annotations

import argparse
import copy
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from data.chat.synthetic import generate_comparisons, generate_conversations
from model.files import atomic_file
from model.identity import IdentityConfig

RECORDS_PER_FILE = 500


def _line(rec: dict) -> bytes:
    return json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n"


# each mistake turns a copy of a good record into one bad line; all but "duplicate" must be quarantined

def _ends_with_user(rec: dict, rng: random.Random) -> bytes:
    rec["messages"] = rec["messages"][:-1]  # the labeler forgot to write the answer
    return _line(rec)


def _empty_assistant(rec: dict, rng: random.Random) -> bytes:
    rec["messages"][-1]["content"] = rng.choice(["", " ", "\n"])
    return _line(rec)


def _role_bot(rec: dict, rng: random.Random) -> bytes:
    rec["messages"][-1]["role"] = "bot"
    return _line(rec)


def _invalid_utf8(rec: dict, rng: random.Random) -> bytes:
    # a labeler's tool saved the file as Windows-1252: the accent becomes a lone 0xE9 byte
    user = next(m for m in rec["messages"] if m["role"] == "user")  # the first may be the system message
    user["content"] += " (asked at the caf\u00e9)"
    return json.dumps(rec, ensure_ascii=False).encode("cp1252", errors="replace") + b"\n"


def _truncated_json(rec: dict, rng: random.Random) -> bytes:
    text = json.dumps(rec, ensure_ascii=False)
    return text[: len(text) // 2].encode("utf-8") + b"\n"  # cut on characters, so the bytes stay valid UTF-8


def _identical_pair(rec: dict, rng: random.Random) -> bytes:
    rec["rejected"] = rec["chosen"]
    return _line(rec)


CONVERSATION_MISTAKES: dict[str, Callable[[dict, random.Random], bytes]] = {
    "ends_with_user": _ends_with_user,
    "empty_assistant": _empty_assistant,
    "role_bot": _role_bot,
    "invalid_utf8": _invalid_utf8,
    "truncated_json": _truncated_json,
}
COMPARISON_MISTAKES: dict[str, Callable[[dict, random.Random], bytes]] = {
    "comparison_identical": _identical_pair,
    "comparison_truncated_json": _truncated_json,
}


def _inject(lines: list[bytes], records: list[dict], mistakes: dict, prefix: str, rng: random.Random,
            bad: Counter) -> list[bytes]:
    """Insert 1-2 bad lines of each mistake, plus exact duplicates, at random positions."""
    good = list(lines)
    out = list(lines)
    for kind, make in mistakes.items():
        for _ in range(rng.randint(1, 2)):
            rec = copy.deepcopy(rng.choice(records))
            rec["id"] = f"{rec['id']}-{prefix}{bad[kind]}"
            out.insert(rng.randint(0, len(out)), make(rec, rng))
            bad[kind] += 1
    if prefix == "c":  # exact re-deliveries of a conversation line
        for _ in range(rng.randint(1, 2)):
            out.insert(rng.randint(0, len(out)), rng.choice(good))
            bad["duplicate"] += 1
    return out


def _write_lines(path: Path, lines: list[bytes]) -> None:
    with atomic_file(path, "wb") as f:
        f.writelines(lines)


def _write_batches(out_dir: Path, stem: str, lines: list[bytes]) -> list[str]:
    names = []
    for b, start in enumerate(range(0, len(lines), RECORDS_PER_FILE), start=1):
        name = f"{stem}-batch-{b:03d}.jsonl"
        _write_lines(out_dir / name, lines[start:start + RECORDS_PER_FILE])
        names.append(name)
    return names


def build_label_inbox(out_dir: Path, pages: list[dict] | None, n_conversations: int = 2000,
                      n_comparisons: int = 400, seed: int = 0, bad_records: bool = True,
                      identity: IdentityConfig | None = None) -> dict:
    """Write conversations-batch-NNN.jsonl and comparisons-batch-NNN.jsonl (~500 lines each) into out_dir.
    `identity`: who the identity answers say the assistant is, and the system message a share of the conversations
    starts with (see generate_conversations; None: the default name, no system messages).

    Returns {"files", "conversations", "comparisons" (good records written), "bad": {mistake: count},
    "duplicates", "invalid" (lines a validator must quarantine), "lines" (all lines written)}.
    Deterministic for the seed; earlier batch files in out_dir are replaced.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("conversations-batch-*.jsonl"), *out_dir.glob("comparisons-batch-*.jsonl")]:
        old.unlink()
    rng = random.Random(f"inbox:{seed}")
    conversations = generate_conversations(n_conversations, seed, pages, identity=identity)
    comparisons = generate_comparisons(n_comparisons, seed + 1, pages, identity=identity)
    for i, rec in enumerate(conversations):  # who delivered it, as a labeling tool would record
        rec["meta"]["labeler"] = f"labeler-{i % 7 + 1:02d}"
    conv_lines = [_line(r) for r in conversations]
    comp_lines = [_line(r) for r in comparisons]
    bad: Counter = Counter()
    if bad_records and conversations:
        conv_lines = _inject(conv_lines, conversations, CONVERSATION_MISTAKES, "c", rng, bad)
    if bad_records and comparisons:
        comp_lines = _inject(comp_lines, comparisons, COMPARISON_MISTAKES, "p", rng, bad)
    files = _write_batches(out_dir, "conversations", conv_lines) + _write_batches(out_dir, "comparisons", comp_lines)
    return {
        "files": files,
        "conversations": n_conversations,
        "comparisons": n_comparisons,
        "bad": dict(bad),
        "duplicates": bad["duplicate"],
        "invalid": sum(v for k, v in bad.items() if k != "duplicate"),
        "lines": len(conv_lines) + len(comp_lines),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Write the demo labeling inbox.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--pages", type=Path, help="JSONL of crawled pages {title, text, url} for crawl_qa")
    parser.add_argument("--n-conversations", type=int, default=2000)
    parser.add_argument("--n-comparisons", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bad-records", action="store_true")
    args = parser.parse_args(argv)
    pages = None
    if args.pages:
        from data.chat.labels import read_jsonl
        pages = read_jsonl(args.pages)
    return build_label_inbox(args.out_dir, pages, args.n_conversations, args.n_comparisons, args.seed,
                             bad_records=not args.no_bad_records)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
