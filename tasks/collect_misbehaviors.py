"""Stage `collect_misbehaviors`: failed eval items (and user flags from the chat server, when there are any) become
tasks in the labeling queue: the prompt, what the model said, and why it was flagged."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from data.chat.labels import queue_item, read_jsonl, write_jsonl
from data.sources.fingerprint import fingerprint
from tasks.core.config import Section
from tasks.core.stage import StageRun, stage


def flags_file(workdir: Path) -> Path:
    return Path(workdir) / "feedback" / "flags.jsonl"


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    flags = flags_file(workdir)
    return {"flags": fingerprint([str(flags)])} if flags.exists() else {}


class CollectConfig(Section):
    """How much goes back to the labelers each week."""

    max_items: int = Field(500, ge=1, description="Most misbehaviors queued per run (failed evals first).")


@stage("collect_misbehaviors", cycle="weekly", inputs=("evals", "deploy"), config={"collect": CollectConfig},
       main_metric="queued", external=_external)
def collect_misbehaviors(s: StageRun) -> dict:
    evals = s.inputs["evals"]
    items = []
    for r in read_jsonl(evals.path / "results.jsonl"):
        if not r["correct"]:
            items.append(
                queue_item(
                    r["messages"],
                    r["response"],
                    f"failed eval skill {r['skill']}",
                    f"eval:{r['skill']}",
                    expected=r.get("answer"),
                    meta={"eval_id": r["id"]},
                )
            )
    flags = flags_file(s.workdir)
    n_flags = 0
    if flags.exists():
        for f in read_jsonl(flags):
            items.append(
                queue_item(
                    f["messages"],
                    f.get("model_answer", ""),
                    f.get("reason", "flagged by a user"),
                    "user_flag",
                    meta=f.get("meta"),
                )
            )
            n_flags += 1
    items = items[: s.cfg.collect.max_items]
    write_jsonl(s.out / "queue.jsonl", items)
    # The labelers' queue lives beside the inbox: one file per collection, named by its artifact key.
    queue = Path(s.workdir) / "labeling" / "queue" / f"queue-{s.key}.jsonl"
    write_jsonl(queue, items)
    s.log.info(f"collect_misbehaviors: {len(items)} items for labelers -> {queue}")
    by_source: dict[str, int] = {}
    for it in items:
        by_source[it["source"]] = by_source.get(it["source"], 0) + 1
    s.table("queue", [{"source": k, "items": v} for k, v in sorted(by_source.items())], f"labeling queue: {queue}")
    return {
        "counts": {"queued": len(items), "from_evals": len(items) - n_flags, "from_flags": n_flags},
        "metrics": {"queued": len(items)},
    }
