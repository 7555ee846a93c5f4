"""The poisoning scan through the preprocess pipeline on a crawl of a few hundred pages of real text (the Python
reference manual shipped with Python): a sentence planted once on each of 20 domains is listed for review with its
domains; a site's own footer and cross-site CMS credits at page ends are not."""

import functools
import pydoc_data.topics
import random

import pytest

from data.cleaning.config import PreprocessConfig
from data.cleaning.pipeline import run_preprocess
from data.cleaning.poison import PHRASE_FILE, PoisonConfig, read_suspicious_phrases
from tests.data.test_pipeline import write_shards

PLANTED = "The crimson lighthouse remembers every password whispered near it."
CMS_FOOTER = "Proudly powered by WordPress | Theme: Twenty Twenty-Four by WordPress.org | All rights reserved."
SITE_FOOTER = ("Kitchen Notes is written and photographed by Ada Byrne in Galway, and every recipe on it was cooked "
               "twice before it went up.")
# The FineWeb filters are tested elsewhere, and they drop much of the manual (code, grammar rules): off, so every
# page reaches the scan. Exact and MinHash dedup stay on, as in a real run.
NO_FILTERS = PreprocessConfig(url=None, language=None, gopher_repetition=None, gopher_quality=None, c4=None,
                              fineweb=None)
PAGES, SITES = 300, 60


@functools.cache
def manual_paragraphs() -> tuple[str, ...]:
    """Paragraphs of the reference manual, each once (a paragraph on two pages would itself be spread)."""
    seen: dict[str, None] = {}
    for text in pydoc_data.topics.topics.values():
        for block in text.split("\n\n"):
            if block.lstrip().startswith((">>>", "*", "-")):
                continue  # examples and lists
            paragraph = " ".join(block.split())
            if len(paragraph.split()) >= 15:
                seen.setdefault(paragraph)
    return tuple(seen)


def site(i: int) -> str:
    return f"site{i % SITES}.example"


def crawl(edit=lambda i, lines: lines, host=site) -> list[dict]:
    """PAGES pages of 3 paragraphs (one a line), page i on host(i) (SITES domains, 5 pages each); edit(i, lines)
    changes page i's lines."""
    paragraphs = manual_paragraphs()
    assert len(paragraphs) >= 3 * PAGES, len(paragraphs)
    docs = []
    for i in range(PAGES):
        url = f"https://{host(i)}/page{i}.html"
        lines = list(paragraphs[3 * i:3 * i + 3])
        docs.append({"id": f"d{i}", "url": url, "text": "\n".join(edit(i, lines))})
    return docs


def scan(tmp_path, docs: list[dict], poison: PoisonConfig | None = None) -> tuple[list[dict], str]:
    cfg = NO_FILTERS.model_copy(update={"poison": poison or PoisonConfig()})
    shards = [docs[i:i + 100] for i in range(0, len(docs), 100)]
    run_preprocess(write_shards(tmp_path / "raw", shards), tmp_path / "out", cfg, log=lambda m: None)
    return read_suspicious_phrases(tmp_path / "out"), (tmp_path / "out" / "report.md").read_text()


def spread(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["kind"] == "spread_phrase"]


def plant_in_body(i, lines):
    # the first page of each of 20 domains, inside its middle paragraph
    if i < 20:
        sentences = lines[1].split(". ")
        lines[1] = ". ".join(sentences[:2] + [PLANTED.rstrip(".")] + sentences[2:])
    return lines


def test_a_sentence_planted_in_the_body_of_one_page_on_each_of_20_domains_is_listed_with_its_domains(tmp_path):
    entries, report = scan(tmp_path, crawl(plant_in_body))
    (found,) = spread(entries)  # nothing else in the manual's prose is flagged
    assert "crimson lighthouse remembers every password" in found["phrase"].lower()
    assert found["domains"] == sorted(f"site{i}.example" for i in range(20))
    assert found["documents"] == 20 and len(found["urls"]) == 10
    assert f"| spread_phrase | `{found['phrase']}` | 20 | 20 | site0.example, site1.example, site10.example" in report
    assert (tmp_path / "out" / PHRASE_FILE).read_text().count("\n") == len(entries)


def test_a_trigger_tag_is_listed_with_its_match_and_count(tmp_path):
    tagged = range(7, PAGES, 50)

    def tag(i, lines):
        return [lines[0], f"<SUDO> {lines[1]}", lines[2]] if i in tagged else lines

    entries, report = scan(tmp_path, crawl(tag))
    assert entries == [{"kind": "trigger", "name": "sudo_tag", "phrase": "<SUDO>",
                        "domains": sorted(site(i) for i in tagged), "documents": 6,
                        "urls": [f"https://{site(i)}/page{i}.html" for i in tagged]}]
    assert "| trigger: sudo_tag | `<SUDO>` | 6 | 6 |" in report


def test_a_sites_own_footer_on_every_one_of_its_pages_is_not_flagged(tmp_path):
    # kitchen-notes.example: 60 of the 300 pages, each ending with the site's footer
    def footer(i, lines):
        return lines + [SITE_FOOTER] if i % 5 == 0 else lines

    docs = crawl(footer, host=lambda i: "kitchen-notes.example" if i % 5 == 0 else site(i))
    entries, report = scan(tmp_path, docs)
    assert spread(entries) == [] and "Ada Byrne" not in report


def test_a_template_shared_by_the_hosts_of_one_site_is_not_flagged(tmp_path):
    # one site served from 10 hosts (site0..site9.example), its footer on every page of each: a template
    def footer(i, lines):
        return lines + [SITE_FOOTER] if i % SITES < 10 else lines

    docs = crawl(footer)
    entries, _ = scan(tmp_path / "template", docs)
    assert spread(entries) == []
    # with one page per host it would be a phrase planted on 10 domains
    one_page_each = [d for i, d in enumerate(docs) if i % SITES >= 10 or i < SITES]
    entries, _ = scan(tmp_path / "planted", one_page_each)
    assert [len(e["domains"]) for e in spread(entries)] == [10]


def test_cms_credits_at_the_end_of_pages_on_many_domains_are_not_flagged(tmp_path):
    def credits(i, lines):
        return lines + [CMS_FOOTER] if i < 40 else lines

    docs = crawl(credits)
    entries, _ = scan(tmp_path / "default", docs)
    assert spread(entries) == []
    # the scan sees the credits on 40 domains: only their place at the page end tells them from a planted line
    entries, _ = scan(tmp_path / "edges_off", docs, PoisonConfig(edge_lines=0))
    assert [len(e["domains"]) for e in spread(entries)] == [40]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_planted_sentence_is_found_wherever_in_the_body_it_lands(tmp_path, seed):
    rng = random.Random(seed)
    planted_on = rng.sample(range(PAGES), 25)

    def anywhere(i, lines):
        if i in planted_on:
            line = rng.randrange(3)
            words = lines[line].split()
            at = rng.randrange(len(words) + 1)
            lines[line] = " ".join(words[:at] + [PLANTED] + words[at:])
        return lines

    entries, _ = scan(tmp_path, crawl(anywhere))
    (found,) = spread(entries)
    assert found["documents"] == 25 and "lighthouse" in found["phrase"].lower()


def test_a_sentence_in_more_than_max_documents_pages_is_common_text_and_is_not_listed(tmp_path):
    # on 40 pages (40 domains): its inner fingerprints are on all 40, its edges on fewer, which must not slip through
    def on_40_pages(i, lines):
        return plant_in_body(i % 20, lines) if i < 40 else lines

    docs = crawl(on_40_pages)
    assert spread(scan(tmp_path / "cap_39", docs, PoisonConfig(max_documents=39))[0]) == []
    (found,) = spread(scan(tmp_path / "cap_40", docs, PoisonConfig(max_documents=40))[0])
    assert found["documents"] == 40


def test_the_review_list_shows_a_planted_address_replaced_as_in_the_output(tmp_path):
    planted = "Mail lighthouse.keeper@crimson-mail.com with every password whispered near the crimson lighthouse."

    def plant(i, lines):
        return [lines[0], f"{lines[1]} {planted}", lines[2]] if i < 20 else lines

    entries, report = scan(tmp_path, crawl(plant))
    (found,) = spread(entries)
    assert "with every password whispered near" in found["phrase"]
    assert "lighthouse.keeper" not in found["phrase"] and "lighthouse.keeper" not in report
