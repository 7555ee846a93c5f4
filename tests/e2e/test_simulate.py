"""`factory simulate` on a micro pipeline: generated users' traffic and flags reach the store, the queue, the
generator's answers, ingest_labels and the next weekly cycle, and the report holds the before/after failure rates.

The micro model learns too little for the rates to move; whether one round halves the collected failure rate is
measured by hand on the tiny preset."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data.chat.labels import read_jsonl
from flows.cli import app
from serve.store import Store, default_url
from tests.e2e.test_pipeline import built, mlflow_client  # noqa: F401  (`built`: the micro pipeline, a fixture)
from tests.micro import MICRO_ARGS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def simulated(built) -> tuple[Path, dict]:  # noqa: F811
    """(workdir, report) after one round of 2 simulated users x 5 prompts on the built micro pipeline."""
    wd = built[0]
    result = CliRunner().invoke(app, ["simulate", "--users", "2", "--prompts-per-user", "5", "--held-out-per-skill",
                                      "4", "--workdir", str(wd), *MICRO_ARGS], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "collected (flagged prompts)" in result.output and "held-out items" in result.output
    return wd, json.loads((wd / "simulate" / "report.json").read_text())


def test_the_report_has_failure_rates_before_and_after_on_the_collected_and_held_out_sets(simulated):
    _, report = simulated
    (round_,) = report["rounds"]
    assert round_["round"] == 1 and round_["traffic"]["prompts"] == 10 and round_["traffic"]["wrong"] >= 1
    collected, held = round_["collected"], round_["held_out"]
    assert collected["before"]["failure_rate"] == 1.0  # every collected prompt was flagged because it was wrong
    assert collected["after"]["items"] == round_["traffic"]["wrong"]
    assert 0 <= collected["after"]["failure_rate"] <= 1
    assert collected["after_trained"]["items"] <= round_["ingest_labels"]["answers_train"]
    assert held["before"]["items"] == held["after"]["items"] == report["held_out_items"] == 24  # 4 x 6 skills
    assert held["change"] == pytest.approx(held["after"]["failure_rate"] - held["before"]["failure_rate"])
    assert set(round_["goal"]) == {"collected_failure_halved", "held_out_within_tolerance"}


def test_the_store_holds_the_simulated_requests_and_their_flags(simulated):
    wd, report = simulated
    traffic = report["rounds"][0]["traffic"]
    with Store(default_url(wd)) as store:
        requests = [r for r in store.requests() if r["meta"].get("simulated")]
        flags = [f for f in store.feedback_since() if f["rating"] == -1 and f["request"]["meta"].get("simulated")]
    assert {r["meta"]["user"] for r in requests} == {"simulated-1", "simulated-2"}
    assert len(requests) == traffic["answered"] and len(flags) == traffic["wrong"]
    assert all(f["reason"] for f in flags)  # "wrong: the answer is 45", as a person would write


def test_the_generator_answers_the_queue_items_of_the_flagged_prompts_and_ingest_labels_counts_them(simulated):
    wd, report = simulated
    round_ = report["rounds"][0]
    queue = {item["id"]: item for item in read_jsonl(round_["collect"]["queue"])}
    assert any(item["meta"]["simulated"] for item in queue.values())
    answers = read_jsonl(wd / "labeling/answers/simulated-round-1.jsonl")
    assert answers and len(answers) == round_["labeled"]["answers"]
    assert all(a["queue_id"] in queue and a["meta"]["simulated"] for a in answers)
    assert all(queue[a["queue_id"]]["meta"]["simulated"] for a in answers)
    trained = json.loads((Path(round_["trained"]["artifact"]) / "manifest.json").read_text())
    ingest = json.loads((wd / "artifacts/ingest_labels" / trained["inputs"]["ingest_labels"]["key"] /
                         "manifest.json").read_text())["counts"]
    assert ingest["answers_read"] == ingest["answers_kept"] == len(answers)


def test_production_moved_or_the_report_says_why(simulated):
    wd, report = simulated
    deploy = report["rounds"][0]["deploy"]
    production = str(mlflow_client(wd).get_model_version_by_alias("assistant", "production").version)
    assert production == deploy["production_after"]
    if deploy["moved"]:
        assert deploy["passed"] and deploy["production_after"] != deploy["production_before"]
        assert deploy["verdict"].startswith("deployed")
    else:
        assert deploy["verdict"]  # e.g. "gate failed, assistant@production stays at v1: ..."


def test_simulate_before_the_cycles_names_what_to_run_first(tmp_path):
    result = CliRunner().invoke(app, ["simulate", "--workdir", str(tmp_path / "empty")], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "factory run all --workdir" in result.output and len(result.output.strip().splitlines()) == 1
