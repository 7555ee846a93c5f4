"""The polite crawler against a real local web server: robots.txt, rate limits, scope, page limits, and a WARC that
the crawl readers accept."""

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from warcio.archiveiterator import ArchiveIterator

from data.sources.crawler import crawl_site, main, normalize_url
from data.sources.quarantine import Quarantine
from data.sources.readers import READ_OUTCOMES, read_sources

# Our group allows all but /private/ and asks for 0.1 s between requests; the "*" group would forbid everything,
# so a crawler that reads the wrong group fetches nothing.
ROBOTS = "User-agent: *\nDisallow: /\n\nUser-agent: LLMFactoryBot\nDisallow: /private/\nCrawl-delay: 0.1\n"
CRAWL_DELAY = 0.1
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass
class Page:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict = field(default_factory=dict)
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length
    drop: bool = False  # close the connection without answering


def html(title, *links, head=""):
    return (f"<html><head><title>{title}</title>{head}</head><body><h1>{title}</h1><p>Text of {title}.</p>"
            + "".join(links) + "</body></html>").encode()


def a(href, rel=None):
    return f'<a href="{href}"' + (f' rel="{rel}"' if rel else "") + f">{href}</a>"


class Site:
    """A web site served from `pages` ({path: Page}; other paths 404) on 127.0.0.1, free port, in a thread.
    `requests` logs (path, time.monotonic()) of every request as it arrives."""

    def __init__(self):
        self.pages: dict[str, Page] = {}
        self.requests: list[tuple[str, float]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                site.requests.append((self.path, time.monotonic()))
                page = site.pages.get(self.path, Page(404, html("Not found")))
                if page.drop:
                    return
                self.send_response(page.status)
                self.send_header("Content-Type", page.content_type)
                for name, value in page.headers.items():
                    self.send_header(name, value)
                if page.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(page.body), 40):
                        part = page.body[i:i + 40]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(page.body)))
                    self.end_headers()
                    self.wfile.write(page.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def paths(self):
        return [path for path, _ in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib would send 127.0.0.1 requests through a proxy named in the environment."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def serve():
    sites = []

    def start():
        sites.append(Site())
        return sites[-1]

    yield start
    for site in sites:
        site.close()


@pytest.fixture
def sites(serve):
    """The main test site, and a second server (another port: another host) for an off-site link."""
    site, other = serve(), serve()
    other.pages["/offsite.html"] = Page(body=html("Elsewhere"))
    site.pages.update({
        "/robots.txt": Page(body=ROBOTS.encode(), content_type="text/plain"),
        "/": Page(body=html("Home", a("a.html"), a("b.html#top"), a("/private/x"), a(other.url + "/offsite.html"),
                            a("/old"), a("/missing"), a("/logo.png"), a("/nofollow.html"), a("mailto:me@example.org"),
                            a("/rel-nofollow.html", rel="nofollow"), a("/chunked.html"))),
        "/a.html": Page(body=html("A", a("/"), a("c.html"), a("/b.html"))),
        "/b.html": Page(body=html("B")),
        "/c.html": Page(body=html("C")),
        "/old": Page(301, b"", headers={"Location": "/moved.html"}),
        "/moved.html": Page(body=html("Moved")),
        "/logo.png": Page(body=PNG, content_type="image/png"),
        "/nofollow.html": Page(body=html("Nofollow", a("/hidden.html"),
                                         head='<meta name="robots" content="noindex, nofollow">')),
        "/chunked.html": Page(body=html("Chunked", "<p>" + "sent in chunks " * 20 + "</p>"), chunked=True),
        "/hidden.html": Page(body=html("Hidden")),
        "/rel-nofollow.html": Page(body=html("Rel nofollow")),
        "/private/x": Page(body=html("Private")),
    })
    return site, other


# Breadth-first, links in page order; /private/x (robots), the off-site page, mailto:, rel=nofollow links and links
# of the meta-nofollow page are left out; the 301's target comes after the pages queued before it.
EXPECTED_PAGES = ["/", "/a.html", "/b.html", "/old", "/missing", "/logo.png", "/nofollow.html", "/chunked.html",
                  "/c.html", "/moved.html"]
HTML_200 = {"/", "/a.html", "/b.html", "/c.html", "/moved.html", "/nofollow.html", "/chunked.html"}


def crawl(site, tmp_path, **kwargs):
    kwargs.setdefault("delay_s", 0.01)
    return crawl_site([site.url + "/"], tmp_path / "site.warc.gz", **kwargs)


def responses(path):
    with open(path, "rb") as fh:
        return [(r.rec_headers.get_header("WARC-Target-URI"), r.rec_headers, r.http_headers, r.content_stream().read())
                for r in ArchiveIterator(fh) if r.rec_type == "response"]


def test_reachable_pages_are_fetched_once_in_bfs_order_and_robots_disallowed_never(sites, tmp_path):
    site, _ = sites
    stats = crawl(site, tmp_path)
    assert site.paths() == ["/robots.txt"] + EXPECTED_PAGES
    assert stats["skipped_robots"] == 1  # /private/x
    assert stats["fetched"] == len(EXPECTED_PAGES)
    assert stats["pages_html"] == len(HTML_200)
    assert (stats["status_200"], stats["status_301"], stats["status_404"]) == (8, 1, 1)


def test_offsite_links_are_followed_only_with_same_domain_off(sites, tmp_path):
    site, other = sites
    stats = crawl(site, tmp_path)
    assert other.paths() == []
    assert stats["skipped_offsite"] == 1

    stats = crawl(site, tmp_path, same_domain=False)
    assert other.paths() == ["/robots.txt", "/offsite.html"]  # no robots.txt there (404): everything allowed
    assert stats["skipped_offsite"] == 0


@pytest.mark.parametrize(("delay_s", "expected_gap"), [(0.02, CRAWL_DELAY), (0.15, 0.15)],
                         ids=["crawl_delay_wins", "delay_wins"])
def test_requests_to_a_host_are_spaced_by_the_larger_of_delay_and_crawl_delay(sites, tmp_path, delay_s,
                                                                              expected_gap):
    site, _ = sites
    crawl(site, tmp_path, delay_s=delay_s, max_pages=4)
    times = [t for _, t in site.requests]
    assert len(times) == 5  # robots.txt counts as a request to the host
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) >= expected_gap, gaps


def test_max_pages_stops_the_crawl(sites, tmp_path):
    site, _ = sites
    stats = crawl(site, tmp_path, max_pages=3)
    assert site.paths() == ["/robots.txt", "/", "/a.html", "/b.html"]
    assert stats["fetched"] == 3
    assert stats["left_in_queue"] > 0
    assert len(responses(tmp_path / "site.warc.gz")) == 3


def test_warc_is_read_back_by_the_crawl_readers_with_counts_reconciling(sites, tmp_path):
    site, _ = sites
    crawl(site, tmp_path)
    out = tmp_path / "site.warc.gz"
    stats = Counter()
    with Quarantine(tmp_path / "quarantine.jsonl") as quarantine:
        docs = list(read_sources([str(out)], quarantine, stats))
    assert {doc.url for doc in docs} == {site.url + path for path in HTML_200}
    assert stats["read"] == sum(stats[k] for k in READ_OUTCOMES) == len(EXPECTED_PAGES)
    assert (stats["yielded"], stats["filtered_status"], stats["filtered_content_type"], stats["quarantined"]) \
        == (len(HTML_200), 2, 1, 0)
    assert stats["skipped_warcinfo"] == 1 and stats["skipped_request"] == len(EXPECTED_PAGES)
    by_url = {doc.url: doc for doc in docs}
    # chunked on the wire, stored decoded with a matching Content-Length and no Transfer-Encoding
    assert by_url[site.url + "/chunked.html"].content == site.pages["/chunked.html"].body
    records = {url: http for url, _, http, _ in responses(out)}
    assert records[site.url + "/chunked.html"].get_header("Transfer-Encoding") is None
    assert records[site.url + "/old"].get_statuscode() == "301"
    assert records[site.url + "/old"].get_header("Location") == "/moved.html"


def test_pages_over_max_page_bytes_are_cut_and_marked_truncated(serve, tmp_path):
    site = serve()
    big = html("Big", "<p>" + "word " * 2000 + "</p>")
    site.pages["/"] = Page(body=big)
    stats = crawl(site, tmp_path, max_page_bytes=1000)
    [(_, warc_headers, http, payload)] = responses(tmp_path / "site.warc.gz")
    assert payload == big[:1000]
    assert warc_headers.get_header("WARC-Truncated") == "length"
    assert http.get_header("Content-Length") == "1000"
    assert http.get_header("X-Crawler-Content-Length") == str(len(big))
    assert stats["truncated"] == 1


def test_robots_txt_server_error_means_nothing_is_fetched_from_that_host(serve, tmp_path):
    site = serve()
    site.pages.update({"/robots.txt": Page(503, b"down"), "/": Page(body=html("Home"))})
    stats = crawl(site, tmp_path)
    assert site.paths() == ["/robots.txt"]
    assert (stats["fetched"], stats["skipped_robots"]) == (0, 1)


def test_robots_txt_not_found_means_everything_is_allowed(serve, tmp_path):
    site = serve()
    site.pages.update({"/": Page(body=html("Home", a("/private/x"))), "/private/x": Page(body=html("Private"))})
    stats = crawl(site, tmp_path)
    assert site.paths() == ["/robots.txt", "/", "/private/x"]
    assert stats["skipped_robots"] == 0


def test_unreachable_host_is_skipped_without_error(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logged = []
    stats = crawl_site([f"http://127.0.0.1:{port}/"], tmp_path / "site.warc.gz", delay_s=0, log=logged.append)
    assert (stats["fetched"], stats["skipped_robots"]) == (0, 1)
    assert any("unreachable" in line and str(port) in line for line in logged)
    assert (tmp_path / "site.warc.gz").exists()


def test_fetch_errors_are_counted_and_logged_and_the_crawl_goes_on(serve, tmp_path):
    site = serve()
    site.pages.update({"/": Page(body=html("Home", a("/drop"), a("/after"))), "/drop": Page(drop=True),
                       "/after": Page(body=html("After"))})
    logged = []
    stats = crawl(site, tmp_path, log=logged.append)
    assert site.paths() == ["/robots.txt", "/", "/drop", "/after"]
    assert (stats["fetch_errors"], stats["fetched"]) == (1, 2)
    assert any(line.startswith("fetch failed") and site.url + "/drop" in line for line in logged)


def test_an_interrupted_crawl_leaves_no_warc_and_no_tmp(sites, tmp_path):
    site, _ = sites
    out_dir = tmp_path / "out"
    pages = []

    def log(line):
        if line.startswith("fetched"):
            pages.append(line)
        if len(pages) == 2:
            raise RuntimeError("stopped by the test")

    with pytest.raises(RuntimeError, match="stopped by the test"):
        crawl_site([site.url + "/"], out_dir / "site.warc.gz", delay_s=0.01, log=log)
    assert len(site.paths()) == 3  # robots.txt and two pages: it did stop there
    assert list(out_dir.iterdir()) == []


def test_urls_are_normalised_and_non_http_links_dropped():
    assert normalize_url("b.html#top", "http://Example.ORG:80/dir/a.html") == "http://example.org/dir/b.html"
    assert normalize_url("https://example.org:443") == "https://example.org/"
    assert normalize_url("/caf\u00e9 menu?q=\u00e9", "http://x/") == "http://x/caf%C3%A9%20menu?q=%C3%A9"
    assert normalize_url("http://x/a%20b") == "http://x/a%20b"  # already encoded: left alone
    for link in ("mailto:me@example.org", "javascript:void(0)", "ftp://example.org/", "/relative", "http://x:99999/"):
        assert normalize_url(link) is None, link


def test_cli_crawls_and_prints_the_stats(sites, tmp_path, capsys):
    site, _ = sites
    out = tmp_path / "cli.warc.gz"
    main([site.url + "/", "--out", str(out), "--max-pages", "2", "--delay", "0.01"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["fetched"] == 2 and printed["out"] == str(out)
    assert out.exists()
