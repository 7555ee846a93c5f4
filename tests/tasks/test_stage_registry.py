"""Adding a stage is one module: its config section, place in the DAG, `factory status` row, Prefect flow and
deployment all follow from the declaration, with no other edit."""

import importlib
import json
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from flows.deployments import ROOT, render
from tasks.core import registry
from tasks.core.config import ConfigError, load_config

EXAMPLE = '''
"""Stage `word_count`: words per crawled document, an example of a stage added in one file."""

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.stage import stage


class WordCountConfig(BaseModel):
    """How words are counted."""

    model_config = ConfigDict(extra="forbid")
    min_length: int = Field(1, ge=1, description="Shorter words are not counted.")


@stage("word_count", cycle="yearly", inputs=("crawl",), config={"word_count": WordCountConfig}, main_metric="words")
def word_count(s):
    from data.tokens.documents import read_documents

    cfg = s.cfg.word_count
    docs = list(read_documents(sorted((s.inputs["crawl"].path / "documents").glob("*.parquet"))))
    words = sum(len([w for w in d["text"].split() if len(w) >= cfg.min_length]) for d in docs)
    (s.out / "words.json").write_text(str(words))
    return {"counts": {"documents": len(docs)}, "metrics": {"words": words}}
'''


@pytest.fixture
def example_stage(tmp_path, monkeypatch):
    (tmp_path / "example_stage.py").write_text(textwrap.dedent(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.EXTRA_MODULES_ENV, "example_stage")
    yield
    monkeypatch.delenv(registry.EXTRA_MODULES_ENV)
    sys.modules.pop("example_stage", None)
    importlib.reload(importlib.import_module("flows.stages"))


def test_a_new_stage_module_gets_a_config_section_validated_at_load_time(example_stage):
    assert load_config("tiny", ["word_count.min_length=3"]).word_count.min_length == 3
    with pytest.raises(ConfigError, match="word_count.min_length"):
        load_config("tiny", ["word_count.min_length=0"])


def test_a_new_stage_module_takes_its_place_in_the_dag_and_its_cycle(example_stage):
    assert registry.order().index("word_count") > registry.order().index("crawl")
    assert "word_count" in registry.cycle("yearly") and "word_count" in registry.downstream("crawl")
    assert "word_count" not in registry.downstream("preprocess")


def test_a_new_stage_module_shows_in_factory_status(example_stage, tmp_path):
    from flows.cli import app

    result = CliRunner().invoke(app, ["status", "--workdir", str(tmp_path / "w")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "word_count" in line)
    assert "waiting for crawl" in row


def test_a_new_stage_module_gets_a_flow_and_a_deployment(example_stage):
    flows = importlib.reload(importlib.import_module("flows.stages"))
    assert flows.word_count.name == "stage-word_count"
    schema = flows.word_count.parameters.model_dump()
    assert {"preset", "workdir", "word_count", "force", "with_downstream"} <= set(schema["properties"])
    assert "min_length" in json.dumps(schema["definitions"])
    text = render()
    assert "- name: rerun-word_count\n    entrypoint: flows/stages.py:word_count" in text


def test_a_new_stage_runs_under_prefect_on_its_flow(example_stage, tmp_path, prefect_server):
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"id": str(i), "url": f"https://ex.org/{i}",
                                                               "text": "a bb ccc dddd"}) for i in range(3)) + "\n")
    flows = importlib.reload(importlib.import_module("flows.stages"))
    from tasks.core.config import load_config as load

    preset = tmp_path / "p.yaml"
    preset.write_text(f"crawl:\n  sources: ['{tmp_path}/docs.jsonl']\n  workers: 1\n")
    built = flows.word_count(preset=str(preset), workdir=str(tmp_path / "w"),
                             word_count=load(str(preset)).word_count.model_copy(update={"min_length": 3}))
    assert set(built) == {"crawl", "word_count"}
    from pathlib import Path

    assert (Path(built["word_count"]) / "words.json").read_text() == "6"  # ccc and dddd, three times


def test_the_committed_prefect_yaml_is_what_the_registry_makes():
    assert (ROOT / "prefect.yaml").read_text() == render(), "run `factory deployments --write`"


def test_every_stage_deployment_has_its_own_name_and_the_cycles_sort_first():
    import yaml

    names = [d["name"] for d in yaml.safe_load(render())["deployments"]]
    assert len(names) == len(set(names)) == len(registry.order()) + 4  # + the scaling sweep
    assert sorted(names)[:3] == ["cycle-all", "cycle-weekly", "cycle-yearly"]  # the UI lists deployments by name


def test_factory_status_shows_what_a_complete_artifact_warns_about(tmp_path):
    """A crawl that lost whole files is complete but says so, in `factory status` and in a run's summary."""
    from flows.cli import app
    from tasks.core.artifacts import ArtifactStore

    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "1", "url": "https://ex.org/1", "text": "hello"}) + "\n")
    sources = [f"crawl.sources=['{docs}']"]
    key = registry.spec("crawl").key(load_config("tiny", sources), {}, tmp_path / "w")
    lost = "1 of 2 source files quarantined whole: https://ex.org/gone.warc.gz (HTTP 404)"
    ArtifactStore(tmp_path / "w" / "artifacts").commit("crawl", key, {
        "counts": {"documents": 1}, "info": {"warnings": [lost]}, "timings": {"seconds": 1.0}})
    args = ["status", "--workdir", str(tmp_path / "w"), "--set", sources[0]]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    crawl_row = result.output.split("│ crawl ")[1].split("│ preprocess ")[0]  # the cell wraps over a few lines
    assert "documents=1" in crawl_row and "warning: 1 of 2 source files" in crawl_row and "(HTTP" in crawl_row


def test_a_stage_kept_outside_the_repository_is_keyed_on_its_own_code(example_stage, tmp_path):
    from tasks.core.code import code_hash, module_files

    files = module_files("example_stage")
    assert "example_stage" in files and "data.tokens.documents" in files  # its own code and the library it calls
    before = code_hash("example_stage")
    with open(tmp_path / "example_stage.py", "a") as f:
        f.write("\n# counted differently now\n")
    code_hash.cache_clear()
    module_files.cache_clear()
    assert code_hash("example_stage") != before


def test_a_form_that_sets_one_nested_field_keeps_the_presets_other_values():
    from data.cleaning.config import PreprocessConfig
    from flows.stages import settings

    given = PreprocessConfig.model_validate({"gopher_quality": {"min_doc_words": 7}})
    tiny = load_config("tiny").preprocess
    made = settings("tiny", preprocess=given).preprocess
    assert made.gopher_quality.min_doc_words == 7
    assert made.gopher_quality.min_avg_word_length == tiny.gopher_quality.min_avg_word_length
    assert made.model_dump(exclude={"gopher_quality"}) == tiny.model_dump(exclude={"gopher_quality"})
    assert made.gopher_quality.model_dump(exclude={"min_doc_words"}) == \
        tiny.gopher_quality.model_dump(exclude={"min_doc_words"})
