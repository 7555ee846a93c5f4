"""The collect_misbehaviors stage on a real request store (SQLite, as `factory serve` writes it): what it queues, the
serving report, and the watermark that makes each collection read only what came since the last one.

The stage runs as its Prefect task does (tasks.core.stage.execute: key, reuse, MLflow run, manifest); its inputs are
small evals/deploy artifacts made here, since building them means training a model."""

import json

import pytest
from prefect.states import State

from serve.store import Store, default_url
from tasks.collect_misbehaviors import WATERMARK, WINDOW_START, labeling_queue_dir, store_url
from tasks.core.artifacts import Artifact, ArtifactStore
from tasks.core.config import load_config
from tasks.core.registry import spec
from tasks.core.stage import Context, execute
from tasks.core.tracking import client

PROSE = "Paris is the capital of France, on the Seine, known for its museums and its long avenues."


@pytest.fixture(scope="module", autouse=True)
def one_mlflow_store(tmp_path_factory):
    """The tests' stage runs share one MLflow database: making one costs seconds (schema migrations)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        yield


def chat(rid, prompt, answer=PROSE, **fields):
    return {"id": rid, "endpoint": "chat", "model": "assistant", "model_version": "3",
            "messages": [{"role": "user", "content": prompt}], "answer": answer, "finish_reason": "stop",
            "sampling": {"max_tokens": 64}, "prompt_tokens": 8, "completion_tokens": 16, "ttft_s": 0.05,
            "latency_s": 0.5, "status": 200, **fields}


def inputs(tmp_path) -> dict[str, Artifact]:
    """An evals artifact with one failed and one passed item, and a deploy artifact (only its build id is read)."""
    evals = tmp_path / "evals"
    evals.mkdir(exist_ok=True)
    results = [{"id": "e1", "skill": "arithmetic", "messages": [{"role": "user", "content": "What is 2+2?"}],
                "response": "5", "answer": "4", "correct": False},
               {"id": "e2", "skill": "arithmetic", "messages": [{"role": "user", "content": "What is 3+3?"}],
                "response": "6", "answer": "6", "correct": True}]
    (evals / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return {"evals": Artifact("evals", "e", evals, {"build_id": "evals-1"}),
            "deploy": Artifact("deploy", "d", tmp_path, {"build_id": "deploy-1"})}


def collect(workdir, upstream, *overrides) -> tuple[Artifact, bool]:
    """(the artifact, whether it was reused) of one run of the stage."""
    ctx = Context(str(workdir), load_config("tiny", list(overrides)))
    result = execute(spec("collect_misbehaviors"), ctx, upstream)
    return (result.data, True) if isinstance(result, State) else (result, False)


def first_week(store: Store) -> None:
    store.record(chat("loop-1", "Tell me about Paris", "Paris is " * 20))
    store.record(chat("loop-2", "tell me about   paris!", "the " * 30))
    store.record(chat("fine", "What is the capital of France?"))
    store.record(chat("flagged", "Email me at jane.doe@corp.com about France", "Bonjour."))
    store.record(chat("gone", "Hello?", "", status=499))
    store.record(chat("sim-cut", "Write a long essay", PROSE, model_version="4", finish_reason="length",
                      meta={"simulated": True}))
    store.add_feedback("flagged", -1, "wrong language, I asked jane.doe@corp.com")
    store.add_feedback("fine", 1)


def test_a_collection_queues_ranked_merged_scrubbed_items_and_reports_serving(tmp_path, prefect_server):
    workdir = tmp_path / "w"
    store = Store(default_url(workdir))
    first_week(store)
    artifact, reused = collect(workdir, inputs(tmp_path))
    c = artifact.counts
    assert not reused
    assert (c["requests_read"], c["requests_flagged"], c["requests_clean"], c["requests_errored"]) == (6, 4, 1, 1)
    assert (c["feedback_read"], c["user_flags"], c["eval_failures"]) == (2, 1, 1)
    assert (c["findings"], c["items"], c["merged"], c["queued"]) == (5, 4, 1, 4)
    assert c["detector.repetition"] == 2 and c["detector.truncated"] == 1 and c["pii_replaced"] == 2

    items = [json.loads(x) for x in artifact.file("queue.jsonl").read_text().splitlines()]
    assert [(it["detectors"], it["count"]) for it in items] == [
        (["repetition"], 2), (["user_flag"], 1), (["failed_eval"], 1), (["truncated"], 1)]  # count x severity
    assert items[0]["response_ids"] == ["loop-1", "loop-2"] and items[2]["expected"] == "4"
    assert items[3]["meta"]["simulated"] is True and not items[0]["meta"]["simulated"]
    assert "jane.doe@corp.com" not in artifact.file("queue.jsonl").read_text()
    queue_dir = labeling_queue_dir(workdir)
    assert (queue_dir / f"queue-{artifact.key}.jsonl").read_text() == artifact.file("queue.jsonl").read_text()
    tasks = json.loads((queue_dir / f"queue-{artifact.key}.label_studio.json").read_text())
    assert [t["data"]["queue_id"] for t in tasks] == [it["id"] for it in items]
    assert "TextArea" in (queue_dir / "label_config.xml").read_text()
    assert (queue_dir / f"instructions-{items[0]['instructions_version']}.md").is_file()

    report = json.loads(artifact.file("serving_report.json").read_text())["versions"]
    assert (report["v3"]["requests"], report["v3"]["errors"], report["v3"]["user_flags"]) == (5, 1, 1)
    assert (report["v4"]["requests"], report["v4"]["simulated"], report["v4"]["detector.truncated"]) == (1, 1, 1)
    assert artifact.metrics["serving.v3.requests"] == 5 and artifact.metrics["serving.v3.latency_p50"] == 0.5
    logged = client(workdir).get_run(artifact.manifest["mlflow_run_id"]).data.metrics
    assert logged["serving.v4.detector.truncated"] == 1.0 and logged["queued"] == 4.0
    assert store.watermark(WATERMARK) == store.last_seq() == {"requests": 6, "feedback": 2}


def test_a_second_collection_reads_only_what_came_since_the_first(tmp_path, prefect_server):
    workdir, upstream = tmp_path / "w", inputs(tmp_path)
    store = Store(default_url(workdir))
    first_week(store)
    first, _ = collect(workdir, upstream)
    again, reused = collect(workdir, upstream)  # nothing new: the same window, the same artifact
    assert reused and again.key == first.key

    store.record(chat("week2", "Translate hello to Spanish", "I don't know."))
    store.add_feedback("loop-1", -1, "it loops")  # a late flag on a request collected last week
    second, reused = collect(workdir, upstream)
    c = second.counts
    assert not reused and second.key != first.key
    assert (c["requests_read"], c["requests_flagged"], c["feedback_read"]) == (1, 1, 1)  # only what is new
    assert c["flagged_earlier_requests"] == 1
    assert c["detector.benign_refusal"] == 1
    assert second.manifest["info"]["window"] == {"after": {"requests": 6, "feedback": 2},
                                                 "until": {"requests": 7, "feedback": 3}}
    assert store.watermark(WATERMARK) == {"requests": 7, "feedback": 3}
    assert store.watermark(WINDOW_START) == {"requests": 6, "feedback": 2}
    assert len(list(labeling_queue_dir(workdir).glob("queue-*.jsonl"))) == 2


def test_without_a_store_it_queues_failed_evals_and_creates_no_database(tmp_path, prefect_server):
    workdir = tmp_path / "w"
    artifact, _ = collect(workdir, inputs(tmp_path))
    assert (artifact.counts["requests_read"], artifact.counts["queued"]) == (0, 1)
    assert not (workdir / "serving" / "requests.db").exists()


def test_the_store_comes_from_the_environment_then_the_config_then_the_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_STORE_URL", raising=False)
    cfg = load_config("tiny")
    assert store_url(cfg, tmp_path) == f"sqlite:///{tmp_path.resolve()}/serving/requests.db"
    cfg = load_config("tiny", [f"collect.store=sqlite:///{tmp_path}/team.db"])
    assert store_url(cfg, tmp_path) == f"sqlite:///{tmp_path}/team.db"
    monkeypatch.setenv("FACTORY_STORE_URL", "postgresql+psycopg://u:secret@db:5432/factory")
    assert store_url(cfg, tmp_path) == "postgresql+psycopg://u:secret@db:5432/factory"


def test_a_store_set_in_the_config_is_read_and_is_part_of_the_key(tmp_path, prefect_server, monkeypatch):
    monkeypatch.delenv("FACTORY_STORE_URL", raising=False)
    team = Store(f"sqlite:///{tmp_path}/team.db")
    team.record(chat("t1", "Say hi", "<|assistant_start|>hi"))
    upstream = inputs(tmp_path)
    local, _ = collect(tmp_path / "w", upstream)
    shared, _ = collect(tmp_path / "w", upstream, f"collect.store=sqlite:///{tmp_path}/team.db")
    assert shared.key != local.key and shared.counts["detector.broken_format"] == 1
    assert len(ArtifactStore(tmp_path / "w" / "artifacts").list_keys("collect_misbehaviors")) == 2
