"""Text extraction: HTML (or plain text) bytes -> clean main text, with trafilatura as FineWeb does."""

from __future__ import annotations

import codecs
import logging

import trafilatura

from data.documents import Document
from data.readers import RawDocument

# trafilatura logs every page it finds nothing in; at crawl scale that is noise, our stats count it instead.
logging.getLogger("trafilatura").setLevel(logging.ERROR)

FAVOR = ("precision", "balanced", "recall")
HTML_TYPES = ("text/html", "application/xhtml+xml")


def decode(content: bytes | str, charset: str | None = None) -> str:
    """Bytes -> str with the declared charset when Python knows it, else UTF-8; undecodable bytes become U+FFFD."""
    if isinstance(content, str):
        return content
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = None
    return content.decode(charset or "utf-8", errors="replace")


def _clean_table_rows(text: str) -> str:
    """trafilatura renders table rows as '| a |  |  | b |'; keep the cells, drop the empty ones and the pipes
    at the edges (layout tables, as in pydoc pages, would otherwise fill the text with '|  |  |')."""
    lines = []
    for line in text.split("\n"):
        stripped = line.strip()
        if len(stripped) > 1 and stripped.startswith("|") and stripped.endswith("|"):  # a rendered table row
            line = " | ".join(cell.strip() for cell in stripped[1:-1].split("|") if cell.strip())
        if line.strip():
            lines.append(line.rstrip())
    return "\n".join(lines)


def html_to_text(html: str | bytes, url: str = "", charset: str | None = None, favor: str = "precision") -> str | None:
    """Main text of an HTML page, or None when there is none.

    favor="precision" as in FineWeb (boilerplate out, even at the cost of some text); "recall" keeps more of
    documentation pages (pydoc's function sections inside nested tables), at the cost of some navigation text.
    Tables are always kept: documentation sites (pydoc included) lay out their content in tables.
    """
    if favor not in FAVOR:
        raise ValueError(f"favor must be one of {FAVOR}, got {favor!r}")
    text = decode(html, charset)
    if not text.strip():
        return None
    extracted = trafilatura.extract(
        text, url=url or None, favor_precision=favor == "precision", favor_recall=favor == "recall",
        include_tables=True, include_comments=False, include_images=False, include_links=False,
        deduplicate=False, output_format="txt", with_metadata=False,
    )
    if not extracted:
        return None
    cleaned = _clean_table_rows(extracted).strip()
    return cleaned or None


def raw_to_document(raw: RawDocument, favor: str = "precision") -> Document | None:
    """RawDocument -> Document: HTML through html_to_text, text/plain decoded as is; None when no text is left."""
    charset = raw.meta.get("charset")
    if raw.content_type in HTML_TYPES:
        text = html_to_text(raw.content, url=raw.url, charset=charset, favor=favor)
    else:
        text = decode(raw.content, charset).strip() or None
    if text is None:
        return None
    return Document(id=raw.id, url=raw.url, text=text, source=raw.source,
                    meta={**raw.meta, "content_type": raw.content_type})
