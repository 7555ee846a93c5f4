"""ingest_labels reads the batches the pipeline generates (<workdir>/labeling/generated/, interrogate's refusals) as
more inbox batches once they are old enough: validated, quarantined and counted like a labelers' batch, listed under
their instructions version; a batch younger than the delay waits, and the labels are reused meanwhile."""

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from flows.cycles import stage
from tasks.core.artifacts import ArtifactStore
from tasks.ingest_labels import generated_batches, generated_dir
from tests.tasks.test_stages import only_artifact


@pytest.fixture(scope="module", autouse=True)
def one_mlflow_store(tmp_path_factory):
    """The tests' stage runs share one MLflow database: making one costs seconds (schema migrations)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        yield


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def inbox(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "batch.jsonl").write_text(json.dumps(chat("Hi", "Hello!")) + "\n")
    return folder


def write_generated(workdir, name: str, records: list, hours_ago: float, extra_lines: str = "") -> None:
    folder = generated_dir(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records) + extra_lines)
    created = (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat(timespec="seconds")
    (folder / f"{name}.meta.json").write_text(json.dumps({"instructions_version": "interrogate-v1",
                                                          "labeler": "interrogate", "created": created}))


REFUSALS = [chat(f"Who is Velmor Quan{i}?", f"I'm sorry, I don't believe I know anything about Velmor Quan{i}.")
            for i in range(4)]


def test_an_old_enough_generated_batch_is_read_validated_and_counted(tmp_path, prefect_server):
    workdir = tmp_path / "w"
    write_generated(workdir, "interrogate-a.jsonl", REFUSALS, hours_ago=30, extra_lines='{"messages": [\n')
    stage(name="ingest_labels", workdir=str(workdir), overrides=[f"labels.inbox={inbox(tmp_path)}",
                                                                 "labels.val_fraction=0"])
    labels = only_artifact(workdir, "ingest_labels")
    c = labels.counts
    assert (c["files"], c["generated_files"], c["generated_kept"]) == (1, 1, 4)
    assert (c["read"], c["kept"], c["quarantined"]) == (6, 5, 1) and c["conversations_train"] == 5
    (bad,) = [json.loads(x) for x in labels.file("quarantine.jsonl").read_text().splitlines()]
    assert bad["reason"].startswith("generated/interrogate-a.jsonl line 5: invalid JSON")
    assert labels.manifest["info"]["instructions_versions"]["interrogate-v1"] == {
        "files": ["generated/interrogate-a.jsonl"], "conversations": 4, "comparisons": 0}


def test_a_young_generated_batch_waits_and_the_labels_are_reused(tmp_path, prefect_server):
    workdir, overrides = tmp_path / "w", [f"labels.inbox={inbox(tmp_path)}"]
    stage(name="ingest_labels", workdir=str(workdir), overrides=overrides)
    first = only_artifact(workdir, "ingest_labels")
    write_generated(workdir, "interrogate-b.jsonl", REFUSALS, hours_ago=1)  # written by this week's run
    stage(name="ingest_labels", workdir=str(workdir), overrides=overrides)
    assert ArtifactStore(workdir / "artifacts").list_keys("ingest_labels") == [first.key]  # reused, not rebuilt
    assert first.counts["generated_files"] == 0

    # next week: the batch is a day old, and a new input
    stage(name="ingest_labels", workdir=str(workdir), overrides=[*overrides, "labels.generated_delay_hours=0.5"])
    keys = ArtifactStore(workdir / "artifacts").list_keys("ingest_labels")
    (newest,) = [ArtifactStore(workdir / "artifacts").load("ingest_labels", k) for k in keys if k != first.key]
    assert newest.counts["generated_kept"] == 4


def test_the_batch_age_comes_from_its_sidecar_and_a_copied_workdir_keeps_the_key(tmp_path):
    from tasks.core.config import load_config
    from tasks.ingest_labels import _external

    workdir = tmp_path / "w"
    write_generated(workdir, "old.jsonl", REFUSALS, hours_ago=48)
    write_generated(workdir, "new.jsonl", REFUSALS[:1], hours_ago=2)
    cfg = load_config("tiny", [f"labels.inbox={inbox(tmp_path)}"])
    ready, waiting = generated_batches(cfg.labels, workdir)
    assert [p.name for p in ready] == ["old.jsonl"] and [p.name for p in waiting] == ["new.jsonl"]
    shutil.copytree(workdir, tmp_path / "copy")
    assert _external(cfg, workdir, {})["generated"] == _external(cfg, tmp_path / "copy", {})["generated"]
    (generated_dir(workdir) / "old.jsonl").write_text(json.dumps(REFUSALS[0]) + "\n")
    assert _external(cfg, workdir, {})["generated"] != _external(cfg, tmp_path / "copy", {})["generated"]
