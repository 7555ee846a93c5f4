"""The search tool (model/tools.py's Tool protocol) over a SearchIndex, and how its results read to the model. A call
it refuses raises ValueError, which the toolbox hands the model as an "error:" result.

The tiny model reads a few hundred tokens at most and the toolbox cuts a result at ToolLimits.max_result_chars, so a
result is compact: the best passage first and whole, each headed by its number, title and url."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from data.search.index import Passage, SearchIndex


def format_results(passages: list[Passage]) -> str:
    """'[1] json (https://.../json.html)\\n<passage>\\n\\n[2] ...': one block per passage, best first."""
    return "\n\n".join(f"[{n}] {p.title} ({p.url})\n{p.text}" for n, p in enumerate(passages, start=1))


class SearchTool:
    """Looks a query up in the index and returns its best passages."""

    name = "search"
    description = "Search the documents for a few keywords; returns the best passages with their source. " \
                  "Example: json dumps indent"
    parameters = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}

    def __init__(self, index: SearchIndex, k: int = 2):
        if k < 1:
            raise ValueError(f"the search tool returns k >= 1 passages, got k={k}")
        self.index = index
        self.k = k

    def run(self, arguments: Mapping[str, Any]) -> str:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ValueError('search needs {"query": "<keywords>"}')
        passages = self.index.search(query, self.k)
        return format_results(passages) if passages else f"no results for {query.strip()!r}"
