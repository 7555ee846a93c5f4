"""The built-in sample data (a WARC rendered from installed documentation, a labeling inbox) under `<workdir>/samples`.

Built on first use and then kept, so `builtin:sample` behaves like any other crawl path or inbox folder.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from data.chat.labels import LabelsConfig
from data.samples import BUILTIN_SAMPLE
from data.sources.config import CrawlConfig, SourceSpec
from model.identity import IdentityConfig


def sample_dir(workdir: Path) -> Path:
    return Path(workdir).resolve() / "samples"


def sample_warc(workdir: Path, pages: int) -> Path:
    """`<workdir>/samples/crawl-<pages>.warc.gz`, built if missing (atomically: complete or absent)."""
    from data.samples.warc import build_sample_warc

    path = sample_dir(workdir) / f"crawl-{pages}.warc.gz"
    if not path.exists():
        build_sample_warc(path, max_pages=pages)
    return path


def sample_pages(warc: Path, limit: int = 200) -> list[dict]:
    """A few extracted pages of the sample crawl, for labeling tasks built from the crawl's own content."""
    from data.cleaning.extract import raw_to_document
    from data.sources.quarantine import Quarantine
    from data.sources.readers import read_sources

    pages: list[dict] = []
    scratch = warc.parent / ".pages-quarantine.jsonl"
    with Quarantine(scratch) as q:
        for raw in read_sources([str(warc)], q, Counter()):
            doc = raw_to_document(raw)
            if doc and len(doc["text"].split()) > 30:
                title = doc["url"].rstrip("/").rsplit("/", 1)[-1].removesuffix(".html")
                pages.append({"title": title, "url": doc["url"], "text": doc["text"]})
            if len(pages) >= limit:
                break
    scratch.unlink(missing_ok=True)
    return pages


def generator_version() -> str:
    """A hash of the label generator's code (its skills, tools and formats): an edit there makes a new sample inbox."""
    from tasks.core.code import code_hash

    return code_hash("data.samples.labels")[:8]


def sample_inbox(workdir: Path, cfg: LabelsConfig, pages: int, identity: IdentityConfig | None = None) -> Path:
    """`<workdir>/samples/inbox-.../`: generated conversations and comparisons, as labelers would deliver them; with
    `identity`, its name and maker in the identity answers and its system message in a share of the conversations.
    The folder's name holds everything the files depend on, so a changed setting makes a new inbox."""
    from data.samples.labels import build_label_inbox

    name = f"inbox-{cfg.sample_conversations}-{cfg.sample_comparisons}-{cfg.seed}-{pages}-{generator_version()}"
    if identity is not None:
        name += f"-{identity.data_key()}"
    path = sample_dir(workdir) / name
    if not path.exists():
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_label_inbox(
            tmp,
            sample_pages(sample_warc(workdir, pages)),
            n_conversations=cfg.sample_conversations,
            n_comparisons=cfg.sample_comparisons,
            seed=cfg.seed,
            identity=identity,
        )
        try:
            os.replace(tmp, path)
        except OSError:  # another process built the same inbox meanwhile: same seed, same files
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def crawl_sources(cfg: CrawlConfig, workdir: Path) -> list[SourceSpec]:
    """The crawl's sources with their weights, 'builtin:sample' replaced by the sample WARC's path."""
    return [spec.model_copy(update={"source": str(sample_warc(workdir, cfg.sample_pages))})
            if spec.source == BUILTIN_SAMPLE else spec for spec in cfg.specs()]


def inbox_dir(cfg: LabelsConfig, workdir: Path, pages: int, identity: IdentityConfig | None = None) -> Path:
    """The labels inbox: the folder `labels.inbox` names, or the built-in sample generated for `identity`."""
    if cfg.inbox == BUILTIN_SAMPLE:
        return sample_inbox(workdir, cfg, pages, identity)
    return Path(cfg.inbox).expanduser()
