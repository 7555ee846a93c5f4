"""Deploy gate and rollback against a real SQLite-backed MLflow registry."""

import pytest

from tasks import registry
from tasks.deploy import gate
from tasks.tracking import client


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


def test_alias_moves_and_rolls_back(tmp_path):
    c = client(tmp_path)
    (tmp_path / "m1").mkdir()
    (tmp_path / "m2").mkdir()
    v1 = registry.register(c, "assistant", tmp_path / "m1", None, {"metric.score.identity": 1.0})
    registry.move_alias(c, "assistant", "production", v1)
    v2 = registry.register(c, "assistant", tmp_path / "m2", None, {})
    registry.move_alias(c, "assistant", "production", v2)
    assert str(registry.alias_version(c, "assistant", "production").version) == v2
    assert registry.rollback(c, "assistant", "production") == (v2, v1)
    assert registry.alias_version(c, "assistant", "production").source == str((tmp_path / "m1").resolve())
    with pytest.raises(RuntimeError, match="no earlier version"):
        registry.rollback(c, "assistant", "production")
