"""ingest_labels reads the labelers' answers to the labeling queue back: the Label Studio round trip (the queue's import
file, annotated, exported), answers linked to their queue items, bad ones quarantined, repeats in train only."""

import json
from collections import Counter, defaultdict

import pytest

from data.chat.labels import queue_item, write_jsonl
from flows.cycles import stage
from serve.store import Store, default_url
from tasks.collect_misbehaviors import labeling_queue_dir
from tasks.core.artifacts import ArtifactStore
from tests.tasks.test_collect_misbehaviors import collect, first_week, inputs
from tests.tasks.test_stages import only_artifact


@pytest.fixture(scope="module", autouse=True)
def one_mlflow_store(tmp_path_factory):
    """The tests' stage runs share one MLflow database: making one costs seconds (schema migrations)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        yield


def inbox(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    (folder / "batch.jsonl").write_text(json.dumps(good) + "\n")
    return folder


def annotated(task: dict, task_id: int, text: list[str]) -> dict:
    """A task as Label Studio exports it (JSON export) once a labeler has filled in the TextArea `answer`."""
    return {**task, "id": task_id, "annotations": [{"id": task_id, "completed_by": 3, "was_cancelled": False,
            "result": [{"from_name": "answer", "to_name": "prompt", "type": "textarea", "value": {"text": text}}]}]}


def conversations(artifact, split: str) -> list[dict]:
    return [json.loads(x) for x in artifact.file(f"conversations_{split}.jsonl").read_text().splitlines()]


def test_label_studio_answers_come_back_linked_to_their_queue_items(tmp_path, prefect_server):
    workdir = tmp_path / "w"
    first_week(Store(default_url(workdir)))
    collected, _ = collect(workdir, inputs(tmp_path))
    items = {it["id"]: it for it in map(json.loads, collected.file("queue.jsonl").read_text().splitlines())}
    tasks = json.loads((labeling_queue_dir(workdir) / f"queue-{collected.key}.label_studio.json").read_text())
    export = [annotated(t, 100 + i, [f"Corrected answer {i}."]) for i, t in enumerate(tasks[:3])]
    export.append(annotated(tasks[3], 103, [""]))  # submitted blank
    answers = workdir / "labeling" / "answers"
    answers.mkdir(parents=True)
    (answers / "label-studio-export.json").write_text(json.dumps(export))
    (answers / "ours.jsonl").write_text(json.dumps({"queue_id": "0123456789abcdef", "answer": "To nothing."}) + "\n")

    overrides = [f"labels.inbox={inbox(tmp_path)}", "labels.val_fraction=0", "labels.answer_repeats=3"]
    stage(name="ingest_labels", workdir=str(workdir), overrides=overrides)
    labels = only_artifact(workdir, "ingest_labels")
    c = labels.counts
    assert (c["answers_read"], c["answers_kept"], c["answers_quarantined"], c["answers_train"]) == (5, 3, 2, 3)
    assert c["read"] == c["kept"] + c["duplicates"] + c["quarantined"] == 6
    assert c["conversations_train"] == 1 + 3 * 3  # the inbox's one, and each answer three times

    answered = [r for r in conversations(labels, "train") if r.get("meta", {}).get("source") == "labeling_queue"]
    assert Counter(r["meta"]["queue_id"] for r in answered) == {t["data"]["queue_id"]: 3 for t in tasks[:3]}
    for r in answered:
        item = items[r["meta"]["queue_id"]]
        assert r["messages"][:-1] == item["messages"]  # the item's (scrubbed) prompt, then the labeler's answer
        assert r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"].startswith("Corrected")
        assert r["meta"]["instructions_version"] == item["instructions_version"]
    reasons = sorted(json.loads(x)["reason"] for x in labels.file("quarantine.jsonl").read_text().splitlines())
    assert reasons == ["answers/label-studio-export.json item 4: empty answer",
                       "answers/ours.jsonl line 1: queue_id '0123456789abcdef' names no item of the labeling queue"]


def test_an_answer_is_in_train_or_val_never_both_and_new_answers_are_a_new_key(tmp_path, prefect_server):
    workdir = tmp_path / "w"
    items = [queue_item(f"What is {i} + {i}?", "wrong", "failed", "eval:arithmetic") for i in range(40)]
    write_jsonl(labeling_queue_dir(workdir) / "queue-k.jsonl", items)
    answers = workdir / "labeling" / "answers"
    answers.mkdir(parents=True)
    lines = [{"queue_id": it["id"], "answer": f"It is {2 * i}."} for i, it in enumerate(items)]
    lines += [{"queue_id": it["id"], "messages": [*it["messages"], {"role": "assistant", "content": f"{2 * i}"}]}
              for i, it in enumerate(items)]  # a second, different answer to every item
    write_jsonl(answers / "week-1.jsonl", lines)
    overrides = [f"labels.inbox={inbox(tmp_path)}", "labels.val_fraction=0.5", "labels.answer_repeats=2"]
    stage(name="ingest_labels", workdir=str(workdir), overrides=overrides)
    labels = only_artifact(workdir, "ingest_labels")

    sides: dict[str, set] = defaultdict(set)
    copies: Counter = Counter()
    for split in ("train", "val"):
        for r in conversations(labels, split):
            if "queue_id" in r.get("meta", {}):
                sides[r["meta"]["queue_id"]].add(split)
                copies[(split, r["messages"][-1]["content"])] += 1
    assert len(sides) == 40 and all(len(s) == 1 for s in sides.values())
    assert 8 < sum(s == {"val"} for s in sides.values()) < 32
    assert {n for (split, _), n in copies.items() if split == "train"} == {2}
    assert {n for (split, _), n in copies.items() if split == "val"} == {1}

    write_jsonl(answers / "week-2.jsonl", [{"queue_id": items[0]["id"], "answer": "Zero plus zero is zero."}])
    stage(name="ingest_labels", workdir=str(workdir), overrides=overrides)
    keys = ArtifactStore(workdir / "artifacts").list_keys("ingest_labels")
    assert len(keys) == 2  # a new delivery of answers is a new input, not a cache hit
    newest = max((ArtifactStore(workdir / "artifacts").load("ingest_labels", k) for k in keys),
                 key=lambda a: a.counts["answers_read"])
    assert newest.counts["answers_read"] == 81 and newest.counts["answers_kept"] == 81
