"""The interrogate stage built as its Prefect task builds it (tasks.core.stage.execute: key, MLflow run, manifest) on
micro inputs made here: a random micro assistant as the rl artifact, crawled pages as preprocessed train documents,
and a few training labels (building real ones means pretraining and finetuning). It writes its refusals as a labels
batch that the next ingest_labels reads, and a second round of another model measures over-refusal against it."""

import json
import shutil

import pytest
from prefect.states import State

from data.chat.labels import read_jsonl, write_jsonl
from data.chat.skills import Refusal
from data.search import SearchIndex
from data.tokens.documents import ShardWriter
from flows.cycles import stage
from tasks.core.artifacts import Artifact
from tasks.core.config import load_config
from tasks.core.registry import spec
from tasks.core.stage import Context, execute
from tasks.ingest_labels import generated_dir
from tests.models import make_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["interrogate.known_questions=10", "interrogate.invented_questions=12", "interrogate.max_new_tokens=8"]
TOPICS = ["json", "pathlib", "asyncio", "sqlite3", "argparse", "Tower_Bridge", "photosynthesis", "glaciers"]
TRAINED = "What is json?"  # a user turn of the training labels: never asked


@pytest.fixture(scope="module", autouse=True)
def one_mlflow_store(tmp_path_factory):
    """The tests' stage runs share one MLflow database: making one costs seconds (schema migrations)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        yield


def rl_artifact(root, seed: int) -> Artifact:
    folder = root / f"rl-{seed}"
    make_model_dir(folder / "model", seed=seed)
    return Artifact("rl", f"r{seed}", folder, {"build_id": f"rl-{seed}"})


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> dict[str, Artifact]:
    """preprocess (train documents about TOPICS, plus two pages nothing can be asked about), ingest_labels (a few
    conversations, one of them asking TRAINED) and rl (a random micro assistant)."""
    root = tmp_path_factory.mktemp("inputs")
    with ShardWriter(root / "preprocess" / "documents", "train") as shards:
        for i, topic in enumerate(TOPICS):
            text = (f"The page {topic} describes item number {i} of this small collection in plain words. "
                    "It goes on for a while.")
            shards.write({"id": f"d{i}", "url": f"https://docs.example/{topic}.html", "text": text})
        shards.write({"id": "short", "url": "https://docs.example/short.html", "text": "Too short."})
        shards.write({"id": "no-url", "url": "", "text": "A page without an address has no topic to ask about."})
    labels = root / "ingest_labels"
    chat = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "An answer."}]}
            for q in (TRAINED, "Hello there")]
    write_jsonl(labels / "conversations_train.jsonl", chat)
    write_jsonl(labels / "comparisons_train.jsonl", [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}])
    # the search index over the same pages, which the assistant is asked with, as it is served
    SearchIndex.build([{"url": f"https://docs.example/{t}.html", "text": f"The page {t} describes it."}
                       for t in TOPICS]).save(root / "index" / "index")
    return {"preprocess": Artifact("preprocess", "p", root / "preprocess", {"build_id": "preprocess-1"}),
            "ingest_labels": Artifact("ingest_labels", "l", labels, {"build_id": "labels-1"}),
            "index": Artifact("index", "i", root / "index", {"build_id": "index-1"}),
            "rl": rl_artifact(root, 0)}


def interrogate(workdir, inputs: dict[str, Artifact]) -> Artifact:
    result = execute(spec("interrogate"), Context(str(workdir), load_config("tiny", SMALL)), inputs)
    return result.data if isinstance(result, State) else result


@pytest.fixture(scope="module")
def first_round(tmp_path_factory, upstream, prefect_server):
    workdir = tmp_path_factory.mktemp("work")
    return workdir, interrogate(workdir, upstream)


def test_every_question_is_asked_classified_and_split_and_none_was_trained_on(first_round):
    _, made = first_round
    answers = read_jsonl(made.file("answers.jsonl"))
    c = made.counts
    assert (c["known_asked"], c["invented_asked"]) == (len(TOPICS) - 1, 12) and c["trained_on_skipped"] == 1
    assert c["pages_no_topic_or_sentence"] == 2 and len(answers) == len(TOPICS) - 1 + 12
    assert TRAINED not in {a["messages"][0]["content"] for a in answers}
    assert {a["part"] for a in answers} == {"teach", "held_out"}
    assert c["teach"] + c["known_held_out"] + c["invented_held_out"] == len(answers)
    assert sum(c[f"known_{cls}"] for cls in ("right", "refused", "wrong")) == c["known_asked"]
    held = [a for a in answers if a["part"] == "held_out" and a["kind"] == "invented"]
    assert made.metrics["hallucination_rate"] == round(sum(a["class"] == "confident" for a in held) / len(held), 4)


def test_refusals_are_written_for_the_teach_questions_it_got_wrong_as_a_labels_batch(first_round):
    workdir, made = first_round
    answers = {a["id"]: a for a in read_jsonl(made.file("answers.jsonl"))}
    batch = generated_dir(workdir) / f"interrogate-{made.key}.jsonl"
    refusals = read_jsonl(batch)
    assert refusals == read_jsonl(made.file("refusals.jsonl")) and len(refusals) == made.counts["refusals_written"]
    taught = [answers[r["meta"]["question_id"]] for r in refusals]
    assert {a["id"] for a in taught} == {a["id"] for a in answers.values()
                                         if a["part"] == "teach" and a["class"] in ("wrong", "confident")}
    assert refusals and all(Refusal().check({}, r["messages"][-1]["content"]) for r in refusals)
    assert json.loads(batch.with_name(batch.name + ".meta.json").read_text())["instructions_version"] == \
        "interrogate-v1"


def test_without_an_earlier_round_over_refusal_is_not_measured(first_round):
    _, made = first_round
    assert "over_refusal_rate" not in made.metrics and made.manifest["info"]["previous_round"] is None


def test_the_next_ingest_labels_reads_the_refusals(first_round, tmp_path):
    workdir, made = first_round
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "batch.jsonl", [{"messages": [{"role": "user", "content": "Hi"},
                                                      {"role": "assistant", "content": "Hello!"}]}])
    # a week later: the batch is older than the delay (0 here, 24 hours by default)
    stage(name="ingest_labels", workdir=str(workdir),
          overrides=[f"labels.inbox={inbox}", "labels.generated_delay_hours=0", "labels.val_fraction=0"])
    (labels,) = [json.loads(p.read_text()) for p in (workdir / "artifacts" / "ingest_labels").glob("*/manifest.json")]
    c = labels["counts"]
    assert c["generated_files"] == 1 and c["generated_kept"] == made.counts["refusals_written"]
    assert c["conversations_train"] == 1 + made.counts["refusals_written"]
    assert labels["info"]["instructions_versions"]["interrogate-v1"]["files"] == [
        f"generated/interrogate-{made.key}.jsonl"]


def test_a_later_round_of_another_model_measures_over_refusal_against_the_earlier_one(first_round, upstream, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(first_round[0], workdir)
    earlier = first_round[1].key
    path = workdir / "artifacts" / "interrogate" / earlier / "answers.jsonl"
    # as if the earlier model had known every held-out crawl fact
    write_jsonl(path, [{**a, "class": "right"} if a["kind"] == "known" else a for a in read_jsonl(path)])
    later = interrogate(workdir, {**upstream, "rl": rl_artifact(tmp_path, 1)})
    assert later.manifest["info"]["previous_round"] == earlier
    held = [a for a in read_jsonl(later.file("answers.jsonl")) if a["part"] == "held_out" and a["kind"] == "known"]
    over = later.manifest["info"]["over_refusal"]
    assert over["previously_right"] == len(held) > 0
    assert later.metrics["over_refusal_rate"] == round(sum(a["class"] == "refused" for a in held) / len(held), 4)
