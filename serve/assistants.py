"""Assistants (custom GPTs): the served model under another model id, with its own instructions, tools and files.

`factory serve --assistant FILE` (repeatable) reads one assistant from a YAML or JSON file:

    id: docs-helper                     # the model id clients ask for (letters, digits, . _ -; up to 64)
    instructions: |                     # its system message (a client's own system message follows it)
      You answer questions about our documentation. Search it before you answer.
    tools: [calculator, search]         # built-in tools it may call; default: calculator, and search with files
    files: docs/                        # a folder of its own files (.txt .md .html .jsonl), relative to this file;
                                        # its search tool searches them (indexed once, when the server starts)
    model: assistant@production         # optional: the model it runs on, which must be the one the server serves

Every assistant shares the one loaded model (one engine, one batch); GET /v1/models lists them beside it. Without
`files`, `search` searches the served model's own index, if it has one. A file with a mistake stops the server
before it loads anything, with a message naming the file and the field."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.tools import TOOL_NAMES, Tool


class AssistantError(ValueError):
    """An assistant file that cannot be served; the message names the file."""


class AssistantFile(BaseModel):
    """What an assistant file holds (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="The model id clients ask for.")
    instructions: str = Field(min_length=1, max_length=20_000, description="Its system message.")
    tools: list[Literal["calculator", "search"]] | None = Field(
        None, description="Built-in tools it may call; default: calculator, and search when it has files.")
    files: Path | None = Field(None, description="A folder of its own files for its search tool.")
    model: str | None = Field(None, description="The model it runs on: the served one (the default).")

    @model_validator(mode="after")
    def _files_need_search(self) -> AssistantFile:
        if self.tools is not None and len(set(self.tools)) < len(self.tools):
            raise ValueError(f"tools: {self.tools} names a tool twice")
        if self.files is not None and self.tools is not None and "search" not in self.tools:
            raise ValueError("files: only the search tool reads them; add 'search' to tools (or drop files)")
        return self

    @property
    def tool_names(self) -> list[str]:
        if self.tools is not None:
            return list(self.tools)
        return ["calculator", "search"] if self.files is not None else ["calculator"]


@dataclass(frozen=True)
class Assistant:
    id: str
    instructions: str
    tools: tuple[str, ...]  # in TOOL_NAMES
    search: Tool | None  # over its own files; None: the served model's index, if any
    source: Path  # the file it came from
    files: Path | None = None  # the folder of its own files
    documents: int = 0  # in its files' index

    def builtin(self, served: dict[str, Tool]) -> list[Tool]:
        """Its tools: its own search when it has files, the others as the served model has them."""
        tools = [self.search if name == "search" and self.search is not None else served.get(name)
                 for name in self.tools]
        return [t for t in tools if t is not None]


def read_file(path: Path) -> AssistantFile:
    """The assistant in `path` (YAML, which JSON also is), checked; an AssistantError names the file and field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AssistantError(f"assistant file {path}: cannot read it: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AssistantError(f"assistant file {path}: not YAML or JSON: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise AssistantError(f"assistant file {path}: must be a mapping with id and instructions, "
                             f"got {type(data).__name__}")
    try:
        return AssistantFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise AssistantError(f"assistant file {path}: {problems}") from None


def _problem(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown field (fields: {', '.join(AssistantFile.model_fields)})"
    elif error["type"] == "literal_error":
        message = f"{json.dumps(error.get('input'))} is not a tool here (tools: {', '.join(TOOL_NAMES)})"
    return f"{where}: {message}" if where else message


def load_assistants(paths: Iterable[Path], served: str, served_names: set[str],
                    search_files: Callable[[Path], tuple[Tool, int]],
                    model_has_index: bool | None = None) -> dict[str, Assistant]:
    """The assistants of `paths` by id, each file checked and its files indexed. `served` is the model reference the
    server serves (assistant@production), `served_names` every id that names it; `search_files(folder)` gives a
    search tool over a folder of files and how many documents it holds (the caller's: serve/ does not index);
    `model_has_index` False refuses an assistant whose search would have nothing to search (None: not known)."""
    out: dict[str, Assistant] = {}
    for path in paths:
        path = Path(path)
        spec = read_file(path)
        where = f"assistant file {path}"
        if spec.id in served_names:
            raise AssistantError(f"{where}: id {spec.id!r} is the served model's own name; give it another")
        if spec.id in out:
            raise AssistantError(f"{where}: id {spec.id!r} is also the id of {out[spec.id].source}")
        if spec.model is not None and spec.model not in served_names | {served}:
            raise AssistantError(f"{where}: model {spec.model!r} is not the model this server serves ({served}); "
                                 "serve it with its own `factory serve --model`")
        search, documents, folder = None, 0, None
        if spec.files is not None:
            folder = spec.files if spec.files.is_absolute() else path.parent / spec.files
            try:
                search, documents = search_files(folder)
            except (OSError, ValueError) as exc:
                raise AssistantError(f"{where}: files {str(spec.files)!r}: {exc}") from None
        elif "search" in spec.tool_names and model_has_index is False:
            raise AssistantError(f"{where}: tools: search has nothing to search: give the assistant files, or "
                                 "serve a model with a search index")
        out[spec.id] = Assistant(spec.id, spec.instructions, tuple(spec.tool_names), search, path, folder,
                                 documents)
    return out
