"""Text extraction: HTML (or plain text) bytes -> clean main text, with Resiliparse (as DCLM's baseline) or trafilatura
(as FineWeb): `preprocess.extract.engine`.

Why Resiliparse is the default: on the sample crawl's documentation pages it extracts ~25x faster than trafilatura
(a C library over the lexbor HTML parser, where trafilatura walks an lxml tree in Python with many XPath passes),
which is most of preprocessing's time, and DCLM found the datasets built on the two equally good downstream. The
measured trade-off (the share of trafilatura's words it keeps, the keep/drop decisions that change after the
filters) is in bench/preprocess.py's output and the README."""

from __future__ import annotations

import codecs
import logging
import re
from typing import Literal, NamedTuple, get_args

import charset_normalizer
import trafilatura
from pydantic import BaseModel, ConfigDict, Field
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from data.sources.readers import HTML_TYPES, RawDocument
from data.tokens.documents import Document

# trafilatura logs every page it finds nothing in; at crawl scale that is noise, our stats count it instead.
logging.getLogger("trafilatura").setLevel(logging.ERROR)

Engine = Literal["resiliparse", "trafilatura"]
ENGINES: tuple[str, ...] = get_args(Engine)


class ExtractOptions(BaseModel):
    """`preprocess.extract`: which engine turns HTML into text, and its options. Each option says which engine reads
    it; the other ignores it."""

    model_config = ConfigDict(extra="forbid")

    engine: Engine = Field(
        "resiliparse", description="resiliparse: ~25x faster, DCLM's extractor; trafilatura: FineWeb's.")
    favor: Literal["precision", "balanced", "recall"] = Field(
        "precision", description="trafilatura: its trade-off (FineWeb: precision; recall keeps more of tables).")
    main_content: bool = Field(True, description="resiliparse: keep only main-content elements (navigation, "
                               "headers, footers and sidebars out), as DCLM ran it.")
    list_bullets: bool = Field(True, description="resiliparse: a bullet or number before list items.")
    alt_texts: bool = Field(True, description="resiliparse: keep images' alternative texts.")
    links: bool = Field(False, description="resiliparse: append link targets.")
    form_fields: bool = Field(False, description="resiliparse: keep form fields and their values.")
    noscript: bool = Field(False, description="resiliparse: keep <noscript> content.")
    comments: bool = Field(True, description="resiliparse: treat comment sections as main content (trafilatura "
                           "leaves comments out, as FineWeb ran it).")


# A charset in the page itself: <meta charset=...>, <meta http-equiv=Content-Type content="...; charset=...">, or an
# XML declaration's encoding=..., looked for in the first 2 KB as browsers do.
_META_CHARSET = re.compile(
    rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)|^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""",
    re.IGNORECASE,
)
_META_BYTES = 2048
_GUESS_BYTES = 1 << 16
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# As browsers do (WHATWG Encoding): pages labelled Latin-1 or ASCII are decoded as windows-1252.
_WHATWG_ALIASES = {"iso8859-1": "cp1252", "ascii": "cp1252"}
_WEB_CHARSETS = [  # the WHATWG Encoding Standard's legacy encodings, in Python's names
    "utf_8", "cp866", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8",
    "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "koi8_r", "koi8_u", "mac_roman", "cp874",
    "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "mac_cyrillic",
    "gb18030", "big5", "euc_jp", "iso2022_jp", "shift_jis", "euc_kr", "utf_16_be", "utf_16_le",
]


class Decoded(NamedTuple):
    text: str
    charset: str | None  # the codec the text was decoded with; None when the content was already text
    fallback: bool  # the declared charset (HTTP header, else the page's meta) was missing, unknown or wrong


def decode(content: bytes | str, charset: str | None = None) -> str:
    """Bytes -> str: the declared charset, else the page's own, else UTF-8, else charset_normalizer's guess."""
    return decode_with_charset(content, charset).text


def decode_with_charset(content: bytes | str, charset: str | None = None) -> Decoded:
    """Bytes -> text and the charset used. Order: a byte-order mark; the declared charset (`charset`, from the HTTP
    header, or when there is none a <meta> charset in the first 2 KB) if Python knows it and it decodes (but for a few
    stray bytes, see _tolerant); the page's <meta> charset; UTF-8 (first when a legacy 8-bit charset is declared but
    the bytes are valid non-ASCII UTF-8, which they almost never are by chance); charset_normalizer's best guess;
    UTF-8 with U+FFFD for what does not decode."""
    if isinstance(content, str):
        return Decoded(content, None, False)
    for bom, codec in _BOMS:
        if content.startswith(bom):
            return Decoded(content.decode(codec, errors="replace"), codec, False)
    header = _codec(charset)
    declared = header or _codec(_meta_charset(content))
    if declared and declared != "utf-8" and _single_byte(declared) and not content.isascii():
        text = _strict(content, "utf-8")
        if text is not None:
            return Decoded(text, "utf-8", True)
    if declared:
        text = _tolerant(content, declared)
        if text is not None:
            return Decoded(text, declared, False)
    # Missing, unknown or wrong: the page's own <meta> (when it was the header that was wrong), UTF-8, then a guess.
    for codec in (header and _codec(_meta_charset(content)), "utf-8"):
        if codec and codec != declared:
            text = _tolerant(content, codec)
            if text is not None:
                return Decoded(text, codec, True)
    guess = _guess_charset(content)
    if guess:
        return Decoded(content.decode(guess, errors="replace"), guess, True)
    return Decoded(content.decode("utf-8", errors="replace"), "utf-8", True)


def _codec(label: str | None) -> str | None:
    """Python's codec name for a charset label, or None when Python does not know it ("utf8mb4", "none"...)."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
    except LookupError:
        return None
    return _WHATWG_ALIASES.get(name, name)


def _meta_charset(content: bytes) -> str | None:
    match = _META_CHARSET.search(content[:_META_BYTES])
    return (match.group(1) or match.group(2)).decode("ascii") if match else None


def _single_byte(codec: str) -> bool:
    multi_byte = ("cp932", "cp949", "cp950")  # Windows' Shift_JIS, Korean and Big5 code pages
    return codec.startswith(("cp", "iso8859", "latin", "mac", "koi8")) and codec not in multi_byte


def _strict(content: bytes, codec: str) -> str | None:
    try:
        return content.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _tolerant(content: bytes, codec: str) -> str | None:
    """The text if `codec` decodes all but a few stray bytes (U+FFFD for those), else None (the wrong charset).

    A few: a character cut at the end (Common Crawl truncates pages at 1 MiB), at most 1 byte in 100, or, for UTF-8,
    fewer bad sequences than good non-ASCII characters (a UTF-8 page with some Latin-1 pasted in). Browsers never
    second-guess a declared charset; we do only when it is plainly wrong, as a whole page in another charset is.
    """
    try:
        return content.decode(codec)
    except LookupError:
        return None
    except UnicodeDecodeError as err:
        if err.start >= len(content) - 4:
            return content.decode(codec, errors="replace")
    text = content.decode(codec, errors="replace")
    bad = text.count("\ufffd")
    if bad * 100 <= len(content):
        return text
    if codec == "utf-8" and len(text) - len(text.encode("ascii", "ignore")) - bad > bad:
        return text
    return None


def _guess_charset(content: bytes) -> str | None:
    """charset_normalizer's best guess over the first 64 KB, among the charsets browsers know (WHATWG Encoding: Mac
    and DOS code pages it would otherwise pick for short texts are not web charsets); windows-1252, the web's most
    common legacy charset, wins near-ties (it is often ranked level with cp1250 or cp1257 for Western text)."""
    matches = charset_normalizer.from_bytes(content[:_GUESS_BYTES], cp_isolation=_WEB_CHARSETS)
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        if ("cp1252" in match.could_be_from_charset and match.chaos <= best.chaos + 0.1
                and match.coherence >= best.coherence):
            return "cp1252"
    return _codec(best.encoding) or best.encoding


def _clean_lines(text: str) -> str:
    """Table rows as one line of cells, blank lines out. trafilatura renders a row as '| a |  |  | b |' and
    Resiliparse as 'a\t\tb': keep the cells, drop the empty ones and the edge pipes (layout tables, as in pydoc
    pages, would otherwise fill the text with '|  |  |'), so both engines give the filters the same shape of text."""
    lines = []
    for line in text.split("\n"):
        stripped = line.strip()
        if len(stripped) > 1 and stripped.startswith("|") and stripped.endswith("|"):  # a rendered table row
            line = " | ".join(cell.strip() for cell in stripped[1:-1].split("|") if cell.strip())
        elif "\t" in stripped:
            line = " | ".join(cell.strip() for cell in stripped.split("\t") if cell.strip())
        if line.strip():
            lines.append(line.rstrip())
    return "\n".join(lines)


def html_to_text(html: str | bytes, url: str = "", charset: str | None = None,
                 options: ExtractOptions | None = None) -> str | None:
    """Main text of an HTML page, or None when there is none; `options` picks the engine (default: Resiliparse).

    trafilatura: favor="precision" as in FineWeb (boilerplate out, even at the cost of some text); "recall" keeps
    more of documentation pages (pydoc's function sections inside nested tables), at the cost of some navigation
    text. Tables are always kept: documentation sites (pydoc included) lay out their content in tables.
    """
    options = options or ExtractOptions()
    text = decode(html, charset)
    if not text.strip():
        return None
    if options.engine == "resiliparse":
        extracted = _resiliparse(text, options)
    else:
        extracted = trafilatura.extract(
            text, url=url or None, favor_precision=options.favor == "precision",
            favor_recall=options.favor == "recall", include_tables=True, include_comments=False,
            include_images=False, include_links=False, deduplicate=False, output_format="txt", with_metadata=False,
        )
    if not extracted:
        return None
    cleaned = _clean_lines(extracted).strip()
    return cleaned or None


def _resiliparse(text: str, options: ExtractOptions) -> str:
    """Resiliparse's plain text, formatting (paragraphs, list items, table rows as lines) kept."""
    tree = HTMLTree.parse(text)
    if tree.body is None:
        return ""
    return extract_plain_text(tree, preserve_formatting=True, main_content=options.main_content,
                              list_bullets=options.list_bullets, alt_texts=options.alt_texts, links=options.links,
                              form_fields=options.form_fields, noscript=options.noscript, comments=options.comments)


def raw_to_document(raw: RawDocument, options: ExtractOptions | None = None) -> Document | None:
    """RawDocument -> Document: HTML through html_to_text, text/plain decoded as is; None when no text is left."""
    charset = raw.meta.get("charset")
    if raw.content_type in HTML_TYPES:
        text = html_to_text(raw.content, url=raw.url, charset=charset, options=options)
    else:
        text = decode(raw.content, charset).strip() or None
    if text is None:
        return None
    return Document(id=raw.id, url=raw.url, text=text, source=raw.source,
                    meta={**raw.meta, "content_type": raw.content_type})
