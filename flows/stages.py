"""One Prefect flow per stage, made from the stage registry: each takes that stage's config sections as typed
parameters, so the UI shows a form of exactly the settings that stage reads. Change a value, run, and the stage (then
what follows) rebuilds.

A section left empty comes from the preset; `force` rebuilds even when nothing changed; `with_downstream`
(default on) also brings every later stage up to date, reusing what did not change. A stage added to tasks/ gets its
flow here (`flows/stages.py:<stage>`) with no other edit.
"""

from __future__ import annotations

import inspect

from prefect import flow

from flows.cycles import run_stages
from tasks.core import registry
from tasks.core.config import load_config


def settings(preset: str, **sections):
    """The preset's config with the fields a form (or `-p`) set laid over it, at any depth: setting
    `preprocess.gopher_quality.min_doc_words` changes only that field, the rest keeps the preset's values."""
    config = load_config(preset)
    update = {}
    for section, given in sections.items():
        if given is not None:
            current = getattr(config, section)
            merged = _merge(current.model_dump(), given.model_dump(exclude_unset=True))
            update[section] = current.model_validate(merged)
    return config.model_copy(update=update)


def _merge(base: dict, given: dict) -> dict:
    out = dict(base)
    for key, value in given.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def rerun(name: str, preset: str, workdir: str, force: bool, with_downstream: bool, **sections) -> dict[str, str]:
    """Run stage `name` (and its missing inputs) with the given settings on top of the preset's sections (see
    `settings`); with_downstream also brings every later stage up to date."""
    config = settings(preset, **sections)
    stages = [name, *registry.downstream(name)] if with_downstream else [name]
    return run_stages("stage", stages, preset, workdir, [], [name] if force else [], config)  # one MLflow experiment


def stage_flow(name: str):
    """The flow `stage-<name>`: preset, workdir, one optional parameter per config section, force, with_downstream."""
    spec = registry.spec(name)
    P = inspect.Parameter
    params = [
        P("preset", P.POSITIONAL_OR_KEYWORD, default="tiny", annotation=str),
        P("workdir", P.POSITIONAL_OR_KEYWORD, default="./work", annotation=str),
        *(P(section, P.POSITIONAL_OR_KEYWORD, default=None, annotation=model | None)
          for section, model in spec.config.items()),
        P("force", P.POSITIONAL_OR_KEYWORD, default=False, annotation=bool),
        P("with_downstream", P.POSITIONAL_OR_KEYWORD, default=True, annotation=bool),
    ]

    def run(*args, **kwargs) -> dict[str, str]:
        bound = run.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        preset, workdir = given.pop("preset"), given.pop("workdir")
        force, with_downstream = given.pop("force"), given.pop("with_downstream")
        return rerun(name, preset, workdir, force, with_downstream, **given)

    run.__name__ = run.__qualname__ = name
    run.__module__ = __name__
    run.__signature__ = inspect.Signature(params, return_annotation=dict[str, str])
    run.__annotations__ = {p.name: p.annotation for p in params} | {"return": dict[str, str]}
    run.__doc__ = spec.description or f"Rerun the {name} stage."
    return flow(name=f"stage-{name}", description=spec.description or None)(run)


# `flows/stages.py:<stage>` is each deployment's entrypoint
for _name in registry.order():
    globals()[_name] = stage_flow(_name)
