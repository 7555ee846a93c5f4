"""ingest_labels on batches in several delivery formats: the manifest records the labeling-instructions version each
batch followed, counts reconcile source records (a ranking is one, however many pairs it makes), and the pairs of one
ranking share a side of the train/val split."""

import json
from collections import defaultdict

from flows.cycles import stage
from tests.tasks.test_stages import only_artifact


def lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def ranker_task(task_id: int, order: list[str]) -> dict:
    items = [{"id": i, "text": f"Answer {i} to question {task_id}."} for i in "abcd"]
    return {"id": task_id, "data": {"prompt": f"Question {task_id}?", "items": items}, "annotations": [
        {"completed_by": 1, "result": [{"type": "ranker", "from_name": "rank", "value": {"ranker": {"rank": order}}}]}]}


def test_the_manifest_records_each_batchs_instructions_version_and_counts_reconcile(tmp_path, prefect_server, caplog):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    chat = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}
            for i in range(3)]
    (inbox / "week-1.jsonl").write_text(lines([*chat, chat[0]]) + "{broken\n")  # a duplicate, a broken line
    (inbox / "week-1.jsonl.meta.json").write_text(json.dumps({"instructions_version": "v3", "labeler": "team-a"}))
    sharegpt = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
                 "meta": {"instructions_version": "v4"}}]
    (inbox / "sharegpt.json").write_text(json.dumps(sharegpt))
    rankings = [ranker_task(i, ["a", "b", "c", "d"]) for i in range(20)]
    rankings.append(ranker_task(99, ["a", "z"]))  # ranks an answer the task does not have
    (inbox / "rankings.json").write_text(json.dumps(rankings))

    overrides = [f"labels.inbox={inbox}", "labels.val_fraction=0.5"]
    with caplog.at_level("WARNING"):
        stage(name="ingest_labels", workdir=str(tmp_path / "w"), overrides=overrides)
    assert "batches name no labeling-instructions version: rankings.json" in caplog.text
    labels = only_artifact(tmp_path / "w", "ingest_labels")
    c = labels.counts
    assert (c["files"], c["read"], c["quarantined"], c["duplicates"]) == (3, 27, 2, 1)
    assert (c["rankings"], c["pairs_from_rankings"], c["kept"]) == (20, 120, 4 + 120)
    assert c["comparisons_train"] + c["comparisons_val"] == 120
    assert labels.manifest["info"]["instructions_versions"] == {
        "unspecified": {"files": ["rankings.json"], "conversations": 0, "comparisons": 120},
        "v3": {"files": ["week-1.jsonl"], "conversations": 3, "comparisons": 0},
        "v4": {"files": ["sharegpt.json"], "conversations": 1, "comparisons": 0},
    }
    sides = defaultdict(set)
    for split in ("train", "val"):
        for line in labels.file(f"comparisons_{split}.jsonl").read_text().splitlines():
            sides[json.loads(line)["meta"]["ranking_id"]].add(split)
    assert len(sides) == 20 and all(len(s) == 1 for s in sides.values()) and len(set().union(*sides.values())) == 2
    train = [json.loads(x) for x in labels.file("conversations_train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in labels.file("conversations_val.jsonl").read_text().splitlines()]
    assert {r["meta"].get("labeler") for r in train + val if r["meta"]["batch"] == "week-1.jsonl"} == {"team-a"}
