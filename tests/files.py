"""Small input files the tests write, the same in every module that needs them."""

import json


def jsonl_documents(path, prefix: str, n: int):
    """`n` documents {"id": f"{prefix}{i}", "text": f"text {prefix}{i}"} as a JSONL file at `path`."""
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": f"text {prefix}{i}"}) + "\n" for i in range(n)))
    return path

# Crawled pages for the chat skill that asks about the crawl (crawl_qa): three with text, one broken.
PAGES = [
    {"title": "json — JSON encoder and decoder — Python documentation", "url": "https://docs.python.org/json",
     "text": "Source code: Lib/json/__init__.py. JSON is a lightweight data interchange format inspired by "
             "JavaScript object literal syntax. It is widely used."},
    {"title": "Tower Bridge - Wikipedia", "url": "https://en.wikipedia.org/wiki/Tower_Bridge",
     "text": "Tower Bridge is a listed combined bascule and suspension bridge in London, built between 1886 "
             "and 1894. It crosses the River Thames."},
    {"title": "Photosynthesis | Biology notes", "url": "https://example.org/photosynthesis",
     "text": "Photosynthesis is the process by which green plants turn sunlight, water and carbon dioxide "
             "into sugar and oxygen. It happens in the leaves."},
    {"title": "Broken page", "url": "https://example.org/x", "text": "404"},
]
