"""Deploy is an action: its key holds the production version it decides against (a real SQLite MLflow registry)."""

import pytest

from tasks.core import model_registry
from tasks.core.artifacts import Artifact
from tasks.core.config import load_config
from tasks.core.registry import spec
from tasks.core.tracking import Run


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = Run.start(tmp_path, "t", "deploy")

    def deploy(trained: Artifact, decided_against: str | None) -> str:
        folder = tmp_path / f"model-{trained.key}"
        folder.mkdir(exist_ok=True)
        (folder / "model.safetensors").write_text(trained.key)
        tags = {"artifact_key": trained.key, "artifact_build_id": trained.build_id,
                "decided_against": decided_against or ""}
        version = model_registry.register(run.client, "assistant", folder, run.run_id, tags)
        model_registry.move_alias(run.client, "assistant", "production", version)
        return version

    return deploy


def inputs(tmp_path, name: str) -> dict[str, Artifact]:
    return {"evals": Artifact("evals", f"e{name}", tmp_path, {"build_id": f"evals-{name}"}),
            "rl": Artifact("rl", f"r{name}", tmp_path, {"build_id": f"rl-{name}"}),
            "reward_model": Artifact("reward_model", f"w{name}", tmp_path, {"build_id": f"reward-{name}"})}


def test_a_to_b_to_a_is_three_decisions_and_a_rerun_finds_the_last(tmp_path, registry):
    cfg, deploy = load_config("tiny"), spec("deploy")
    a, b = inputs(tmp_path, "A"), inputs(tmp_path, "B")
    first = deploy.key(cfg, a, tmp_path)  # against an empty registry
    va = registry(a["rl"], None)
    assert deploy.key(cfg, a, tmp_path) == first  # production is A itself: its decision is found again
    second = deploy.key(cfg, b, tmp_path)  # B against vA
    vb = registry(b["rl"], va)
    third = deploy.key(cfg, a, tmp_path)  # A again, now against vB: a new decision, not the first one cached
    assert len({first, second, third}) == 3
    registry(a["rl"], vb)
    assert deploy.key(cfg, a, tmp_path) == third
    # `--force rl` rebuilds A under the same key: a new build, so a new decision, not "already production"
    rebuilt = {**a, "rl": Artifact("rl", a["rl"].key, tmp_path, {"build_id": "rl-A2"})}
    assert deploy.key(cfg, rebuilt, tmp_path) != third


def test_finetuning_does_not_depend_on_the_tracking_server(tmp_path, monkeypatch):
    cfg = load_config("tiny")
    ins = {"pretrain": Artifact("pretrain", "p", tmp_path, {"build_id": "p1"}),
           "ingest_labels": Artifact("ingest_labels", "l", tmp_path, {"build_id": "l1"})}
    here = spec("finetune").key(cfg, ins, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert spec("finetune").key(cfg, ins, tmp_path) == here
