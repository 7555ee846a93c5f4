"""The `crawl:` config section: the sources (paths, globs, URLs, Common Crawl listings, hf: datasets), their mix,
the polite web crawl of the user's own site, and how the files are read."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from data.samples import BUILTIN_SAMPLE
from model.config import RUNTIME


class SourceSpec(BaseModel):
    """One crawl source with its weight in the mix."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="A path, glob, directory, URL, '.paths[.gz]' file, 'hf:...' or 'builtin:sample'.")
    weight: float = Field(1.0, gt=0, description="Relative share of documents drawn from this source.")


class WebCrawlConfig(BaseModel):
    """A polite crawl of the user's own site (data/sources/crawler.py), added to the sources as a WARC."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[str] = Field([], description="Start URLs; empty: no web crawl.")
    max_pages: int = Field(100, ge=1)
    delay_s: float = Field(1.0, ge=0, description="Seconds between requests to a host (robots.txt Crawl-delay wins).")
    same_domain: bool = Field(True, description="Follow links to the seeds' hosts only.")
    user_agent: str = "LLMFactoryBot/0.1"
    weight: float = Field(1.0, gt=0, description="Its weight when the sources are a weighted mix.")


class CrawlConfig(BaseModel):
    """Which crawls, files and datasets to read, how, and into how many shards."""

    model_config = ConfigDict(extra="forbid")
    sources: list[str | SourceSpec] = Field(
        default=[BUILTIN_SAMPLE],
        description=(
            "WARC/WET files, parquet/JSONL documents, local or any fsspec URL (s3:// needs s3fs, https://, "
            "memory://...), globs, directories, Common Crawl '.paths'/'.paths.gz' listings, "
            "'hf:NAME[@REVISION][:CONFIG][:SPLIT]' or 'builtin:sample'. Plain strings only: read one after "
            "another, each in full. With any {source, weight} item, each item (plain strings weigh 1) is a group "
            "of a weighted mix: documents are interleaved group by group with probability proportional to weight, "
            "deterministically from `seed`, until the first group runs out (datasets' interleave_datasets "
            "'first_exhausted') or `max_documents`; a single source is read in full."
        ),
    )
    seed: int = Field(0, description="Seed of the weighted mix's draws: the same seed gives the same order.")
    paths_base_url: str = Field(
        "https://data.commoncrawl.org", description="What the relative paths of a '.paths[.gz]' source are joined to."
    )
    max_files_per_source: int | None = Field(
        None, ge=1, description="Keep only the first N files of each glob, directory or paths file (None: all)."
    )
    max_page_bytes: int = Field(
        5_000_000, gt=0, description="Skip (count as filtered_too_large) payloads over this size; CC caps at 1 MiB."
    )
    sample_pages: int = Field(400, description="Pages rendered into the built-in sample WARC.")
    max_documents: int | None = Field(None, description="Stop after this many documents (None: read everything).")
    rows_per_shard: int = 50_000
    web: WebCrawlConfig = WebCrawlConfig()
    workers: int = Field(0, ge=0, json_schema_extra=RUNTIME,
                         description="Processes reading source files in parallel (0: all cores).")
    dask_address: str | None = Field(None, json_schema_extra=RUNTIME,
                                     description="A Dask scheduler (tcp://host:8786): files are read there.")

    def specs(self) -> list[SourceSpec]:
        """Every source as a SourceSpec (plain strings weigh 1)."""
        return [SourceSpec(source=s) if isinstance(s, str) else s for s in self.sources]

    @property
    def weighted(self) -> bool:
        """Whether the sources form a weighted mix (any {source, weight} item) rather than a plain list."""
        return any(isinstance(s, SourceSpec) for s in self.sources)
