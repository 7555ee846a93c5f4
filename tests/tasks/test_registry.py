"""The registry side of deploy and rollback against a real SQLite-backed MLflow registry (the gate's own decision
is tested in tests/model/test_gate.py)."""

import logging
from types import SimpleNamespace

import pytest

from data.chat.labels import write_jsonl
from model.gate import FAIL, DeployConfig, gate, per_task
from tasks.core import model_registry
from tasks.core.tracking import Run
from tasks.deploy import RESULTS_TAG, production_results


def _model(tmp_path, name: str, weights: str):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.safetensors").write_text(weights)
    return folder


def test_registered_version_keeps_its_files_when_the_artifact_is_rebuilt(tmp_path):
    run = Run.start(tmp_path, "t", "deploy")
    folder = _model(tmp_path, "finetune", "first weights")
    version = model_registry.register(run.client, "assistant", folder, run.run_id, {})
    (folder / "model.safetensors").write_text("rebuilt weights")  # what `--force finetune` does to the artifact
    stored = model_registry.model_dir(run.client.get_model_version("assistant", version))
    assert (stored / "model.safetensors").read_text() == "first weights"


def test_alias_moves_and_rolls_back(tmp_path):
    first, second = Run.start(tmp_path, "t", "deploy"), Run.start(tmp_path, "t", "deploy")  # one run per deploy
    c = first.client
    v1 = model_registry.register(c, "assistant", _model(tmp_path, "m1", "one"), first.run_id,
                                 {"metric.score.identity": 1})
    model_registry.move_alias(c, "assistant", "production", v1)
    v2 = model_registry.register(c, "assistant", _model(tmp_path, "m2", "two"), second.run_id, {})
    model_registry.move_alias(c, "assistant", "production", v2)
    assert str(model_registry.alias_version(c, "assistant", "production").version) == v2
    assert model_registry.rollback(c, "assistant", "production") == (v2, v1)
    restored = model_registry.model_dir(model_registry.alias_version(c, "assistant", "production"))
    assert (restored / "model.safetensors").read_text() == "one"
    with pytest.raises(RuntimeError, match="no earlier version"):
        model_registry.rollback(c, "assistant", "production")


def test_production_results_come_back_from_its_version_for_the_same_items(tmp_path):
    """Deploy stores the candidate's per-item results with its version; the next gate pairs against them."""
    results = [{"id": f"q{i}", "skill": "arithmetic", "correct": i % 10 != 0} for i in range(40)]
    evals = SimpleNamespace(path=tmp_path / "evals", manifest={"info": {"items_hash": "abc123"}})
    write_jsonl(evals.path / "results.jsonl", results)
    run = Run.start(tmp_path, "t", "deploy")
    run.log_file(evals.path / "results.jsonl", "eval")
    tags = {"items_hash": "abc123", RESULTS_TAG: "eval/results.jsonl"}
    version = model_registry.register(run.client, "assistant", _model(tmp_path, "m", "w"), run.run_id, tags)
    current = run.client.get_model_version("assistant", version)
    s = SimpleNamespace(workdir=tmp_path, log=logging.getLogger("test"))
    (evals.path / "results.jsonl").unlink()  # the version's copy is what is read, not the evals artifact
    production, source = production_results(s, current, evals)
    assert source == "stored" and production == results
    # a candidate wrong on 8 of the items production got right fails against them, item by item
    candidate = [{**r, "correct": r["correct"] and i % 10 not in (1, 2)} for i, r in enumerate(results)]
    [verdict] = gate(per_task(candidate), per_task(production), DeployConfig(tolerance={"default": 0.0}))
    assert (verdict.n, verdict.production) == (40, 0.9) and verdict.difference == pytest.approx(-0.2)
    assert verdict.verdict == FAIL


def test_a_metric_named_with_an_at_sign_is_logged_under_at_spelled_out(tmp_path):
    run = Run.start(tmp_path, "t", "rl")
    run.metrics({"pass@1": 0.25, "loss": 1.5}, step=3)  # MLflow itself refuses '@' in a metric name
    logged = run.client.get_run(run.run_id).data.metrics
    assert logged == {"pass_at_1": 0.25, "loss": 1.5}
