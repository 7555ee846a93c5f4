"""Typed pipeline configuration, loaded from configs/<preset>.yaml plus `--set section.key=VALUE` overrides.

FactoryConfig has one field per config section the stage modules declare (tasks.core.registry); a stage's cache key
hashes its own sections only, so changing `pretrain.steps` reruns pretraining and what follows, never the crawl.
A bad preset, key or value is a ConfigError whose one line names it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from data.samples import BUILTIN_SAMPLE  # noqa: F401  (re-exported: the sample crawl and inbox)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

# How a stage runs (processes, a cluster) never changes what it makes: fields marked so are left out of its key.
RUNTIME = {"runtime": True}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(Section):
    """One crawl source with its weight in the mix."""

    source: str = Field(description="A path, glob, directory, URL, '.paths[.gz]' file, 'hf:...' or 'builtin:sample'.")
    weight: float = Field(1.0, gt=0, description="Relative share of documents drawn from this source.")


class WebCrawlConfig(Section):
    """A polite crawl of the user's own site (data/sources/crawler.py), added to the sources as a WARC."""

    seeds: list[str] = Field([], description="Start URLs; empty: no web crawl.")
    max_pages: int = Field(100, ge=1)
    delay_s: float = Field(1.0, ge=0, description="Seconds between requests to a host (robots.txt Crawl-delay wins).")
    same_domain: bool = Field(True, description="Follow links to the seeds' hosts only.")
    user_agent: str = "LLMFactoryBot/0.1"
    weight: float = Field(1.0, gt=0, description="Its weight when the sources are a weighted mix.")


class CrawlConfig(Section):
    sources: list[str | SourceSpec] = Field(
        default=[BUILTIN_SAMPLE],
        description=(
            "WARC/WET files, parquet/JSONL documents, local or any fsspec URL (s3:// needs s3fs, https://, "
            "memory://...), globs, directories, Common Crawl '.paths'/'.paths.gz' listings, "
            "'hf:NAME[@REVISION][:CONFIG][:SPLIT]' or 'builtin:sample'. Plain strings only: read one after "
            "another, each in full. With any {source, weight} item, each item (plain strings weigh 1) is a group "
            "of a weighted mix: documents are interleaved group by group with probability proportional to weight, "
            "deterministically from `seed`, until the first group runs out (datasets' interleave_datasets "
            "'first_exhausted') or `max_documents`; a single source is read in full."
        ),
    )
    seed: int = Field(0, description="Seed of the weighted mix's draws: the same seed gives the same order.")
    paths_base_url: str = Field(
        "https://data.commoncrawl.org", description="What the relative paths of a '.paths[.gz]' source are joined to."
    )
    max_files_per_source: int | None = Field(
        None, ge=1, description="Keep only the first N files of each glob, directory or paths file (None: all)."
    )
    max_page_bytes: int = Field(
        5_000_000, gt=0, description="Skip (count as filtered_too_large) payloads over this size; CC caps at 1 MiB."
    )
    sample_pages: int = Field(400, description="Pages rendered into the built-in sample WARC.")
    max_documents: int | None = Field(None, description="Stop after this many documents (None: read everything).")
    rows_per_shard: int = 50_000
    web: WebCrawlConfig = WebCrawlConfig()
    workers: int = Field(0, ge=0, json_schema_extra=RUNTIME,
          description="Processes reading source files in parallel (0: all cores).")
    dask_address: str | None = Field(None, json_schema_extra=RUNTIME,
          description="A Dask scheduler (tcp://host:8786): files are read there.")

    def specs(self) -> list[SourceSpec]:
        """Every source as a SourceSpec (plain strings weigh 1)."""
        return [SourceSpec(source=s) if isinstance(s, str) else s for s in self.sources]

    @property
    def weighted(self) -> bool:
        """Whether the sources form a weighted mix (any {source, weight} item) rather than a plain list."""
        return any(isinstance(s, SourceSpec) for s in self.sources)


class ModelSection(Section):
    depth: int = Field(4, description="The one knob: width, heads and token budget follow from it.")
    aspect_ratio: int = 32
    head_dim: int = 32
    kv_ratio: int = 1
    seq_len: int = 256


class TrainSection(Section):
    steps: int = 600
    batch_size: int = Field(8, description="Sequences per micro-batch on each process.")
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    schedule: Literal["cosine", "linear"] = "cosine"
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    ckpt_every: int = 200
    log_every: int = 10
    sample_every: int = 0
    keep_checkpoints: int = Field(2, description="Newest checkpoints kept in the artifact (also written on SIGTERM).")
    optimizer: Literal["adamw", "muon"] = Field("adamw", description="muon: Muon on the blocks' matrices, AdamW else.")
    muon_lr: float = 0.02
    bad_loss: Literal["stop", "skip"] = Field("stop", description="What a non-finite or spiking loss does.")
    spike_factor: float = Field(0.0, description="Loss above this x its running average is a spike; 0 disables.")
    max_bad_steps: int = Field(5, description="Consecutive skipped steps before 'skip' stops too.")
    prefetch: int = Field(2, description="Micro-batches the loader thread prepares ahead (0: no thread).")
    seed: int = 1337
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    compile: bool = False
    nproc: int = Field(1, ge=1, description="Processes (GPUs) on this node; >1 launches one per rank.")
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[0, 1, 2, 3] = Field(1, description="DeepSpeed ZeRO stage (strategy deepspeed).")
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"


class PretrainConfig(TrainSection):
    steps: int | Literal["auto"] = Field(600, description="'auto': the Chinchilla token budget (model.config).")
    grad_accum: int | Literal["auto"] = Field(1, description="'auto': the batch-size rule (model.config).")
    windows: Literal["random", "sequential"] = "random"


class FinetuneConfig(TrainSection):
    init_from: str | None = Field(
        None, description="A Hugging Face Llama-architecture model folder to finetune instead of our base model."
    )
    max_seq_len: int | None = Field(None, description="Cap the context of an imported model (memory).")
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 10
    eval_every: int = 100
    ckpt_every: int = 100


def factory_config_class() -> type[Section]:
    """FactoryConfig: `preset` plus one field per config section the registered stages declare."""
    from tasks.core.registry import sections, stage_modules

    return _factory_config(tuple(stage_modules()), tuple(sections().items()))


@cache
def _factory_config(modules: tuple[str, ...], sections: tuple[tuple[str, type], ...]) -> type[Section]:
    fields: dict[str, Any] = {"preset": (str, Field("tiny", description="The preset these settings started from."))}
    for name, model in sections:
        doc = " ".join((model.__doc__ or "").split())
        fields[name] = (model, Field(default_factory=model, description=doc or None))
    made = create_model("FactoryConfig", __base__=Section, __module__=__name__, **fields)
    made.__doc__ = "The whole pipeline's settings: one section per stage's config, as the stage modules declare them."
    return made


def __getattr__(name: str) -> Any:
    # `from tasks.core.config import FactoryConfig` works, though the class is made from the registry on first use
    if name == "FactoryConfig":
        return factory_config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ConfigError(ValueError):
    """A preset or an override that does not validate, in one line that names the input."""


def validate(data: dict, where: str) -> Section:
    try:
        return factory_config_class().model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
            + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" and not isinstance(e["input"], dict) else "")
            for e in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'section.key=VALUE' -> (['section', 'key'], VALUE parsed as YAML)."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=VALUE")
    try:
        return path.strip().split("."), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None


def apply_override(data: dict, text: str) -> None:
    keys, value = parse_override(text)
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text!r}: {key!r} is not a section")
    node[keys[-1]] = value


def with_overrides(config: Section, overrides: list[str] | tuple[str, ...] = ()) -> Section:
    data = config.model_dump(mode="json")
    for text in overrides:
        apply_override(data, text)
    return validate(data, "--set " + " ".join(overrides)) if overrides else config


def load_config(preset: str = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> Section:
    """Read configs/<preset>.yaml (or a YAML file path), apply overrides, validate."""
    path = Path(preset)
    if not path.suffix:
        path = CONFIG_DIR / f"{preset}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"preset {preset!r}: no file {path} (known presets: {known})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"preset {path}: not valid YAML: {' '.join(str(exc).split())}") from None
    data.setdefault("preset", path.stem)
    for text in overrides:
        apply_override(data, text)
    where = f"preset {preset}" + (f" with --set {' '.join(overrides)}" if overrides else "")
    return validate(data, where)
