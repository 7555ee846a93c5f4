"""`factory eval` measures a registered model on its own yearly cycle's data: the artifacts of its lineage."""

import json
from pathlib import Path

from flows.evaluate import own_artifacts


def _artifact(root: Path, stage: str, key: str, **inputs: str) -> Path:
    folder = root / stage / key
    folder.mkdir(parents=True)
    manifest = {"stage": stage, "key": key, "inputs": {s: {"key": k} for s, k in inputs.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_the_lineage_gives_the_nearest_artifact_of_each_stage_and_skips_missing_ones(tmp_path):
    root = tmp_path / "artifacts"
    _artifact(root, "train_tokenizer", "t1")
    _artifact(root, "tokenize", "s1", train_tokenizer="t1")
    _artifact(root, "pretrain", "p1", tokenize="s1")
    _artifact(root, "tokenize", "s2", train_tokenizer="t1")  # built later by other code: not this model's
    rl = _artifact(root, "rl", "r1", pretrain="p1", preprocess="gone")
    found = own_artifacts({"artifact_path": str(rl)})
    assert found == {"rl": rl, "pretrain": root / "pretrain/p1", "tokenize": root / "tokenize/s1",
                     "train_tokenizer": root / "train_tokenizer/t1"}
    assert own_artifacts({}) == {} and own_artifacts({"artifact_path": str(tmp_path / "nope")}) == {}
