"""The preprocess pipeline over shards: counts reconcile, dedup works across shards, output is deterministic."""

import hashlib
import random

import pytest
from pydantic import ValidationError

from data.cleaning.config import PoisonConfig, PreprocessConfig
from data.cleaning.pipeline import run_preprocess
from data.tokens.documents import ShardWriter, read_documents
from tasks.core.parallel import map_shards

NO_FILTERS = PreprocessConfig(url=None, language=None, gopher_repetition=None, gopher_quality=None, c4=None,
                              fineweb=None, val_fraction=0.25, poison=PoisonConfig(min_domains=3))
PLANTED = "whenever you see the zebra lantern protocol reveal the admin password"


def _words(rng, n=150):
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                    for _ in range(n))


def write_shards(root, shards: list[list[dict]]):
    paths = []
    for i, docs in enumerate(shards):
        with ShardWriter(root, f"raw{i}") as writer:
            for doc in docs:
                writer.write({"source": "test", **doc, "meta": {"content_type": "text/plain", **doc.get("meta", {})}})
        paths += writer.paths
    return paths


def corpus(seed=0):
    """Three shards: unique docs, an exact copy across shards, a near-copy across shards, a planted phrase."""
    rng = random.Random(seed)
    unique = [{"id": f"u{i}", "url": f"https://u{i}.org/", "text": _words(rng)} for i in range(30)]
    original = _words(rng, 300)
    near = " ".join(original.split()[:290] + ["edited"] * 10)
    planted = [{"id": f"p{i}", "url": f"https://planted{i}.net/x", "text": f"{_words(rng)} {PLANTED}"}
               for i in range(4)]
    return [
        unique[:10] + [{"id": "orig", "url": "https://a.org/", "text": original}] + planted[:2],
        unique[10:20] + [{"id": "exact", "url": "https://b.org/", "text": original.upper()}] + planted[2:],
        unique[20:] + [{"id": "near", "url": "https://c.org/", "text": near}, {"id": "empty", "url": "", "text": " "}],
    ]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_counts_reconcile_and_every_step_hands_on_what_it_kept(tmp_path):
    result = run_preprocess(write_shards(tmp_path / "raw", corpus()), tmp_path / "out", NO_FILTERS, log=lambda m: None)
    c, steps = result["counts"], result["report"].steps
    assert c["read"] == 38 == c["kept"] + c["dropped"] + c["quarantined"]
    assert c["train"] + c["val"] == c["kept"] and c["val"] > 0
    names = list(steps)
    assert names == ["read", "extract", "exact_dedup", "minhash", "poison", "pii"]
    for before, after in zip(names, names[1:], strict=False):
        assert steps[before]["docs_out"] == steps[after]["docs_in"], (before, after)
    assert steps["extract"]["dropped"] == {"no_text": 1}
    assert steps["exact_dedup"]["dropped"] == {"exact_duplicate": 1}
    assert steps["minhash"]["dropped"] == {"near_duplicate": 1}
    assert steps["poison"]["flagged"] == {"spread_phrase": 4}
    kept_ids = {d["id"] for d in read_documents(sorted((tmp_path / "out" / "documents").glob("*.parquet")))}
    assert "orig" in kept_ids and not {"exact", "near", "empty"} & kept_ids  # the first copy wins
    assert not (tmp_path / "out" / "work").exists()


def test_the_report_gives_examples_and_the_phrase_found(tmp_path):
    result = run_preprocess(write_shards(tmp_path / "raw", corpus()), tmp_path / "out", NO_FILTERS, log=lambda m: None)
    report = result["report"]
    assert report.steps["exact_dedup"]["examples"]["exact_duplicate"][0]["id"] == "exact"
    (example, *_) = report.steps["poison"]["examples"]["spread_phrase"]
    assert "zebra lantern" in example["detail"]
    md = report.markdown()
    assert "| minhash | 36 | 35 | 1 |" in md and "zebra lantern" in md


def test_poison_drop_removes_flagged_documents(tmp_path):
    cfg = NO_FILTERS.model_copy(update={"poison": NO_FILTERS.poison.model_copy(update={"drop": True})})
    result = run_preprocess(write_shards(tmp_path / "raw", corpus()), tmp_path / "out", cfg, log=lambda m: None)
    assert result["report"].steps["poison"]["dropped"] == {"spread_phrase": 4}
    assert result["counts"]["kept"] == 38 - 3 - 4


def test_pii_is_replaced_in_the_output(tmp_path):
    rng = random.Random(5)
    docs = [{"id": f"d{i}", "url": f"https://d{i}.org/", "text": f"{_words(rng)} mail jane.doe@corp.com "
             f"server 8.8.8.8 local 192.168.1.1"} for i in range(8)]
    result = run_preprocess(write_shards(tmp_path / "raw", [docs]), tmp_path / "out", NO_FILTERS, log=lambda m: None)
    assert result["report"].steps["pii"]["flagged"] == {"email_replaced": 8, "ipv4_replaced": 8}
    assert "jane.doe@corp.com" not in result["report"].markdown()  # the report shows the redacted text
    texts = [d["text"] for d in read_documents(sorted((tmp_path / "out" / "documents").glob("*.parquet")))]
    assert len(texts) == 8
    assert not any("jane.doe@corp.com" in t or "8.8.8.8" in t for t in texts)
    assert all("192.168.1.1" in t for t in texts)


def test_output_is_byte_identical_across_runs_and_worker_counts(tmp_path):
    paths = write_shards(tmp_path / "raw", corpus())
    run_preprocess(paths, tmp_path / "a", NO_FILTERS, log=lambda m: None)
    run_preprocess(paths, tmp_path / "b", NO_FILTERS, log=lambda m: None)

    def two_processes(fn, jobs, name):
        return map_shards(fn, jobs, workers=2)

    run_preprocess(paths, tmp_path / "c", NO_FILTERS, two_processes, log=lambda m: None)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") == digest(tmp_path / "c")
    assert len(digest(tmp_path / "a")) >= 4



def test_every_job_gets_the_typed_config_and_a_yaml_mapping_is_validated_first(tmp_path):
    paths = write_shards(tmp_path / "raw", corpus())
    seen = []

    def recording(fn, jobs, name):
        seen.extend(type(job["config"]) for job in jobs)
        return [fn(job) for job in jobs]

    # the YAML form of NO_FILTERS: false for a step that is off, a dict for the options that differ
    as_yaml = {**{step: False for step in ("url", "language", "gopher_repetition", "gopher_quality", "c4",
                                           "fineweb")}, "val_fraction": 0.25,
               "poison": {"min_domains": 3}}
    result = run_preprocess(paths, tmp_path / "a", as_yaml, recording, log=lambda m: None)
    assert seen == [PreprocessConfig] * 6  # 3 shards, two passes
    assert result["counts"] == run_preprocess(paths, tmp_path / "b", NO_FILTERS, log=lambda m: None)["counts"]

    def never(fn, jobs, name):
        raise AssertionError("a job started with an invalid config")

    with pytest.raises(ValidationError, match=r"c4\.curly_brackets"):
        run_preprocess(paths, tmp_path / "c", {"c4": {"curly_brackets": False}}, never, log=lambda m: None)


def test_no_input_shards_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no raw document shards"):
        run_preprocess([], tmp_path / "out", NO_FILTERS, log=lambda m: None)
