"""The preprocess stage's config, defined once: the pipeline (data/cleaning/pipeline.py) takes this object, and the
factory config (tasks/core/config.py) holds it as its `preprocess` section.

Each filter step is typed by its own options model (data/cleaning/filters.py, pii.py), whose fields are the step's
constructor options with FineWeb's defaults, so `--set preprocess.gopher_quality.min_doc_words=fifty` or a
misspelt option fails when the config is validated, naming `preprocess.gopher_quality.min_doc_words`. A step is
written as true (its defaults), false (off) or a dict of options; after validation it is its options model, or
None when off.

Fields that only say how to run (processes, a cluster) carry `json_schema_extra={"runtime": True}`
(`RUNTIME`): they never change what the stage makes, so cache keys leave them out (`runtime_fields`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from data.cleaning.extract import ExtractOptions
from data.cleaning.filters import (
    C4Options,
    C4Step,
    FineWebOptions,
    FineWebStep,
    GopherQualityOptions,
    GopherQualityStep,
    GopherRepetitionOptions,
    GopherRepetitionStep,
    LanguageOptions,
    LanguageStep,
    Limit,
    URLOptions,
    URLStep,
)
from data.cleaning.minhash import MinHashConfig
from data.cleaning.pii import PIIOptions, PIIStep
from data.cleaning.poison import PoisonConfig
from model.config import RUNTIME  # the marker of a field that says how to run, not what to make

__all__ = [
    "RUNTIME", "C4Options", "ExtractOptions", "FineWebOptions", "GopherQualityOptions", "GopherRepetitionOptions",
    "LanguageOptions", "MinHashConfig", "PIIOptions", "PoisonConfig", "PreprocessConfig", "URLOptions",
    "runtime_fields",
]


_STEP = "true: FineWeb's defaults; false: off; or a dict of the step's options (see data/cleaning/filters.py)."


def runtime_fields(model: type[BaseModel] | BaseModel) -> frozenset[str]:
    """Names of the fields of `model` (a class or an instance) marked RUNTIME: how to run, not what to make."""
    fields = (model if isinstance(model, type) else type(model)).model_fields
    return frozenset(name for name, f in fields.items()
                     if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("runtime") is True)


class PreprocessConfig(BaseModel):
    """The FineWeb recipe as composable steps; each step's options default to FineWeb's published values."""

    model_config = ConfigDict(extra="forbid")

    url: URLStep = Field(URLOptions(), description="URL block-list (domains, banned words). " + _STEP)
    extract: ExtractOptions = Field(ExtractOptions(), description="HTML -> text: {engine: resiliparse | "
                                    "trafilatura, and the engine's options} (data/cleaning/extract.py).")
    language: LanguageStep = Field(
        LanguageOptions(),
        description="Language ID (py3langid, inside its package): {languages, min_score, max_chars}. " + _STEP)
    gopher_repetition: GopherRepetitionStep = Field(GopherRepetitionOptions(), description=_STEP)
    gopher_quality: GopherQualityStep = Field(GopherQualityOptions(), description=_STEP)
    c4: C4Step = Field(C4Options(), description=_STEP)
    fineweb: FineWebStep = Field(FineWebOptions(), description=_STEP)
    min_words: Limit = Field(0, description="Extra: drop documents with fewer words (0: off).")
    max_chars: Limit = Field(0, description="Extra: drop documents longer than this (0: off).")
    exact_dedup: bool = Field(True, description="Drop documents whose normalised text an earlier one has.")
    minhash: MinHashConfig = MinHashConfig()
    poison: PoisonConfig = PoisonConfig()
    pii: PIIStep = Field(PIIOptions(),
                         description="Replace e-mail and public IP addresses: {emails, ips, ipv6}. " + _STEP)
    val_fraction: float = Field(0.05, ge=0, le=1, description="Share of documents in the validation split.")
    seed: int = Field(0, description="Seed of the train/val split.")
    workers: int = Field(0, ge=0, description="Processes filtering shards in parallel (0: all cores).",
                         json_schema_extra=RUNTIME)
    dask_address: str | None = Field(None, description="A Dask scheduler (tcp://host:8786): shards run there.",
                                     json_schema_extra=RUNTIME)
