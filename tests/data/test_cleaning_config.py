"""The preprocess config, defined once: typed step options that fail where they are read, the presets' YAML, the
fields that only say how to run, and no import cycle among the cleaning modules."""

import ast
import pickle
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from data.cleaning.config import (
    C4Options,
    GopherQualityOptions,
    LanguageOptions,
    MinHashConfig,
    PIIOptions,
    PoisonConfig,
    PreprocessConfig,
    runtime_fields,
)
from data.cleaning.filters import OPTION_FILTERS, build_filters
from data.cleaning.minhash import MinHasher
from data.cleaning.pii import PII, build_pii
from data.cleaning.poison import PoisonScanner

ROOT = Path(__file__).resolve().parents[2]
CLEANING = ROOT / "data" / "cleaning"


class Factory(BaseModel):
    """Stands for the factory config, which holds PreprocessConfig as its `preprocess` section."""

    preprocess: PreprocessConfig = PreprocessConfig()


def error_locs(err: ValidationError) -> list[str]:
    return [".".join(map(str, e["loc"])) for e in err.errors()]


def test_the_field_names_are_the_stage_sections():
    assert list(PreprocessConfig.model_fields) == [
        "url", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "min_words", "max_chars",
        "exact_dedup", "minhash", "poison", "pii", "val_fraction", "seed", "workers", "dask_address"]


def test_each_step_is_built_with_the_defaults_the_config_holds():
    cfg = PreprocessConfig()
    for key, cls in OPTION_FILTERS.items():
        assert cls().options == getattr(cfg, key), key
    assert PII().options == cfg.pii == PIIOptions()
    assert [f.name for f in build_filters(cfg)] == list(OPTION_FILTERS)  # min_words / max_chars: 0, off
    assert (cfg.minhash.ngram, cfg.minhash.buckets, cfg.minhash.hashes_per_bucket) == (5, 14, 8)  # FineWeb's
    assert MinHasher(cfg.minhash).params is cfg.minhash and PoisonScanner(cfg.poison).params is cfg.poison


@pytest.mark.parametrize("value, expected", [
    (True, C4Options()), ({}, C4Options()), (False, None), (None, None),
    ({"curly_bracket": False}, C4Options(curly_bracket=False)),
])
def test_a_step_is_true_false_or_a_dict_of_options(value, expected):
    assert PreprocessConfig.model_validate({"c4": value}).c4 == expected


@pytest.mark.parametrize("preprocess, where", [
    ({"gopher_quality": {"min_doc_words": "fifty"}}, "preprocess.gopher_quality.min_doc_words"),
    ({"gopher_quality": {"min_doc_wordz": 50}}, "preprocess.gopher_quality.min_doc_wordz"),
    ({"c4": "yes"}, "preprocess.c4"),
    ({"language": {"languages": ["english"]}}, "preprocess.language.languages"),
    ({"pii": {"phone_numbers": True}}, "preprocess.pii.phone_numbers"),
    ({"minhash": {"buckets": 0}}, "preprocess.minhash.buckets"),
    ({"poison": {"triggers": {"bad": "(unclosed"}}}, "preprocess.poison.triggers"),
    ({"min_words": True}, "preprocess.min_words"),
    ({"val_fraction": 1.5}, "preprocess.val_fraction"),
    ({"extract": {"favor": "speed"}}, "preprocess.extract.favor"),
    ({"extract": {"engine": "lynx"}}, "preprocess.extract.engine"),
    ({"gopher_qualty": True}, "preprocess.gopher_qualty"),
])
def test_a_bad_option_fails_at_validation_naming_its_field(preprocess, where):
    with pytest.raises(ValidationError) as err:
        Factory.model_validate({"preprocess": preprocess})
    assert error_locs(err.value) == [where]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
def test_every_preset_validates(preset):
    section = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text()).get("preprocess") or {}
    cfg = PreprocessConfig.model_validate(section)
    dumped = cfg.model_dump(mode="json")
    for key, value in section.items():  # what the preset sets lands in the typed config
        if isinstance(value, dict):
            assert {option: dumped[key][option] for option in value} == value, key
        elif value is True:
            assert dumped[key] == PreprocessConfig().model_dump(mode="json")[key], key
        else:
            assert dumped[key] == (None if value is False else value), key


def test_the_tiny_preset_changes_what_it_says_and_keeps_fineweb_for_the_rest():
    section = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())["preprocess"]
    cfg = PreprocessConfig.model_validate(section)
    assert cfg.language == LanguageOptions(min_score=0.3)
    assert cfg.gopher_quality == GopherQualityOptions(min_alpha_words_ratio=0.4)
    assert cfg.gopher_repetition.dup_n_grams[0] == (5, 0.25) and cfg.gopher_repetition.top_n_grams[0] == (2, 0.2)
    assert cfg.c4 == C4Options(curly_bracket=False) and cfg.extract.favor == "recall"


def test_the_dumped_config_reads_back_the_same_and_pickles():
    cfg = PreprocessConfig.model_validate({"c4": False, "url": {"block_domains": ["spam.example"]},
                                           "gopher_repetition": {"dup_n_grams": [[5, 0.2]]}, "min_words": 20,
                                           "poison": {"drop": True}, "minhash": {"enabled": False}})
    dumped = cfg.model_dump(mode="json")
    assert dumped["c4"] is None and dumped["url"]["block_domains"] == ["spam.example"]
    assert PreprocessConfig.model_validate(dumped) == cfg
    assert PreprocessConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # the shard jobs carry it to other processes


def test_build_pii_and_build_filters_take_the_configs_values():
    cfg = PreprocessConfig.model_validate({"pii": {"ips": False}, "language": False, "max_chars": 100})
    assert build_pii(cfg.pii).ips is False
    assert [f.name for f in build_filters(cfg)] == ["url", "gopher_repetition", "gopher_quality", "c4", "fineweb",
                                                    "max_length"]


def test_only_workers_and_dask_address_say_how_to_run():
    assert runtime_fields(PreprocessConfig) == runtime_fields(PreprocessConfig()) == {"workers", "dask_address"}
    assert runtime_fields(MinHashConfig) == runtime_fields(PoisonConfig) == set()
    assert PreprocessConfig.model_json_schema()["properties"]["workers"]["runtime"] is True


def _cleaning_imports(path: Path) -> set[str]:
    """data.cleaning modules a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "data.cleaning":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("data.cleaning."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("data.cleaning.")}
    return found


def test_the_cleaning_modules_import_each_other_without_a_cycle():
    graph = {p.stem: _cleaning_imports(p) - {p.stem} for p in CLEANING.glob("*.py")}
    assert graph["filters"] >= {"base"} and "pii" not in graph["filters"] and "filters" not in graph["pii"]
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
