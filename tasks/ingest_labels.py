"""Stage `ingest_labels`: validate what labelers delivered, quarantine bad records with file, line and reason,
dedup, split train/val.

They deliver the inbox (conversations, comparisons) and their answers to the labeling queue. An answer to a queue
item becomes a training conversation linked to the item (meta: queue_id, source "labeling_queue"); it is copied
`labels.answer_repeats` times into the train split, so a week's few hundred corrections weigh against thousands of
sample conversations, and its side of the split is chosen by its queue item, so it (and any other answer to the same
item) is in train or in val, never both. Likewise the pairs a ranking of k answers makes stay on one side, chosen by
the ranking's id.

Each inbox file is one batch, and names the labeling-instructions version it followed (in its records' meta, or in a
`<file>.meta.json` / `batch.json` sidecar; the built-in sample is "builtin"): the manifest's info lists the versions
seen with their files and kept records, and batches naming none are listed under "unspecified" with a warning.

Batches the pipeline generates itself (the refusals `interrogate` writes into `<workdir>/labeling/generated/`) are read
like the inbox's, named "generated/<file>", once they are `labels.generated_delay_hours` old: the stage that wrote one
ran on a model trained on this very ingest, so reading it at once would make every rerun of the weekly cycle a new
week; with the delay a rerun reuses the week's labels and the next week's run trains on the batch.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path

from data.chat.labels import (
    LabelsConfig,
    batch_created,
    content_hash,
    inbox_files,
    instructions_versions,
    load_queue,
    read_answers,
    read_inbox,
    split_key,
    split_records,
    write_jsonl,
)
from data.samples import BUILTIN_SAMPLE
from data.sources.fingerprint import describe, fingerprint
from data.sources.quarantine import Quarantine
from tasks.core.samples import generator_version, inbox_dir
from tasks.core.stage import StageRun, stage


def answers_dir(cfg: LabelsConfig, workdir: Path) -> Path:
    """The labelers' answers to the labeling queue: `labels.answers`, by default <workdir>/labeling/answers/."""
    return Path(cfg.answers).expanduser() if cfg.answers else Path(workdir) / "labeling" / "answers"


def queue_dir(workdir: Path) -> Path:
    """The queue items the answers answer (written by collect_misbehaviors)."""
    return Path(workdir) / "labeling" / "queue"


def generated_dir(workdir: Path) -> Path:
    """Batches of labels the pipeline generates (interrogate's refusals), read like the inbox's."""
    return Path(workdir) / "labeling" / "generated"


def generated_batches(cfg: LabelsConfig, workdir: Path, now: datetime | None = None) -> tuple[list[Path], list[Path]]:
    """(the generated batches old enough to read, those still waiting), see `labels.generated_delay_hours`."""
    folder = generated_dir(workdir)
    files = inbox_files(folder) if folder.is_dir() else []
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=cfg.generated_delay_hours)
    ready = [p for p in files if batch_created(p) <= cutoff]
    return ready, [p for p in files if p not in ready]


def _generated_key(files: list[Path], folder: Path) -> str:
    """The batches' content fingerprints under their names in the folder, so a copied workdir keeps the key."""
    entries = describe([str(p) for p in files])["entries"]
    for entry in entries:
        entry["path"] = Path(entry["path"]).relative_to(folder).as_posix()
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:12]


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _external(cfg, workdir: Path, inputs: dict) -> dict:
    if cfg.labels.inbox == BUILTIN_SAMPLE:  # generated from the sample crawl's pages
        found = {"sample_pages": cfg.crawl.sample_pages, "identity": cfg.identity.data_key(),
                 "generator": generator_version()}
    else:
        found = {"inbox": fingerprint([cfg.labels.inbox])}
    ready, _ = generated_batches(cfg.labels, workdir)
    if ready:
        found["generated"] = _generated_key(ready, generated_dir(workdir))
    answers = answers_dir(cfg.labels, workdir)
    if _has_files(answers):  # the queue only matters once there are answers to link to it
        found |= {"answers": fingerprint([str(answers)]), "queue": _linked_items(answers, queue_dir(workdir))}
    return found


def _linked_items(answers: Path, queue: Path) -> str:
    """A hash of the queue items the answers name (their ids appear in the answer files), without when they were
    queued: a new week's queue that nobody answered yet, or a re-collection of the same window, keeps the key."""
    text = "".join(p.read_text(errors="replace") for p in sorted(answers.rglob("*")) if p.is_file())
    linked = [{k: v for k, v in item.items() if k != "created"}
              for qid, item in sorted(load_queue(queue).items()) if qid in text]
    return hashlib.sha256(json.dumps(linked, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@stage("ingest_labels", cycle="weekly", config={"labels": LabelsConfig}, main_metric="conversations_train",
       external=_external)
def ingest_labels(s: StageRun) -> dict:
    cfg = s.cfg.labels
    inbox = inbox_dir(cfg, s.workdir, s.cfg.crawl.sample_pages, s.cfg.identity)
    if not inbox.is_dir():
        raise FileNotFoundError(f"labels.inbox {str(inbox)!r} is not a folder of JSONL files")
    stats: Counter = Counter()
    answer_stats: Counter = Counter()
    seen: set[str] = set()
    kept: dict[str, list[dict]] = {"conversation": [], "comparison": []}
    answers: list[dict] = []
    answers_from = answers_dir(cfg, s.workdir)
    builtin = "builtin" if cfg.inbox == BUILTIN_SAMPLE else None  # the sample inbox names no instructions version
    generated, waiting = generated_batches(cfg, s.workdir)
    if waiting:
        s.log.info(f"ingest_labels: {len(waiting)} generated batch(es) younger than {cfg.generated_delay_hours}h "
                   f"wait for a later run: {', '.join(p.name for p in waiting)}")
    with Quarantine(s.out / "quarantine.jsonl") as quarantine:
        batches = read_inbox(inbox, quarantine, stats, cfg, default_version=builtin)
        if generated:
            batches = chain(batches, read_inbox(generated_dir(s.workdir), quarantine, stats, cfg, files=generated,
                                                prefix="generated/"))
        for kind, record in batches:
            digest = content_hash(kind, record)
            if digest in seen:
                stats["duplicates"] += 1
                continue
            seen.add(digest)
            kept[kind].append(record)
        if answers_from.is_dir():
            for record in read_answers(answers_from, load_queue(queue_dir(s.workdir)), quarantine, answer_stats, cfg):
                digest = content_hash("conversation", record)
                if digest in seen:
                    answer_stats["duplicates"] += 1
                    continue
                seen.add(digest)
                answers.append(record)
    counts = {
        "files": len(inbox_files(inbox)),
        "generated_files": len(generated),
        "generated_kept": sum(r["meta"]["batch"].startswith("generated/") for v in kept.values() for r in v),
        "read": stats["read"] + answer_stats["read"],  # source records: a ranking is one, however many pairs it makes
        "kept": sum(len(v) for v in kept.values()) + len(answers),
        "duplicates": stats["duplicates"] + answer_stats["duplicates"],
        "quarantined": stats["quarantined"] + answer_stats["quarantined"],
        "rankings": stats["rankings"],
        "pairs_from_rankings": stats["pairs_from_rankings"],
        "answers_read": answer_stats["read"],
        "answers_kept": len(answers),
        "answers_duplicates": answer_stats["duplicates"],
        "answers_quarantined": answer_stats["quarantined"],
    }
    answers_train, answers_val = split_records(answers, cfg.val_fraction, cfg.seed,
                                               key=lambda r: r["meta"]["queue_id"])
    counts["answers_train"], counts["answers_val"] = len(answers_train), len(answers_val)
    for kind, name in (("conversation", "conversations"), ("comparison", "comparisons")):
        train, val = split_records(kept[kind], cfg.val_fraction, cfg.seed, key=lambda r, k=kind: split_key(k, r))
        if kind == "conversation":  # answers split on their own (by queue item), then repeated in train only
            train, val = [*train, *answers_train * cfg.answer_repeats], [*val, *answers_val]
        counts[f"{name}_train"] = write_jsonl(s.out / f"{name}_train.jsonl", train)
        counts[f"{name}_val"] = write_jsonl(s.out / f"{name}_val.jsonl", val)
    # every source record was quarantined, or became one record, or became a ranking's pairs (each kept or a duplicate)
    singles = counts["read"] - counts["quarantined"] - counts["rankings"]
    assert singles == counts["kept"] + counts["duplicates"] - counts["pairs_from_rankings"], (
        f"ingest_labels counts do not reconcile: {counts}"
    )
    assert counts["answers_read"] == counts["answers_kept"] + counts["answers_duplicates"] + counts[
        "answers_quarantined"] and counts["answers_kept"] == counts["answers_train"] + counts["answers_val"], (
        f"ingest_labels answer counts do not reconcile: {counts}"
    )
    if not counts["conversations_train"]:
        raise ValueError(f"labels inbox {inbox}: no valid conversations to train on (see quarantine.jsonl)")
    versions = instructions_versions((kind, r) for kind, records in kept.items() for r in records)
    s.table("counts", [{"count": k, "value": v} for k, v in counts.items()], f"labels from {inbox}")
    s.table("instructions_versions", [{"instructions_version": v, **row, "files": ", ".join(row["files"])}
                                      for v, row in versions.items()], "labeling-instructions versions of the batches")
    if "unspecified" in versions:
        s.log.warning(f"ingest_labels: batches name no labeling-instructions version: "
                      f"{', '.join(versions['unspecified']['files'])} (give their records meta.instructions_version, "
                      f"or the batch a <file>.meta.json or batch.json sidecar with one)")
    s.log.info(
        f"ingest_labels: {counts['read']} read, {counts['kept']} kept, {counts['duplicates']} duplicates, "
        f"{counts['quarantined']} quarantined -> {s.out / 'quarantine.jsonl'}"
    )
    return {
        "counts": counts,
        "metrics": {"conversations_train": counts["conversations_train"], "quarantined": counts["quarantined"]},
        "info": {"instructions_versions": versions, "generated_waiting": [p.name for p in waiting]},
    }
