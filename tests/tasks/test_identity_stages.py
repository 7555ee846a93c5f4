"""The `identity` section through the weekly training stages, built as their Prefect tasks build them (key, MLflow run,
manifest) on micro inputs made here: finetune writes assistant.json beside the weights, preference and rl carry it
on, and a changed identity is a new finetune key."""

import json

import pytest
from prefect.states import State

from data.chat.labels import write_jsonl
from data.chat.synthetic import generate_comparisons, generate_conversations
from model.identity import IDENTITY_FILE, IdentityConfig, load_identity
from tasks.core.artifacts import Artifact
from tasks.core.config import load_config
from tasks.core.registry import spec
from tasks.core.stage import Context, execute
from tests.micro import MICRO
from tests.models import make_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")

ADA = ["identity.name=Ada", "identity.maker=Acme Labs", "identity.at_inference=true"]  # MICRO turns it off
SHORT = ["finetune.steps=2", "finetune.eval_every=2", "finetune.ckpt_every=2", "finetune.warmup_steps=0",
         "reward_model.enabled=false", "rl.skills=[\"letter_count\"]"]


@pytest.fixture(scope="module", autouse=True)
def one_mlflow_store(tmp_path_factory):
    """The module's stage runs share one MLflow database: making one costs seconds (schema migrations)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
        yield


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> dict[str, Artifact]:
    """A pretrain artifact (a random micro model with a BPE tokenizer) and an ingest_labels one (conversations that
    name Ada, a share of them with her system message, and comparisons)."""
    root = tmp_path_factory.mktemp("inputs")
    make_model_dir(root / "pretrain" / "model", seq_len=64)
    identity = IdentityConfig(name="Ada", maker="Acme Labs")
    labels = root / "ingest_labels"
    conversations = generate_conversations(48, seed=0, identity=identity)
    comparisons = generate_comparisons(24, seed=1, identity=identity)
    write_jsonl(labels / "conversations_train.jsonl", conversations[:40])
    write_jsonl(labels / "conversations_val.jsonl", conversations[40:])
    write_jsonl(labels / "comparisons_train.jsonl", comparisons[:20])
    write_jsonl(labels / "comparisons_val.jsonl", comparisons[20:])
    return {"pretrain": Artifact("pretrain", "p", root / "pretrain", {"build_id": "pretrain-1"}),
            "ingest_labels": Artifact("ingest_labels", "l", labels, {"build_id": "labels-1"})}


def build(name: str, workdir, inputs: dict[str, Artifact], *overrides: str) -> Artifact:
    result = execute(spec(name), Context(str(workdir), load_config("tiny", [*MICRO, *SHORT, *overrides])), inputs)
    return result.data if isinstance(result, State) else result


def test_finetune_writes_assistant_json_and_preference_and_rl_carry_it(tmp_path, upstream, prefect_server):
    sft = build("finetune", tmp_path, upstream, *ADA)
    assert load_identity(sft.path / "model") == IdentityConfig(name="Ada", maker="Acme Labs")
    asked = json.loads((sft.path / "sample.json").read_text())["messages"]
    assert asked[0] == {"role": "system", "content": "You are Ada, a small assistant model made by Acme Labs."}

    rm = build("reward_model", tmp_path, {**upstream, "finetune": sft}, *ADA)
    dpo = build("preference", tmp_path, {**upstream, "finetune": sft, "reward_model": rm}, *ADA)
    assert dpo.counts["steps"] > 0  # trained and saved its own weights, not a copy of the SFT folder
    rl = build("rl", tmp_path, {**upstream, "preference": dpo}, *ADA)
    assert "skipped" not in rl.manifest["info"]
    for artifact in (dpo, rl):
        model = artifact.path / "model"
        assert (model / IDENTITY_FILE).read_bytes() == (sft.path / "model" / IDENTITY_FILE).read_bytes(), artifact


def test_a_changed_identity_is_a_new_finetune_key(tmp_path, upstream):
    def key(*overrides: str) -> str:
        return spec("finetune").key(load_config("tiny", [*MICRO, *overrides]), upstream, tmp_path)

    assert key(*ADA) == key(*ADA)
    assert key(*ADA) != key("identity.name=Bea", "identity.maker=Acme Labs")
    assert key(*ADA) != key(*ADA, "identity.train_fraction=0.5")
