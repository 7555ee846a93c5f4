"""A small polite crawler for users who crawl their own sites: breadth-first from seeds, robots.txt and rate limits
honoured, every exchange written as request + response records to a gzip WARC that data/sources/readers.py reads.

    python -m data.sources.crawler https://example.org/ --out site.warc.gz --max-pages 200 --delay 1
"""

from __future__ import annotations

import argparse
import codecs
import http.client
import io
import json
import math
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import quote, urljoin, urlsplit, urlunsplit
from urllib.request import HTTPRedirectHandler, OpenerDirector, Request, build_opener
from urllib.robotparser import RobotFileParser

import lxml.etree
import lxml.html
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data.sources.readers import HTML_TYPES, split_content_type
from model.files import atomic_file

ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least the first 500 KiB
# Characters left as they are when percent-encoding a path or query: the reserved set, and "%" so that an
# already-encoded URL is not encoded twice.
_URL_SAFE = "/?:@!$&'()*+,;=%~-._[]"
# Errors that mean "this fetch failed", not "the crawler is broken": refused, reset, timed out, bad TLS, garbled HTTP.
FETCH_ERRORS = (OSError, http.client.HTTPException, ValueError)
STAT_KEYS = ("fetched", "pages_html", "skipped_robots", "skipped_offsite", "fetch_errors", "truncated", "redirects")


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Absolute http(s) URL without #fragment, user info or default port, lower-case scheme and host, non-ASCII
    characters percent-encoded; None for anything that is not a fetchable http(s) URL (mailto:, javascript:...)."""
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        port = parts.port
    except ValueError:  # "http://[::1", "http://host:99999"
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, quote(parts.path or "/", safe=_URL_SAFE), quote(parts.query, safe=_URL_SAFE),
                       ""))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def crawl_delay(robots_lines: list[str], user_agent: str) -> float | None:
    """Crawl-delay in seconds from the robots.txt group for `user_agent` (its own group, else "*"), or None.

    urllib.robotparser only reads whole seconds; sites do write "Crawl-delay: 0.5". Groups are matched as
    robotparser matches them: a group's agent name found in our product token ("llmfactorybot").
    """
    token = user_agent.split("/")[0].lower()
    groups: list[tuple[list[str], float | None]] = []
    agents: list[str] = []
    delay: float | None = None
    in_rules = False
    for raw in robots_lines:
        key, sep, value = raw.split("#", 1)[0].partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep:
            continue
        if key == "user-agent":
            if in_rules:  # a user-agent line after rules starts the next group
                groups.append((agents, delay))
                agents, delay, in_rules = [], None, False
            agents.append(value.lower())
        elif agents:
            in_rules = True
            if key == "crawl-delay" and delay is None:
                try:
                    delay = float(value)
                except ValueError:
                    continue
                if not math.isfinite(delay) or delay < 0:
                    delay = None
    if agents:
        groups.append((agents, delay))
    for group_agents, group_delay in groups:
        if any(a != "*" and a in token for a in group_agents):
            return group_delay
    return next((d for a, d in groups if "*" in a), None)


def extract_links(body: bytes, page_url: str, charset: str | None = None, user_agent: str = "") -> list[str]:
    """Normalised targets of the page's <a href> links in page order, leaving out rel="nofollow" links; none at all
    when a <meta name="robots"> (or one naming our bot) says nofollow or none."""
    try:
        parser = lxml.html.HTMLParser(encoding=charset) if charset and _known_charset(charset) else None
        doc = lxml.html.document_fromstring(body, parser=parser)
    except (lxml.etree.LxmlError, ValueError):  # empty or undecodable document: no links
        return []
    meta_names = {"robots", user_agent.split("/")[0].lower()} - {""}
    for meta in doc.iter("meta"):
        if (meta.get("name") or "").strip().lower() in meta_names:
            directives = {d.strip().lower() for d in (meta.get("content") or "").split(",")}
            if directives & {"nofollow", "none"}:
                return []
    base = page_url
    for base_tag in doc.iter("base"):
        if base_tag.get("href"):
            base = urljoin(page_url, base_tag.get("href").strip())
            break
    links = []
    for anchor in doc.iter("a"):
        href = anchor.get("href")
        if href is None or "nofollow" in (anchor.get("rel") or "").lower().split():
            continue
        url = normalize_url(href, base)
        if url is not None:
            links.append(url)
    return links


def _known_charset(name: str) -> bool:
    try:
        codecs.lookup(name)
        return True
    except LookupError:
        return False


# --- fetching ---------------------------------------------------------------------------------------------------


class _NoRedirect(HTTPRedirectHandler):
    """3xx comes back as an HTTPError we record; the crawler enqueues Location itself, under the same rules."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


@dataclass
class _Response:
    url: str
    status: int
    reason: str
    protocol: str
    headers: list[tuple[str, str]]
    body: bytes
    truncated: bool
    request_line: str
    request_headers: list[tuple[str, str]]


@dataclass
class _Host:
    """What the crawler knows about one origin (scheme://host:port): its robots.txt and when we last asked it."""

    robots: RobotFileParser
    delay_s: float
    last_request: float  # time.monotonic() when the last request to it ended


def _read_capped(response, max_bytes: int) -> tuple[bytes, bool]:
    """Up to max_bytes of the body, and whether there was more (the rest is never downloaded)."""
    chunks, size = [], 0
    while size <= max_bytes:
        chunk = response.read(min(1 << 16, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    return body[:max_bytes], len(body) > max_bytes


def _fetch(opener: OpenerDirector, url: str, user_agent: str, timeout_s: float, max_bytes: int) -> _Response:
    """GET url once, no redirects followed; raises one of FETCH_ERRORS when no HTTP response came back."""
    request = Request(url, headers={"User-Agent": user_agent, "Accept-Encoding": "identity",
                                    "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"})
    try:
        response = opener.open(request, timeout=timeout_s)
        status, version = response.status, response.version
    except HTTPError as err:  # 3xx (not followed), 4xx, 5xx: still an answer worth recording
        response, status, version = err, err.code, getattr(err.fp, "version", 11)
    with response:
        body, truncated = _read_capped(response, max_bytes)
        headers = list(response.headers.items())
        reason = response.reason or ""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return _Response(url=url, status=status, reason=str(reason), protocol="HTTP/1.0" if version == 10 else "HTTP/1.1",
                     headers=headers, body=body, truncated=truncated, request_line=f"GET {target} HTTP/1.1",
                     request_headers=request.header_items())


def _stored_headers(headers: list[tuple[str, str]], body_len: int) -> list[tuple[str, str]]:
    """HTTP headers as stored with the body we keep: Content-Length is that body's length. http.client has undone
    chunking, so Transfer-Encoding no longer applies; like Common Crawl, originals are kept as X-Crawler-*."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower == "transfer-encoding" or (lower == "content-length" and value.strip() != str(body_len)):
            out.append((f"X-Crawler-{name}", value))
        elif lower != "content-length":
            out.append((name, value))
    out.append(("Content-Length", str(body_len)))
    return out


# --- writing ----------------------------------------------------------------------------------------------------


class _WarcOut:
    """warcinfo first, then a request and a response record per fetch (the request points at its response)."""

    def __init__(self, fh, filename: str, user_agent: str, seeds: list[str]):
        self.writer = WARCWriter(fh, gzip=True)
        info = {"software": "llm-factory data.sources.crawler (warcio)", "http-header-user-agent": user_agent,
                "robots": "obey", "description": "seeds: " + " ".join(seeds), "format": "WARC File Format 1.0"}
        self.writer.write_record(self.writer.create_warcinfo_record(filename, info))

    def exchange(self, resp: _Response) -> None:
        warc_headers = {"WARC-Truncated": "length"} if resp.truncated else {}
        response = self.writer.create_warc_record(
            resp.url, "response", payload=io.BytesIO(resp.body), length=len(resp.body),
            http_headers=StatusAndHeaders(f"{resp.status} {resp.reason}".strip(),
                                          _stored_headers(resp.headers, len(resp.body)), protocol=resp.protocol),
            warc_headers_dict=warc_headers)
        request = self.writer.create_warc_record(
            resp.url, "request", payload=io.BytesIO(b""), length=0,
            http_headers=StatusAndHeaders(resp.request_line, resp.request_headers, is_http_request=True),
            warc_headers_dict={"WARC-Concurrent-To": response.rec_headers.get_header("WARC-Record-ID")})
        self.writer.write_record(request)
        self.writer.write_record(response)


# --- the crawl --------------------------------------------------------------------------------------------------


class _Crawler:
    def __init__(self, seeds: list[str], *, max_pages: int, delay_s: float, same_domain: bool, user_agent: str,
                 timeout_s: float, max_page_bytes: int, log: Callable[[str], None]):
        self.max_pages, self.delay_s, self.same_domain = max_pages, delay_s, same_domain
        self.user_agent, self.timeout_s, self.max_page_bytes, self.log = user_agent, timeout_s, max_page_bytes, log
        self.opener = build_opener(_NoRedirect)
        self.robots_opener = build_opener()  # RFC 9309 2.3.1.2: follow robots.txt redirects
        self.hosts: dict[str, _Host] = {}
        self.stats: Counter = Counter({key: 0 for key in STAT_KEYS})
        self.seeds = seeds
        self.seed_hosts = {urlsplit(s).netloc for s in seeds}
        self.queue: deque[str] = deque()
        self.seen: set[str] = set()

    def run(self, warc: _WarcOut) -> Counter:
        for seed in self.seeds:
            self.enqueue(seed)
        attempts = 0
        while self.queue and attempts < self.max_pages:
            url = self.queue.popleft()
            host = self.host(_origin(url))
            if not host.robots.can_fetch(self.user_agent, url):
                self.stats["skipped_robots"] += 1
                continue
            attempts += 1
            response = self.fetch(host, url)
            if response is not None:
                warc.exchange(response)
                self.follow(response)
        self.stats["left_in_queue"] = len(self.queue)
        return self.stats

    def enqueue(self, url: str) -> None:
        if url in self.seen:
            return
        self.seen.add(url)  # off-site URLs too, so each is counted once
        if self.same_domain and urlsplit(url).netloc not in self.seed_hosts:
            self.stats["skipped_offsite"] += 1
            return
        self.queue.append(url)

    def fetch(self, host: _Host, url: str) -> _Response | None:
        self.wait_turn(host)
        try:
            response = _fetch(self.opener, url, self.user_agent, self.timeout_s, self.max_page_bytes)
        except FETCH_ERRORS as err:
            self.stats["fetch_errors"] += 1
            self.log(f"fetch failed {url}: {type(err).__name__}: {err}")
            return None
        finally:
            host.last_request = time.monotonic()
        self.stats["fetched"] += 1
        self.stats[f"status_{response.status}"] += 1
        self.stats["truncated"] += response.truncated
        cut = ", truncated" if response.truncated else ""
        self.log(f"fetched {response.status} {url} ({len(response.body)} bytes{cut})")
        return response

    def follow(self, response: _Response) -> None:
        """Enqueue a redirect's target, or an HTML page's links; other responses lead nowhere."""
        headers = {name.lower(): value for name, value in response.headers}
        if 300 <= response.status < 400 and headers.get("location"):
            self.stats["redirects"] += 1
            target = normalize_url(headers["location"], response.url)
            if target is not None:
                self.enqueue(target)
            return
        mime, charset = split_content_type(headers.get("content-type"))
        if response.status != 200 or mime not in HTML_TYPES:
            return
        self.stats["pages_html"] += 1
        for link in extract_links(response.body, response.url, charset, self.user_agent):
            self.enqueue(link)

    def wait_turn(self, host: _Host) -> None:
        """Sleep until host.delay_s has passed since the last request to the host ended."""
        while (wait := host.last_request + host.delay_s - time.monotonic()) > 0:
            time.sleep(wait)

    def host(self, origin: str) -> _Host:
        if origin not in self.hosts:
            self.hosts[origin] = self.load_robots(origin)
        return self.hosts[origin]

    def load_robots(self, origin: str) -> _Host:
        """Fetch origin/robots.txt once. RFC 9309: 2xx parse it; 4xx none (all allowed); 5xx, 429 or unreachable:
        assume everything is disallowed. This is the first request to the host, so there is nothing to wait for."""
        url = origin + "/robots.txt"
        robots = RobotFileParser(url)
        request = Request(url, headers={"User-Agent": self.user_agent})
        status, body = None, b""
        try:
            with self.robots_opener.open(request, timeout=self.timeout_s) as response:
                status, body = response.status, response.read(ROBOTS_MAX_BYTES)
        except HTTPError as err:
            status = err.code
            err.close()
        except FETCH_ERRORS as err:
            self.log(f"robots.txt unreachable {url}: {type(err).__name__}: {err}")
        last_request = time.monotonic()
        self.stats["robots_fetched"] += 1
        delay = self.delay_s
        if status is not None and 200 <= status < 300:
            lines = body.decode("utf-8", errors="replace").splitlines()
            robots.parse(lines)
            delay = max(delay, crawl_delay(lines, self.user_agent) or 0.0)
            self.log(f"robots.txt {url}: {status}, parsed; {delay:g} s between requests")
        elif status is not None and 300 <= status < 500 and status != 429:  # 3xx: too many redirects
            robots.allow_all = True
            self.log(f"robots.txt {url}: {status}, everything allowed")
        else:
            robots.disallow_all = True
            self.log(f"robots.txt {url}: {status or 'unreachable'}, nothing will be fetched from {origin}")
        return _Host(robots=robots, delay_s=delay, last_request=last_request)


def crawl_site(seeds: list[str], out: str | os.PathLike, *, max_pages: int = 100, delay_s: float = 1.0,
               same_domain: bool = True, user_agent: str = "LLMFactoryBot/0.1", timeout_s: float = 10.0,
               max_page_bytes: int = 5_000_000, log: Callable[[str], None] | None = None) -> Counter:
    """Crawl breadth-first from `seeds` into the gzip WARC `out`; return the stats.

    At most `max_pages` page requests (failed ones included, robots.txt not); at least max(delay_s, the host's
    Crawl-delay) seconds between the end of one request to a host and the start of the next. Bodies over
    `max_page_bytes` are cut there and marked WARC-Truncated: length. `out` appears only when the crawl finished.
    """
    if not seeds:
        raise ValueError("crawl_site: no seeds given")
    if max_pages < 0 or delay_s < 0 or timeout_s <= 0 or max_page_bytes <= 0:
        raise ValueError(f"crawl_site: need max_pages >= 0, delay_s >= 0, timeout_s > 0, max_page_bytes > 0; got "
                         f"{max_pages=}, {delay_s=}, {timeout_s=}, {max_page_bytes=}")
    normalized = []
    for seed in seeds:
        url = normalize_url(seed)
        if url is None:
            raise ValueError(f"crawl_site: seed {seed!r} is not an absolute http(s) URL")
        normalized.append(url)
    crawler = _Crawler(list(dict.fromkeys(normalized)), max_pages=max_pages, delay_s=delay_s, same_domain=same_domain,
                       user_agent=user_agent, timeout_s=timeout_s, max_page_bytes=max_page_bytes,
                       log=log or (lambda _msg: None))
    out = Path(out)
    with atomic_file(out, "wb") as fh:  # KeyboardInterrupt too: never leave a partial WARC behind
        stats = crawler.run(_WarcOut(fh, out.name, user_agent, crawler.seeds))
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Politely crawl your own site(s) into a gzip WARC.")
    parser.add_argument("seeds", nargs="+", metavar="SEED", help="start URL(s), e.g. https://example.org/")
    parser.add_argument("--out", required=True, help="output WARC, e.g. site.warc.gz")
    parser.add_argument("--max-pages", type=int, default=100, help="page requests at most (default 100)")
    parser.add_argument("--delay", type=float, default=1.0,
                        help="seconds between requests to one host, raised to its robots.txt Crawl-delay (default 1)")
    parser.add_argument("--any-domain", action="store_true", help="also follow links to other hosts")
    parser.add_argument("--user-agent", default="LLMFactoryBot/0.1")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    args = parser.parse_args(argv)
    try:
        stats = crawl_site(args.seeds, args.out, max_pages=args.max_pages, delay_s=args.delay,
                           same_domain=not args.any_domain, user_agent=args.user_agent, timeout_s=args.timeout,
                           log=lambda msg: print(msg, file=sys.stderr))
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps({"out": args.out, **dict(sorted(stats.items()))}, indent=2))


if __name__ == "__main__":
    main()
