"""The built-in sample crawl: a gzip WARC shaped like a Common Crawl file, holding pydoc pages of the installed
Python (plus the reference manual's prose) and the noise a real crawl has: mirrors, 404/301s, binaries, broken records.

    python -m data.samples.warc OUT.warc.gz --max-pages 400
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import html
import importlib
import importlib.util
import io
import json
import os
import pkgutil
import pydoc
import random
import re
import struct
import subprocess
import sys
import sysconfig
import tempfile
import uuid
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from model.files import atomic_file

# Modules whose import has side effects (opens a browser, prints, grabs the terminal), that need a display,
# or whose pydoc page shows this machine's state (sys.path, argv, installed site config).
SKIP_MODULES = {
    "antigravity", "this", "idlelib", "turtledemo", "turtle", "tkinter", "test", "readline", "rlcompleter",
    "sys", "site", "sysconfig", "posix", "pwd", "grp", "sitecustomize", "usercustomize", "pydoc_data", "lib2to3",
    "ensurepip",
    "xxsubtype", "xxlimited", "xxlimited_35", "msvcrt", "winreg", "winsound", "nt", "_winapi", "msilib",
    "pip", "setuptools", "pkg_resources", "_distutils_hack",
}
# Packages whose submodules are not worth a page each (120 codec tables, test suites).
NO_SUBMODULES = {"encodings", "distutils", "unittest.test", "ctypes.test", "email.mime"}
# A few installed third-party packages that import quickly and cleanly; missing ones are skipped.
SITE_PACKAGES = [
    "yaml", "click", "certifi", "idna", "charset_normalizer", "urllib3", "requests", "jinja2", "markupsafe",
    "packaging", "tqdm", "filelock", "dateutil", "attr", "cachetools", "cloudpickle", "docstring_parser",
    "courlan", "htmldate", "justext", "tabulate", "typer", "rich", "pydantic", "numpy", "pyarrow", "sqlalchemy",
    "fsspec", "httpx", "anyio", "jsonschema", "pygments", "markdown", "werkzeug", "flask", "alembic",
]
BASE_DATE = dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
USER_AGENT = "LLMFactoryBot/0.1 (+https://llm-factory.example/bot; bot@llm-factory.example)"

NAV = ('<div class="related" role="navigation"><a href="/3/index.html">Python 3 Documentation</a> &raquo; '
       '<a href="/3/library/index.html">The Python Standard Library</a> | <a href="/3/genindex.html">index</a> | '
       '<a href="/3/py-modindex.html">modules</a> | Theme <select><option>Auto</option><option>Light</option>'
       '<option>Dark</option></select> | <form class="search"><input type="text" name="q"></form></div>')
FOOTER = ('<div class="footer">&copy; <a href="/3/copyright.html">Copyright</a> 2001-2024, Python Software '
          'Foundation. This page is licensed under the Python Software Foundation License Version 2. '
          '<a href="/3/bugs.html">Found a bug</a>? Created using Sphinx.</div>')

GERMAN = (
    "Die Standardbibliothek von Python ist sehr umfangreich und bietet eine Vielzahl von Modulen an. "
    "Diese Seite erklärt, wie man mit dem Modul für reguläre Ausdrücke arbeitet und welche Fehler dabei "
    "häufig auftreten. Zuerst muss das Modul importiert werden, danach kann man ein Muster kompilieren. "
    "Die Funktion sucht dann nach dem ersten Treffer in der Zeichenkette und gibt ein Objekt zurück. "
    "Wenn kein Treffer gefunden wird, ist das Ergebnis leer, und das Programm sollte diesen Fall prüfen. "
)
FRENCH = (
    "La bibliothèque standard de Python contient des modules pour presque toutes les tâches courantes. "
    "Cette page présente le module de journalisation et montre comment configurer un gestionnaire qui "
    "écrit les messages dans un fichier. Les niveaux de gravité permettent de filtrer les événements "
    "selon leur importance, et chaque message peut être formaté avec la date et le nom du module. "
)
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore. "
)
ENGLISH_FILLER = (
    "The logging module defines functions and classes which implement a flexible event logging system for "
    "applications and libraries. The key benefit of having the logging API provided by a standard library "
    "module is that all Python modules can participate in logging, so your application log can include your "
    "own messages integrated with messages from third-party modules. "
)


@dataclass
class Page:
    """One HTTP exchange to write: a response (and its request) plus how it was generated."""

    url: str
    body: bytes
    kind: str  # "page", "mirror", "not_found", "redirect", "robots", "image", "binary", "other_language", ...
    status: str = "200 OK"
    content_type: str = "text/html; charset=utf-8"
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    broken: str | None = None  # how to corrupt the record when writing it


# --- content: pydoc pages and reference prose -----------------------------------------------------------------


@contextlib.contextmanager
def _environ_hidden():
    """Make os.environ print as `environ({...})` (it shows up as a default argument, e.g. cgi.FieldStorage)."""
    original = os._Environ.__repr__
    os._Environ.__repr__ = lambda self: "environ({...})"  # type: ignore[method-assign]
    try:
        yield
    finally:
        os._Environ.__repr__ = original  # type: ignore[method-assign]


def _path_scrubs() -> list[tuple[str, str]]:
    """Local install paths -> neutral ones, so the sample does not depend on (or leak) this machine's layout."""
    paths = sysconfig.get_paths()
    pairs = [
        (paths.get("purelib", ""), "/usr/lib/python3/site-packages"),
        (paths.get("platlib", ""), "/usr/lib/python3/site-packages"),
        (paths.get("stdlib", ""), "/usr/lib/python3"),
        (paths.get("platstdlib", ""), "/usr/lib/python3"),
        (sys.prefix, "/usr"), (sys.base_prefix, "/usr"), (sys.exec_prefix, "/usr"),
        (os.path.expanduser("~"), "/home/user"),
        (str(Path(__file__).resolve().parents[2]), "/srv/app"),
    ]
    return sorted({(a, b) for a, b in pairs if a and len(a) > 1}, key=lambda p: -len(p[0]))


# Object addresses differ per process: "<object object at 0x7f..>", "<PyDLL 'None', handle 7f..>".
_ADDRESS = re.compile(r"(?:\s|&nbsp;)+(?:at|handle)(?:\s|&nbsp;)+(?:0x)?[0-9a-fA-F]{6,16}")


# id() values inside reprs (e.g. pydantic's schema refs 'pydantic.root_model.RootModel:93923865868160')
_OBJECT_ID = re.compile(r"([A-Za-z_]):\d{12,20}\b")


def _scrub(text: str, scrubs: list[tuple[str, str]]) -> str:
    for local, neutral in scrubs:
        text = text.replace(local, neutral)
    return _OBJECT_ID.sub(r"\1", _ADDRESS.sub("", text))


def _decorate(page_html: str) -> str:
    """Wrap a pydoc page in the navigation and footer a documentation site has (boilerplate for the extractor)."""
    page_html = page_html.replace("<body>", "<body>\n" + NAV, 1)
    return page_html.replace("</body>", FOOTER + "\n</body>", 1)


def _module_candidates() -> list[tuple[str, str]]:
    """(module name, url) for stdlib modules, one level of submodules, and a few site-packages; not yet imported."""
    out: list[tuple[str, str]] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP_MODULES:
            continue
        out.append((name, f"https://docs.python.org/3/library/{name}.html"))
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        if spec and spec.submodule_search_locations and name not in NO_SUBMODULES:
            for sub in sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)):
                full = f"{name}.{sub}"
                if not sub.startswith("_") and "test" not in sub and full not in NO_SUBMODULES:
                    out.append((full, f"https://docs.python.org/3/library/{full}.html"))
    for pkg in SITE_PACKAGES:
        out.append((pkg, f"https://pypi-docs.example/{pkg}/index.html"))
        spec = importlib.util.find_spec(pkg)
        if spec and spec.submodule_search_locations:
            for sub in sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)):
                if not sub.startswith("_") and "test" not in sub:
                    out.append((f"{pkg}.{sub}", f"https://pypi-docs.example/{pkg}/{sub}.html"))
    return out


def _render_module(name: str, scrubs: list[tuple[str, str]]) -> str | None:
    """The pydoc HTML page of a module, or None when it does not import cleanly."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
            with _environ_hidden():
                page = pydoc.html.page(pydoc.describe(module), pydoc.html.document(module, name))
    except BaseException:  # noqa: BLE001 - a module that fails to import (or exits) is simply not in the crawl
        return None
    if "&lt;code object" in page:  # a repr of live code objects: addresses and install paths, different every run
        return None
    return _decorate(_scrub(page, scrubs))


def _render_worker() -> None:
    """Child process: read the job (modules, how many pages, scrubs, output path) as JSON on stdin and write one
    JSON page per line to the output file (not stdout: an imported module may print there)."""
    job = json.loads(sys.stdin.read())
    # Document each class's own members only, as docs.python.org does: pydoc's full copies of every inherited
    # method ("Methods inherited from BaseException: ...") would make most pages fail the repetition filters.
    inherited = pydoc.classify_class_attrs
    pydoc.classify_class_attrs = lambda cls: [a for a in inherited(cls) if a[2] is cls]
    scrubs = [tuple(p) for p in job["scrubs"]]
    done = 0
    with open(job["out"], "w", encoding="utf-8") as out:
        for name, url in job["modules"]:
            if done >= job["needed"]:
                break
            page_html = _render_module(name, scrubs)
            if page_html is not None and len(page_html) <= job["max_page_bytes"]:
                out.write(json.dumps({"url": url, "html": page_html}) + "\n")
                done += 1


def _render_modules(modules: list[tuple[str, str]], needed: int, max_page_bytes: int) -> list[tuple[str, str]]:
    """Render module pages in a fresh interpreter: a fixed hash seed makes set reprs stable across runs, a minimal
    environment keeps this machine's variables out of the pages, and the caller's process imports nothing."""
    if needed <= 0:
        return []
    root = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONHASHSEED": "0", "PYTHONPATH": root, "LANG": "C.UTF-8", "HOME": "/home/user",
           "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pages.jsonl"
        job = json.dumps({"modules": modules, "needed": needed, "scrubs": _path_scrubs(),
                          "max_page_bytes": max_page_bytes, "out": str(out)})
        proc = subprocess.run(
            [sys.executable, "-c", "from data.samples.warc import _render_worker; _render_worker()"],
            input=job, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"rendering pydoc pages failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        pages = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(p["url"], p["html"]) for p in pages]


def _topic_pages() -> list[tuple[str, str]]:
    """(url, html) for the language reference sections shipped with Python (pydoc_data.topics: the docs' prose)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return []
    return [(f"https://docs.python.org/3/reference/{key}.html", _topic_html(key, text))
            for key, text in sorted(topics.items())]


def _topic_html(key: str, text: str) -> str:
    """Plain reST-ish help text -> HTML: underlined lines become headings, indented blocks <pre>, the rest <p>."""
    parts: list[str] = []
    blocks = re.split(r"\n\s*\n", text.strip("\n"))
    title = key
    for block in blocks:
        lines = block.split("\n")
        if len(lines) == 2 and set(lines[1].strip()) <= set("*=-~^") and lines[1].strip():
            level = 1 if lines[1].strip()[0] == "*" else 2
            if level == 1 and title == key:
                title = lines[0].strip()
            parts.append(f"<h{level}>{html.escape(lines[0].strip())}</h{level}>")
        elif all(line.startswith("   ") or not line.strip() for line in lines):
            parts.append(f"<pre>{html.escape(block)}</pre>")
        else:
            parts.append(f"<p>{html.escape(' '.join(line.strip() for line in lines))}</p>")
    body = "\n".join(parts)
    return _decorate(
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)} '
        f"&#8212; Python 3 documentation</title>\n</head><body>\n<main><article>\n{body}\n</article></main>\n"
        "</body></html>"
    )


# --- noise: what else a crawl of these hosts returns ---------------------------------------------------------


def _png(width: int = 16, height: int = 16) -> bytes:
    """A real (tiny, gray gradient) PNG file."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes((x * 16) % 256 for x in range(width)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _pdf() -> bytes:
    stream = b"BT /F1 12 Tf 72 720 Td (Python Tutorial, printable edition) Tj ET"
    return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
            b"3 0 obj << /Type /Page /Parent 2 0 R /Contents 4 0 R >> endobj\n"
            b"4 0 obj << /Length " + str(len(stream)).encode() + b" >> stream\n" + stream +
            b"\nendstream endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def _simple_html(title: str, body: str, lang: str = "en") -> str:
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"</head><body>{body}</body></html>")


def _noise_pages(content: list[Page], rng: random.Random) -> list[Page]:
    host = "https://docs.python.org"
    noise: list[Page] = []
    for page in content[:3]:  # exact copies served by a mirror host
        path = urlsplit(page.url).path
        noise.append(Page(f"https://mirror.docs-python.example{path}", page.body, "mirror"))
    for path in ("/3/library/spam.html", "/2.7/library/sets-old.html"):
        body = _simple_html("404 Not Found", "<h1>Not Found</h1><p>The requested URL was not found.</p>")
        noise.append(Page(host + path, body.encode(), "not_found", status="404 Not Found"))
    for path, target in (("/library/json.html", "/3/library/json.html"), ("/3.11/", "/3/")):
        body = _simple_html("301 Moved Permanently", f'<p>Moved to <a href="{target}">{target}</a>.</p>')
        noise.append(Page(host + path, body.encode(), "redirect", status="301 Moved Permanently",
                          extra_headers=[("Location", host + target)]))
    robots = "User-agent: *\nDisallow: /_static/\nDisallow: /dev/\nSitemap: https://docs.python.org/sitemap.xml\n"
    noise.append(Page(host + "/robots.txt", robots.encode(), "robots", content_type="text/plain"))
    noise.append(Page(host + "/3/_static/py.png", _png(), "image", content_type="image/png"))
    noise.append(Page(host + "/3/archives/python-3-docs-pdf-a4.pdf", _pdf(), "binary",
                      content_type="application/pdf"))
    blob = bytes(rng.getrandbits(8) for _ in range(2048))
    noise.append(Page(host + "/3/archives/python-3-docs-text.zip", b"PK\x03\x04" + blob, "binary",
                      content_type="application/zip"))
    noise.append(Page(host + "/3/genindex-empty.html", _simple_html("Index", "<nav><a href='/'>Home</a> | "
                      "<a href='/3/'>Next</a></nav>").encode(), "near_empty"))
    noise.append(Page("https://docs-python.example/de/3/howto/regex.html",
                      _simple_html("Reguläre Ausdrücke", f"<main><h1>Reguläre Ausdrücke</h1><p>{GERMAN}</p>"
                                   f"<p>{GERMAN}</p></main>", lang="de").encode(), "other_language"))
    # Declared Latin-1, so the reader must use the HTTP charset rather than assume UTF-8.
    noise.append(Page("https://docs-python.example/fr/3/howto/logging.html",
                      _simple_html("Journalisation", f"<main><h1>Journalisation</h1><p>{FRENCH}</p><p>{FRENCH}"
                                   "</p></main>", lang="fr").replace("utf-8", "iso-8859-1").encode("latin-1"),
                      "other_language", content_type="text/html; charset=iso-8859-1"))
    noise.append(Page("https://python-snippets.example/blog/welcome", _simple_html(
        "Welcome", "<header><a href='/'>Home</a> <a href='/about'>About</a> <a href='/login'>Log in</a></header>"
        "<div class='cookie'>We use cookies to improve your experience. Accept all cookies?</div>"
        "<main><p>Please enable JavaScript to view this site.</p><p>Coming soon!</p></main>"
        "<footer>Copyright 2024. All rights reserved. Terms of use. Privacy policy.</footer>").encode(),
        "boilerplate"))
    noise.append(Page("https://python-snippets.example/blog/template", _simple_html(
        "Template post", "<main><h1>Template post</h1><p>This is the first post of the new blog. It was made from "
        "a theme template and the author has not replaced all of the placeholder text yet, so some of the page "
        "still reads like the demo that came with the theme.</p>" + f"<p>{LOREM}</p><p>{ENGLISH_FILLER}</p>"
        "</main>").encode(), "lorem"))
    # Broken records: HTTP header garbage, a payload shorter than its HTTP Content-Length, a WARC Content-Length
    # shorter than the block (desynchronises the reader), and invalid UTF-8 inside an otherwise good page.
    good = _simple_html("Logging HOWTO", "<main><h1>Logging HOWTO</h1>" + f"<p>{ENGLISH_FILLER}</p>" * 6 + "</main>")
    noise.append(Page(host + "/3/howto/logging-garbage.html", good.encode(), "broken", broken="http_garbage"))
    noise.append(Page(host + "/3/howto/logging-truncated.html", good.encode(), "broken", broken="http_length"))
    noise.append(Page(host + "/3/howto/logging-short.html", good.encode(), "broken", broken="warc_length"))
    bad_bytes = good.replace("flexible event", "flexible \udcff\udcfe event").encode("utf-8", "surrogateescape")
    noise.append(Page(host + "/3/howto/logging-invalid-utf8.html", bad_bytes, "invalid_utf8"))
    return noise


# --- writing the WARC -----------------------------------------------------------------------------------------


class _SampleWriter:
    """Writes request/response/metadata records with dates and record ids drawn from the seed."""

    def __init__(self, fh, rng: random.Random, filename: str):
        self.fh = fh
        self.writer = WARCWriter(fh, gzip=True, warc_version="1.0")
        self.rng = rng
        self.filename = filename
        self.n = 0
        self.counts: Counter[str] = Counter()

    def _id(self) -> str:
        return f"<urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}>"

    def _date(self) -> dt.datetime:
        self.n += 1
        return BASE_DATE + dt.timedelta(seconds=7 * self.n + self.rng.randrange(5))

    def warcinfo(self) -> None:
        fields = (b"software: llm-factory sample crawler (warcio)\nhostname: crawl-01.llm-factory.example\n"
                  b"operator: LLM Factory <bot@llm-factory.example>\nrobots: checked via crawler-commons\n"
                  b"description: Sample crawl of Python documentation for the LLM Factory demo\n"
                  b"isPartOf: LLMF-SAMPLE-2024-10\nformat: WARC File Format 1.0\n"
                  b"conformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/"
                  b"warc-1.0/\n")
        record = self.writer.create_warc_record(
            "", "warcinfo", payload=io.BytesIO(fields), length=len(fields),
            warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Date": self._date().strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "WARC-Record-ID": self._id(), "WARC-Filename": self.filename})
        self.writer.write_record(record)
        self.counts["warcinfo"] += 1

    def exchange(self, page: Page, with_metadata: bool) -> None:
        date = self._date()
        warc_date = date.strftime("%Y-%m-%dT%H:%M:%SZ")
        response_id, request_id = self._id(), self._id()
        parts = urlsplit(page.url)
        request_headers = StatusAndHeaders(
            f"GET {parts.path or '/'} HTTP/1.1",
            [("Host", parts.netloc), ("User-Agent", USER_AGENT),
             ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
             ("Accept-Language", "en-US,en;q=0.5"), ("Accept-Encoding", "identity")],
            is_http_request=True)
        request = self.writer.create_warc_record(
            page.url, "request", payload=io.BytesIO(b""), length=0, http_headers=request_headers,
            warc_headers_dict={"WARC-Date": warc_date, "WARC-Record-ID": request_id,
                               "WARC-Concurrent-To": response_id})
        self.writer.write_record(request)
        self.counts["request"] += 1

        headers = [("Server", "nginx"), ("Date", format_datetime(date, usegmt=True)),
                   ("Content-Type", page.content_type), ("Content-Length", str(len(page.body))),
                   ("Last-Modified", format_datetime(BASE_DATE - dt.timedelta(days=40), usegmt=True)),
                   ("ETag", '"' + hashlib.md5(page.body).hexdigest()[:16] + '"'),
                   ("Accept-Ranges", "bytes"), ("Connection", "close"), *page.extra_headers]
        warc_headers = {"WARC-Date": warc_date, "WARC-Record-ID": response_id,
                        "WARC-IP-Address": f"151.101.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"}
        if page.broken:
            self._broken_response(page, headers, warc_headers)
        else:
            response = self.writer.create_warc_record(
                page.url, "response", payload=io.BytesIO(page.body), length=len(page.body),
                http_headers=StatusAndHeaders(page.status, headers, protocol="HTTP/1.1"),
                warc_headers_dict=warc_headers)
            self.writer.write_record(response)
        self.counts["response"] += 1

        if with_metadata:
            meta = (f"fetchTimeMs: {self.rng.randrange(20, 900)}\ncharset-detected: UTF-8\n"
                    'languages-cld2: {"reliable":true,"text-bytes":%d,"languages":[{"code":"en",'
                    '"code-iso-639-3":"eng","text-covered":0.97,"score":1024.0,"name":"ENGLISH"}]}\n'
                    % len(page.body)).encode()
            record = self.writer.create_warc_record(
                page.url, "metadata", payload=io.BytesIO(meta), length=len(meta),
                warc_content_type="application/warc-fields",
                warc_headers_dict={"WARC-Date": warc_date, "WARC-Record-ID": self._id(),
                                   "WARC-Concurrent-To": response_id})
            self.writer.write_record(record)
            self.counts["metadata"] += 1

    def _broken_response(self, page: Page, headers: list[tuple[str, str]], warc_headers: dict[str, str]) -> None:
        """Write a response record by hand (warcio refuses to write these) as its own gzip member."""
        body = page.body
        if page.broken == "http_length":
            headers = [(k, str(len(body) * 3) if k == "Content-Length" else v) for k, v in headers]
        http_block = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        if page.broken == "http_garbage":
            http_block = "\x00\x13GET-ME-NOT ~~ \xff\xfe server said what\r\nX-Junk\r\n\r\n"
        block = http_block.encode("latin-1") + body
        declared = len(block) // 2 if page.broken == "warc_length" else len(block)
        digest = "sha1:" + base64.b32encode(hashlib.sha1(block).digest()).decode()
        payload_digest = "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode()
        warc = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Date: {warc_headers['WARC-Date']}\r\n"
                f"WARC-Record-ID: {warc_headers['WARC-Record-ID']}\r\nWARC-Target-URI: {page.url}\r\n"
                f"WARC-Block-Digest: {digest}\r\nWARC-Payload-Digest: {payload_digest}\r\n"
                "Content-Type: application/http; msgtype=response\r\n"
                f"Content-Length: {declared}\r\n\r\n").encode()
        self.fh.write(gzip.compress(warc + block + b"\r\n\r\n", mtime=0))


def _warc_filename(name: str) -> str:
    """The name warcinfo records: "crawl.warc.gz" also when writing to a temp name like ".crawl.warc.gz.123.tmp",
    so the bytes do not depend on how the caller stages the file."""
    match = re.search(r"[^/]*?\.warc(?:\.gz)?", name.lstrip("."))
    return match.group(0) if match else name


def build_sample_warc(out_path: str | os.PathLike[str], max_pages: int = 400, seed: int = 0,
                      max_page_bytes: int = 120_000) -> dict:
    """Write the sample crawl to `out_path` (gzip WARC). Returns counts by record type and by page kind.

    `max_pages` counts documentation pages; the ~20 noise records come on top. Modules whose pydoc page is over
    `max_page_bytes` (builtins, asyncio...) are left out so a few giants do not dominate the text.
    Same seed, same Python -> same bytes.
    """
    if max_pages < 3:
        raise ValueError(f"max_pages must be >= 3 (the mirror noise copies 3 pages), got {max_pages}")
    rng = random.Random(seed)

    # Pick pages in a seeded order; the reference prose is ~1/6 of the pages whatever max_pages is.
    modules = _module_candidates()
    rng.shuffle(modules)
    topics = _topic_pages()
    rng.shuffle(topics)
    n_topics = min(len(topics), max(1, max_pages // 6))
    content = [Page(url, text.encode("utf-8"), "page") for url, text in topics[:n_topics]]
    for url, page_html in _render_modules(modules, max_pages - len(content), max_page_bytes):
        content.append(Page(url, page_html.encode("utf-8"), "page"))
    for url, text in topics[n_topics:max(n_topics, n_topics + max_pages - len(content))]:  # too few modules
        content.append(Page(url, text.encode("utf-8"), "page"))
    rng.shuffle(content)

    noise = _noise_pages(content, rng)
    exchanges = list(content)
    for page in noise:  # noise lands at seeded positions, never before the first page
        exchanges.insert(rng.randrange(1, len(exchanges) + 1), page)

    out_path = Path(out_path)
    with atomic_file(out_path, "wb") as fh:
        writer = _SampleWriter(fh, rng, _warc_filename(out_path.name))
        writer.warcinfo()
        for i, page in enumerate(exchanges):
            writer.exchange(page, with_metadata=(i % 5 == 0 and page.broken is None))

    counts: dict[str, int] = dict(writer.counts)
    counts.update({f"pages_{kind}": n for kind, n in sorted(Counter(p.kind for p in exchanges).items())})
    counts["html_bytes"] = sum(len(p.body) for p in content)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the built-in sample crawl (gzip WARC).")
    parser.add_argument("out", help="output path, e.g. sample.warc.gz")
    parser.add_argument("--max-pages", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = build_sample_warc(args.out, max_pages=args.max_pages, seed=args.seed)
    print(json.dumps({"out": args.out, **counts}, indent=2))


if __name__ == "__main__":
    main()
