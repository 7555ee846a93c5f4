import json

from model.files import atomic_write_text
from tasks.core.artifacts import ArtifactStore, stage_key


def test_key_changes_with_config_inputs_and_version():
    base = stage_key("pretrain", "1", {"steps": 10}, {"tokenize": "abc"})
    assert base == stage_key("pretrain", "1", {"steps": 10}, {"tokenize": "abc"})
    assert base != stage_key("pretrain", "1", {"steps": 11}, {"tokenize": "abc"})
    assert base != stage_key("pretrain", "1", {"steps": 10}, {"tokenize": "abd"})
    assert base != stage_key("pretrain", "2", {"steps": 10}, {"tokenize": "abc"})


def test_directory_without_manifest_is_incomplete_and_not_reused(tmp_path):
    store = ArtifactStore(tmp_path)
    out = store.prepare("crawl", "k1", keep_partial=False)
    (out / "documents.parquet").write_text("half written")
    assert store.load("crawl", "k1") is None
    assert store.state("crawl", "k1") == "incomplete"
    art = store.commit("crawl", "k1", {"counts": {"documents": 3}})
    assert store.state("crawl", "k1") == "done"
    assert store.load("crawl", "k1").counts == {"documents": 3}
    assert json.loads((out / "manifest.json").read_text())["build_id"] == art.build_id


def test_prepare_clears_partial_output_unless_resumable(tmp_path):
    store = ArtifactStore(tmp_path)
    out = store.prepare("pretrain", "k", keep_partial=False)
    (out / "checkpoints").mkdir()
    assert (store.prepare("pretrain", "k", keep_partial=True) / "checkpoints").exists()
    assert not (store.prepare("pretrain", "k", keep_partial=False) / "checkpoints").exists()


def test_rebuild_gets_a_new_build_id(tmp_path):
    store = ArtifactStore(tmp_path)
    store.prepare("s", "k", keep_partial=False)
    first = store.commit("s", "k", {})
    store.prepare("s", "k", keep_partial=False)
    assert store.load("s", "k") is None  # the old manifest goes first: a crash mid-rebuild leaves it incomplete
    assert store.commit("s", "k", {}).build_id != first.build_id


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
