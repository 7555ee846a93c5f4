"""What every cleaning step shares: the Filter interface, the pydantic base of a step's options, and the config type
of an optional step (true: defaults, false: off, or a dict of options).

A step's options model is the one place its defaults live: the step's constructor takes that model (or keyword
changes to its defaults), and the preprocess config (data/cleaning/config.py) holds the same model, so a mistyped
option fails when the config is validated, naming the field, not later inside a worker process.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict

from data.tokens.documents import Document


class Options(BaseModel):
    """A step's options: unknown keys are refused, so a misspelt option cannot be silently ignored."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def resolve(cls, options: Self | None = None, changes: dict[str, Any] | None = None) -> Self:
        """`options` (default: the defaults) with `changes` applied, validated as a whole."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(options).__name__}")
        if not changes:
            return options if options is not None else cls()
        return cls.model_validate({**(options.model_dump() if options is not None else {}), **changes})


class Filter:
    """One step over documents. reason(doc) is None to keep the document, else a short constant reason; apply(doc)
    returns the (possibly rewritten, never mutated) document or the reason it was dropped.

    A step with options names its model in `options_type`; Filter(options, **changes) validates them into
    self.options and also sets each option as an attribute, so the rules read `self.min_doc_words`. Steps without
    an options model define their own __init__.
    """

    name: ClassVar[str] = "filter"
    options_type: ClassVar[type[Options] | None] = None

    def __init__(self, options: Options | None = None, /, **changes: Any):
        if self.options_type is None:
            raise TypeError(f"{type(self).__name__} has no options model: it defines its own __init__")
        self.options = self.options_type.resolve(options, changes)
        vars(self).update(dict(self.options))

    def reason(self, doc: Document) -> str | None:
        raise NotImplementedError

    def apply(self, doc: Document) -> Document | str:
        why = self.reason(doc)
        return why if why else doc

    def __repr__(self) -> str:
        shown = dict(self.options) if getattr(self, "options", None) is not None else {
            k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


_ON_OFF = "true (the step's defaults), false (off) or a dict of the step's options"


def _on_off(value: Any) -> Any:
    # YAML and --set write a step as true / false / {options}: true means "the defaults", false and null "off".
    if value is True:
        return {}
    if value is False or value is None:
        return None
    if isinstance(value, dict | BaseModel):
        return value
    raise ValueError(f"expected {_ON_OFF}, got {value!r}")


def step(options: type[Options]) -> Any:
    """The config type of an optional step: `options`, or None when the step is off. It also accepts true (the
    defaults) and false (off), so `--set preprocess.c4=false` and `c4: {curly_bracket: false}` both validate."""
    return Annotated[options | None, BeforeValidator(_on_off, json_schema_input_type=bool | options | None)]
