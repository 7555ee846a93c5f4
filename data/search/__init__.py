"""Search over documents for the assistant's search tool: a BM25 index of passages (index.py), built from the crawl
by the `index` stage or from a user's own files (files.py), and the tool that queries it (tool.py)."""

from data.search.index import NotAnIndex, Passage, SearchIndex, split_passages, title_from_url
from data.search.tool import SearchTool, format_results

__all__ = ["NotAnIndex", "Passage", "SearchIndex", "SearchTool", "format_results", "split_passages", "title_from_url"]
