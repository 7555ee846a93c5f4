"""Typed pipeline configuration, loaded from configs/<preset>.yaml plus `--set section.key=VALUE` overrides.

FactoryConfig has one field per config section the stage modules declare (tasks.core.registry); a stage's cache key
hashes its own sections only, so changing `pretrain.steps` reruns pretraining and what follows, never the crawl.
A bad preset, key or value is a ConfigError whose one line names it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class Section(BaseModel):
    """A config section: unknown keys are errors, so a misspelt setting never passes silently."""

    model_config = ConfigDict(extra="forbid")


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
    """'section.key=VALUE' -> (['section', 'key'], VALUE parsed as YAML). Past a setting that is a mapping
    (`deploy.tolerance`, `deploy.min_score`) the rest of the path is one key, dots and all: a gate task is named
    `redteam.direct.resisted`."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"--set {text!r}: expected section.key=VALUE")
    try:
        return _mapping_keys(path.strip().split(".")), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None


def _field(model: Any, key: str):
    """The pydantic field `key` of `model`, or None when `model` is not a config class or has no such field."""
    return model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None


def _mapping_keys(keys: list[str]) -> list[str]:
    """`keys` with everything after the first mapping-typed setting on the path joined into that mapping's key."""
    model: Any = factory_config_class()
    for i, key in enumerate(keys[:-1]):
        if (field := _field(model, key)) is None:
            return keys
        if get_origin(field.annotation) is dict:
            return [*keys[:i + 1], ".".join(keys[i + 1:])]
        model = field.annotation
    return keys


def apply_override(data: dict, text: str) -> None:
    """Set one override in the raw config `data`. A key of a mapping setting the preset leaves out is added to the
    setting's default, not put in its place: `--set deploy.tolerance.refusal=0.1` keeps the `default` tolerance."""
    keys, value = parse_override(text)
    node, model = data, factory_config_class()
    for key in keys[:-1]:
        field = _field(model, key)
        if key not in node and field is not None and get_origin(field.annotation) is dict:
            node[key] = dict(field.get_default(call_default_factory=True) or {})
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text!r}: {key!r} is not a section")
        model = field.annotation if field is not None else None
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
