"""Tools the assistant can call while it answers, and the protocol: the model writes a call as JSON between
<|tool_call_start|> and <|tool_call_end|> ({"name": ..., "arguments": {...}}), the engine runs it and puts the result
between <|tool_result_start|> and <|tool_result_end|>, and the answer goes on. Torch-free: the label generator
writes its training conversations with these same tools, so what the model sees in training is what it gets.

A tool never raises into the engine: what goes wrong (an unknown tool, a malformed call, a refused expression, a
timeout) becomes the result text the model reads, starting with "error:"."""
from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class ToolError(ValueError):
    """A call the tool refuses; the message is what the model reads after "error: ". A tool may raise a plain
    ValueError to the same effect (the search tool in data/search does, and so needs nothing from here)."""


class Tool(Protocol):
    """Anything with a name, a one-line description, its arguments as a JSON schema, and `run` returning text."""

    name: str
    description: str
    parameters: dict[str, Any]

    def run(self, arguments: Mapping[str, Any]) -> str: ...


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    @property
    def text(self) -> str:
        """The canonical text of the call, as the model writes it and the training data holds it."""
        return format_call(self.name, self.arguments)


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    return json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False)


def parse_call(text: str) -> ToolCall:
    """The call in `text` ({"name": str, "arguments": object, or a JSON string of one as OpenAI sends it})."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ToolError(f"the call is not JSON: {text[:80]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ToolError('a call is {"name": "<tool>", "arguments": {...}}')
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise ToolError(f"the arguments are not JSON: {arguments[:80]!r}") from None
    if not isinstance(arguments, dict):
        raise ToolError("'arguments' must be an object")
    return ToolCall(data["name"], arguments)


# --------------------------------------------------------------------------------------------------- calculator

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)|(?P<op>\*\*|[-+*/^()×÷]))")


class Calculator:
    """Arithmetic on numbers with + - * / ( ) and powers (** or ^), by a small recursive-descent parser: nothing is
    evaluated as Python, so names, attributes and calls are refused before anything runs. Bounds keep every call
    cheap: the length of the expression, its nesting, the size of exponents and of every intermediate result."""

    name = "calculator"
    description = "Exact arithmetic: numbers with + - * / ( ) and ^ (power). Example: 4821 * 37"
    parameters = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}

    MAX_CHARS = 200
    MAX_DEPTH = 30
    MAX_EXPONENT = 1000
    MAX_DIGITS = 100  # no intermediate result beyond 10**100

    def run(self, arguments: Mapping[str, Any]) -> str:
        expression = arguments.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise ToolError("calculator needs {\"expression\": \"<arithmetic>\"}")
        return format_number(self.evaluate(expression))

    def evaluate(self, expression: str) -> int | float:
        # the parse state lives on a fresh instance: one calculator serves concurrent calls (the server's threads)
        return type(self)()._evaluate(expression)

    def _evaluate(self, expression: str) -> int | float:
        if len(expression) > self.MAX_CHARS:
            raise ToolError(f"the expression is over {self.MAX_CHARS} characters")
        self._tokens = self._tokenize(expression)
        self._pos = 0
        value = self._sum(0)
        if self._pos != len(self._tokens):
            raise ToolError(f"unexpected {self._tokens[self._pos]!r} in {expression!r}")
        return value

    def _tokenize(self, expression: str) -> list[str | int | float]:
        tokens: list[str | int | float] = []
        pos, text = 0, expression.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                bad = re.match(r"\s*([A-Za-z_][\w.]*|\S)", text[pos:]).group(1)
                raise ToolError(f"calculator only takes numbers, + - * / ^ and parentheses; {bad!r} is not one")
            pos = m.end()
            if m.group("num") is not None:
                digits = m.group("num").replace(",", "")
                tokens.append(float(digits) if "." in digits else int(digits))
            else:
                tokens.append({"×": "*", "÷": "/", "^": "**"}.get(m.group("op"), m.group("op")))
        if not tokens:
            raise ToolError("the expression is empty")
        return tokens

    def _peek(self) -> str | int | float | None:
        return self._tokens[self._pos] if self._pos < len(self._tokens) else None

    def _take(self) -> str | int | float:
        token = self._peek()
        if token is None:
            raise ToolError("the expression ends too early")
        self._pos += 1
        return token

    def _sum(self, depth: int) -> int | float:
        value = self._product(depth)
        while self._peek() in ("+", "-"):
            op = self._take()
            right = self._product(depth)
            value = self._bounded(value + right if op == "+" else value - right)
        return value

    def _product(self, depth: int) -> int | float:
        value = self._unary(depth)
        while self._peek() in ("*", "/"):
            op = self._take()
            right = self._unary(depth)
            if op == "*":
                value = self._bounded(value * right)
            elif right == 0:
                raise ToolError("division by zero")
            elif isinstance(value, int) and isinstance(right, int) and value % right == 0:
                value = value // right  # exact: 178377 / 37 is 4821, not 4821.0
            else:
                value = self._bounded(value / right)
        return value

    def _unary(self, depth: int) -> int | float:
        if self._peek() in ("-", "+"):
            sign = self._take()
            value = self._unary(self._deeper(depth))
            return -value if sign == "-" else value
        return self._power(depth)

    def _power(self, depth: int) -> int | float:
        base = self._atom(depth)
        if self._peek() == "**":
            self._take()
            exponent = self._unary(self._deeper(depth))  # right-associative: 2^3^2 = 2^9
            if abs(exponent) > self.MAX_EXPONENT:
                raise ToolError(f"exponent {exponent} is too large (at most {self.MAX_EXPONENT})")
            if base != 0 and exponent * math.log10(max(abs(base), 1e-300)) > self.MAX_DIGITS:
                raise ToolError(f"{base} ^ {exponent} is too large (results stay below 10^{self.MAX_DIGITS})")
            if base == 0 and exponent < 0:
                raise ToolError("division by zero")
            if isinstance(exponent, int) and exponent < 0 and isinstance(base, int):
                return self._bounded(1 / base ** -exponent)
            return self._bounded(base ** exponent)
        return base

    def _atom(self, depth: int) -> int | float:
        token = self._take()
        if token == "(":
            value = self._sum(self._deeper(depth))
            if self._peek() != ")":
                raise ToolError("a '(' is not closed")
            self._take()
            return value
        if isinstance(token, (int, float)):
            return self._bounded(token)
        raise ToolError(f"expected a number or '(', got {token!r}")

    def _deeper(self, depth: int) -> int:
        if depth + 1 > self.MAX_DEPTH:
            raise ToolError(f"the expression nests deeper than {self.MAX_DEPTH}")
        return depth + 1

    def _bounded(self, value: Any) -> int | float:
        if isinstance(value, complex):
            raise ToolError("the result is not a real number")
        if isinstance(value, float) and not math.isfinite(value) or abs(value) >= 10 ** self.MAX_DIGITS:
            raise ToolError(f"a result is too large (results stay below 10^{self.MAX_DIGITS})")
        return value


def format_number(value: int | float) -> str:
    """An int as digits; a float with up to 10 significant digits, without a trailing '.0' when it is whole."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


# --------------------------------------------------------------------------------------------------- the toolbox


class ToolLimits(BaseModel):
    """Bounds on tool use within one answer."""

    model_config = ConfigDict(extra="forbid")
    max_calls: int = Field(3, ge=0, description="Tool calls per answer; a call past this gets an error result.")
    timeout_s: float = Field(5.0, gt=0, description="Seconds one call may take before it gets an error result.")
    max_result_chars: int = Field(400, ge=16, description="A longer result is cut here (marked with '...').")


@dataclass
class Toolbox:
    """The tools one answer may call, by name, and the limits on calling them."""

    tools: dict[str, Tool] = field(default_factory=dict)
    limits: ToolLimits = field(default_factory=ToolLimits)

    @classmethod
    def of(cls, tools: Iterable[Tool], limits: ToolLimits | None = None) -> Toolbox:
        return cls({t.name: t for t in tools}, limits or ToolLimits())

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    @staticmethod
    def parse(text: str) -> ToolCall | None:
        """The call in `text`, or None if it is malformed."""
        try:
            return parse_call(text)
        except ToolError:
            return None

    def call(self, text: str) -> tuple[ToolCall | None, str]:
        """(the parsed call or None, the result text the model reads): a tool's answer, or "error: ..."."""
        try:
            call = parse_call(text)
        except ToolError as exc:
            return None, f"error: {exc}"
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return call, f"error: no tool named {call.name!r} (tools: {known})"
        return call, self._cut(self._run(tool, call.arguments))

    def _run(self, tool: Tool, arguments: dict) -> str:
        box: dict[str, str] = {}

        def target() -> None:
            try:
                box["result"] = tool.run(arguments)
            except ValueError as exc:  # ToolError included: a refusal the tool explains
                box["result"] = f"error: {exc}"
            except Exception as exc:  # a failing tool must not end the answer: the model reads what went wrong
                box["result"] = f"error: {tool.name} failed: {type(exc).__name__}: {exc}"

        # a daemon thread, so a call that never returns is abandoned rather than waited for
        thread = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
        thread.start()
        thread.join(self.limits.timeout_s)
        if thread.is_alive():
            return f"error: {tool.name} took longer than {self.limits.timeout_s:g} s"
        return box["result"]

    def _cut(self, result: str) -> str:
        limit = self.limits.max_result_chars
        return result if len(result) <= limit else result[: limit - 3].rstrip() + "..."

    def over_limit(self, calls_made: int) -> str | None:
        """The error result for call number `calls_made + 1`, if it is over the limit."""
        if calls_made >= self.limits.max_calls:
            return f"error: no more tool calls in this answer (at most {self.limits.max_calls})"
        return None


TOOL_NAMES = ("calculator", "search")
SEARCH_K = 1  # passages per search: one ~50-word passage is ~100 tokens of a 256-token context


class ToolsConfig(BaseModel):
    """Which tools the assistant may call where it runs (evals, `factory chat`, `factory serve`), and their limits."""

    model_config = ConfigDict(extra="forbid")
    enabled: list[str] = Field(list(TOOL_NAMES), description="Tools on offer: calculator, search.")
    limits: ToolLimits = Field(default_factory=ToolLimits)
    search_k: int = Field(SEARCH_K, ge=1, le=20, description="Passages the search tool returns (the label generator "
                          "writes its search conversations with the default).")

    def toolbox(self, index: str | Path | None = None) -> Toolbox:
        return make_toolbox(self.enabled, index, self.limits, self.search_k)


def make_toolbox(names: Iterable[str], index: Any = None, limits: ToolLimits | None = None,
                 search_k: int = 2) -> Toolbox:
    """The tools called `names`. `index` (a folder holding a search index, or a loaded `data.search.SearchIndex`) is
    what the search tool searches; without one, search is left out (a warning is the caller's to give)."""
    tools: list[Tool] = []
    for name in names:
        if name == "calculator":
            tools.append(Calculator())
        elif name == "search":
            if index is None:
                continue
            from data.search import SearchIndex, SearchTool

            loaded = index if isinstance(index, SearchIndex) else SearchIndex.load(index)
            tools.append(SearchTool(loaded, k=search_k))
        else:
            raise ValueError(f"unknown tool {name!r}; known: {', '.join(TOOL_NAMES)}")
    return Toolbox.of(tools, limits)
