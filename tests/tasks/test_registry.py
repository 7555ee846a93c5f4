"""Deploy gate and rollback against a real SQLite-backed MLflow registry."""

import pytest

from tasks.core import model_registry
from tasks.core.tracking import Run
from tasks.deploy import gate


def test_gate_passes_within_tolerance_and_fails_beyond():
    prod = {"score.arithmetic": 0.5, "score.identity": 0.9}
    rows = gate({"score.arithmetic": 0.46, "score.identity": 0.9}, prod, {"default": 0.05}, {})
    assert all(r["passed"] for r in rows)
    rows = gate({"score.arithmetic": 0.40, "score.identity": 0.9}, prod, {"default": 0.05}, {})
    failed = [r for r in rows if not r["passed"]]
    assert [r["task"] for r in failed] == ["arithmetic"] and "production 0.500" in failed[0]["why"]


def test_gate_per_task_tolerance_and_floor():
    rows = gate({"score.spelling": 0.2}, {"score.spelling": 0.5}, {"spelling": 0.5}, {"spelling": 0.3})
    assert not rows[0]["passed"] and "floor" in rows[0]["why"]


def test_first_deploy_has_nothing_to_compare_against():
    assert all(r["passed"] for r in gate({"score.identity": 0.0}, None, {"default": 0.0}, {}))


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
