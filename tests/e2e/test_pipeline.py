"""The whole pipeline under Prefect with a real SQLite MLflow store: build, reuse, force, config change, CLI."""

import json
import math
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from typer.testing import CliRunner

from flows.cli import app
from flows.cycles import pipeline, stage, weekly_cycle, yearly_cycle
from tasks.core.config import load_config
from tasks.core.dag import ORDER, YEARLY, downstream
from tests.micro import MICRO, MICRO_ARGS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, prefect_server):
    wd = tmp_path_factory.mktemp("factory")
    pipeline(preset="tiny", workdir=str(wd), overrides=MICRO)
    return wd


def manifests(wd: Path) -> dict[str, dict]:
    """The newest complete artifact of each stage."""
    found = {}
    for path in sorted((wd / "artifacts").glob("*/*/manifest.json"), key=lambda p: p.stat().st_mtime):
        m = json.loads(path.read_text())
        found[m["stage"]] = m
    return found


def task_states(flow_state) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id]))
        )
    return {r.name: r.state.name for r in runs}


def mlflow_client(wd: Path) -> MlflowClient:
    uri = f"sqlite:///{wd}/mlflow.db"
    return MlflowClient(uri, registry_uri=uri)


def test_pipeline_builds_every_stage_with_reconciled_counts(workdir):
    built = manifests(workdir)
    assert set(built) == set(ORDER)
    crawl = built["crawl"]["counts"]
    assert crawl["read"] == crawl["documents"] + crawl["filtered"] + crawl["quarantined"]
    assert crawl["quarantined"] >= 1  # the sample crawl has broken records
    labels = built["ingest_labels"]["counts"]
    assert labels["quarantined"] >= 3 and labels["duplicates"] >= 1
    quarantine = [
        json.loads(x)
        for x in (workdir / "artifacts/ingest_labels" / built["ingest_labels"]["key"] / "quarantine.jsonl")
        .read_text()
        .splitlines()
    ]
    assert all(".jsonl line " in q["reason"] for q in quarantine)
    assert built["pretrain"]["metrics"]["val_loss"] > 0
    assert built["eval_base"]["metrics"]["val_bpb"] < built["eval_base"]["metrics"]["unigram_bpb"]
    assert built["deploy"]["metrics"]["deployed"] == 1
    assert list((workdir / "labeling/queue").glob("queue-*.jsonl"))


def test_mlflow_has_a_parent_run_per_cycle_and_a_nested_run_per_stage(workdir):
    c = mlflow_client(workdir)
    weekly = c.get_experiment_by_name("weekly_cycle")
    runs = c.search_runs([weekly.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert {r.data.tags["stage"] for r in children} == set(ORDER)
    pretrain = next(
        r
        for r in c.search_runs([c.get_experiment_by_name("yearly_cycle").experiment_id])
        if r.data.tags.get("stage") == "pretrain"
    )
    assert len(c.get_metric_history(pretrain.info.run_id, "loss")) >= 2
    assert c.get_model_version_by_alias("base", "candidate")
    assert c.get_model_version_by_alias("assistant", "production")


def test_prefect_shows_each_stage_report_and_mlflow_holds_the_plots(workdir):
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a.type for a in client.read_artifacts() if a.key}
    expected = {
        "crawl-counts": "table",
        "crawl-sources": "table",
        "preprocess-steps": "table",
        "preprocess-report": "markdown",
        "train-tokenizer-report": "markdown",
        "pretrain-progress": "progress",
        "pretrain-loss-curve": "markdown",
        "eval-base-scores": "table",
        "evals-scores": "table",
        "evals-score-chart": "markdown",
        "deploy-gate": "table",
        "collect-misbehaviors-queue": "table",
    }
    assert {k: artifacts.get(k) for k in expected} == expected
    c = mlflow_client(workdir)
    evals_run = manifests(workdir)["evals"]["mlflow_run_id"]
    assert [f.path for f in c.list_artifacts(evals_run, "plots")] == ["plots/scores.png"]
    preprocess_run = manifests(workdir)["preprocess"]["mlflow_run_id"]
    assert "report.md" in {f.path for f in c.list_artifacts(preprocess_run)}


def test_lineage_leads_from_the_production_model_back_to_the_crawl(workdir):
    result = CliRunner().invoke(app, ["lineage", "assistant@production", "--workdir", str(workdir), "--json"])
    assert result.exit_code == 0, result.output
    chain = json.loads(result.output)
    assert chain["model"].startswith("assistant/") and "production" in chain["aliases"]
    stages, node = [], chain["artifacts"]
    while node:
        stages.append(node["stage"])
        assert node["mlflow_run_id"] and node["prefect_flow_run_id"]
        node = next((n for n in node["inputs"] if n["stage"] in ("pretrain", "tokenize", "preprocess", "crawl")), None)
    assert stages == ["finetune", "pretrain", "tokenize", "preprocess", "crawl"]


def test_rerun_with_nothing_changed_reuses_every_stage(workdir):
    before = {k: m["build_id"] for k, m in manifests(workdir).items()}
    state = weekly_cycle(preset="tiny", workdir=str(workdir), overrides=MICRO, return_state=True)
    assert state.is_completed()
    assert task_states(state) == {name: "Cached" for name in ORDER}
    assert {k: m["build_id"] for k, m in manifests(workdir).items()} == before


def test_forced_pretrain_rebuilds_it_and_downstream_but_nothing_upstream(workdir):
    before = manifests(workdir)
    state = yearly_cycle(preset="tiny", workdir=str(workdir), overrides=MICRO, force=["pretrain"], return_state=True)
    states = task_states(state)
    assert [n for n in YEARLY if states[n] == "Cached"] == ["crawl", "preprocess", "train_tokenizer", "tokenize"]
    assert [n for n in YEARLY if states[n] == "Completed"] == ["pretrain", "eval_base", "register_base"]
    after = manifests(workdir)
    assert after["tokenize"]["build_id"] == before["tokenize"]["build_id"]
    assert after["pretrain"]["build_id"] != before["pretrain"]["build_id"]
    assert after["eval_base"]["key"] != before["eval_base"]["key"]


def cli(workdir: Path, *args: str):
    result = CliRunner().invoke(app, [*args, "--workdir", str(workdir), *MICRO_ARGS])
    assert result.exit_code == 0, result.output
    return result.output


def test_stage_only_rebuilds_one_stage_and_leaves_what_follows_stale(workdir):
    before = manifests(workdir)
    cli(workdir, "stage", "train_tokenizer", "--force", "--only")
    after = manifests(workdir)
    assert after["train_tokenizer"]["build_id"] != before["train_tokenizer"]["build_id"]
    assert after["preprocess"]["build_id"] == before["preprocess"]["build_id"]
    assert after["tokenize"]["build_id"] == before["tokenize"]["build_id"]
    status = {line.split()[1]: line for line in cli(workdir, "status").splitlines() if line.startswith("│")}
    assert "missing" in status["tokenize"] and "done" in status["train_tokenizer"]


def test_forced_stage_rebuilds_everything_after_it_and_nothing_before(workdir):
    state = stage(name="train_tokenizer", workdir=str(workdir), overrides=MICRO, force=True, return_state=True)
    states = task_states(state)
    after = ["train_tokenizer", *downstream("train_tokenizer")]
    assert {n for n, s in states.items() if s == "Completed"} == set(after)
    assert {n for n, s in states.items() if s == "Cached"} == {"crawl", "preprocess", "ingest_labels"}


def test_changed_finetune_config_redeploys_and_rollback_restores(workdir):
    c = mlflow_client(workdir)
    before = str(c.get_model_version_by_alias("assistant", "production").version)
    overrides = [*MICRO, "finetune.steps=12", "deploy.tolerance={default: 1.0}"]
    state = weekly_cycle(preset="tiny", workdir=str(workdir), overrides=overrides, return_state=True)
    states = task_states(state)
    assert states["ingest_labels"] == "Cached" and states["finetune"] == "Completed"
    deployed = str(c.get_model_version_by_alias("assistant", "production").version)
    assert deployed != before
    assert f"v{deployed} -> v{before}" in cli(workdir, "rollback")
    assert str(c.get_model_version_by_alias("assistant", "production").version) == before
    assert cli(workdir, "chat", "--prompt", "Who made you?", "--max-new-tokens", "8") is not None


def test_interrupted_pretrain_resumes_from_its_last_checkpoint(workdir):
    before = manifests(workdir)["pretrain"]
    path = workdir / "artifacts/pretrain" / before["key"]
    # What a crash between the step-75 checkpoint and the end leaves behind: checkpoints, no final model, no manifest.
    (path / "manifest.json").unlink()
    for leftover in [path / "model", *sorted((path / "checkpoints").iterdir())[1:]]:
        shutil.rmtree(leftover)
    result = CliRunner().invoke(app, ["status", "--workdir", str(workdir), *MICRO_ARGS])
    assert "incomplete" in result.output
    yearly_cycle(preset="tiny", workdir=str(workdir), overrides=MICRO)
    after = manifests(workdir)["pretrain"]
    assert after["key"] == before["key"]
    assert after["counts"]["resumed_from_step"] == 75 and after["counts"]["steps"] == 150


def decision(workdir: Path) -> dict:
    return json.loads(
        (workdir / "artifacts/deploy" / manifests(workdir)["deploy"]["key"] / "decision.json").read_text()
    )


def test_gate_failure_keeps_production_and_says_why(workdir):
    c = mlflow_client(workdir)
    before = str(c.get_model_version_by_alias("assistant", "production").version)
    weekly_cycle(preset="tiny", workdir=str(workdir), overrides=[*MICRO, "deploy.min_score={identity: 1.01}"])
    made = decision(workdir)
    assert not made["passed"] and made["production_after"] == before
    assert "identity" in made["verdict"] and "floor 1.01" in made["verdict"]
    assert str(c.get_model_version_by_alias("assistant", "production").version) == before


def test_gate_scores_production_again_when_the_eval_items_changed(workdir):
    weekly_cycle(
        preset="tiny", workdir=str(workdir), overrides=[*MICRO, "evals.seed=7", "deploy.tolerance={default: 1.0}"]
    )
    made = decision(workdir)
    assert made["production_scores"] == "re-evaluated" and made["passed"]
    assert {r["task"] for r in made["rows"]} == set(load_config("tiny").evals.skills)


# Scale-out and interoperability through the stages. Last in this module: they add pretrain/finetune artifacts that
# are newer than the MICRO ones the tests above look up.

def test_pretrain_and_finetune_train_in_two_processes_started_by_their_tasks(workdir):
    two = [*MICRO, "pretrain.nproc=2", "pretrain.strategy=deepspeed", "pretrain.zero_stage=2", "finetune.nproc=2"]
    stage(name="finetune", workdir=str(workdir), overrides=two)
    found = manifests(workdir)
    pre, fin = found["pretrain"], found["finetune"]
    assert pre["config"]["pretrain"]["nproc"] == 2 and fin["config"]["finetune"]["nproc"] == 2
    assert pre["counts"]["tokens"] == 150 * 4 * 64 * 2  # steps x micro-batch x seq_len x ranks
    assert pre["metrics"]["val_loss"] < 5.0  # ln(512) = 6.2 at the start
    pre_dir = workdir / "artifacts/pretrain" / pre["key"]
    log = (pre_dir / "launch" / "launch.log").read_text()
    assert "[rank 0]" in log and "step 150/150" in log
    assert (pre_dir / "checkpoints" / "ckpt_000150" / "deepspeed").is_dir()  # ZeRO state beside the full weights
    c = mlflow_client(workdir)
    run = c.search_runs([e.experiment_id for e in c.search_experiments()],
                        filter_string=f"tags.artifact_key = '{pre['key']}' and tags.cached = 'false'")[0]
    losses = c.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses][-1] == 150 and len(losses) >= 15  # the ranks' log steps reached MLflow
    assert fin["counts"]["steps"] == 10 and fin["metrics"]["val_loss"] > 0


def test_finetune_starts_from_a_hugging_face_llama_checkpoint(workdir, tmp_path):
    transformers = pytest.importorskip("transformers")
    base = workdir / "artifacts/pretrain" / manifests(workdir)["pretrain"]["key"] / "model"
    hf_dir = tmp_path / "hf-llama"
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    transformers.LlamaForCausalLM(config).save_pretrained(hf_dir)
    shutil.copy(base / "tokenizer.json", hf_dir / "tokenizer.json")
    stage(name="finetune", workdir=str(workdir), overrides=[*MICRO, f"finetune.init_from={hf_dir}",
                                                             "finetune.max_seq_len=64"])
    fin = manifests(workdir)["finetune"]
    assert fin["config"]["finetune"]["init_from"] == str(hf_dir)
    model = json.loads((workdir / "artifacts/finetune" / fin["key"] / "model" / "config.json").read_text())
    assert (model["n_embd"], model["n_layer"], model["n_kv_head"], model["seq_len"]) == (48, 2, 2, 64)
    assert fin["metrics"]["val_loss"] < math.log(512)
