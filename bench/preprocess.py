"""Documents/s of our crawl reading + preprocess against datatrove configured with the same blocks, in the same run.

Input: the built-in sample crawl (data.samples.warc.build_sample_warc, --pages documentation pages plus its ~20 noise
records), concatenated --copies times into one gzip WARC, so the copies are near-duplicates that MinHash removes on
both sides. Built once (untimed) in --workdir and reused by later runs that name the same folder.

Baseline: datatrove (0.10.x) as its examples/fineweb.py and examples/minhash_deduplication.py wire it, on a
LocalPipelineExecutor with tasks = workers = --workers:
    stage A  WarcReader -> URLFilter -> Trafilatura(favour_precision=True) -> language filter (en > 0.65)
             -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter(filter_no_terminal_punct=False)
             -> FineWebQualityFilter -> JsonlWriter(filtered) -> MinhashDedupSignature
    stage B  MinhashDedupBuckets (14 buckets x 8 hashes, 5-grams, 64-bit xxhash; one task per bucket)
    stage C  MinhashDedupCluster (1 task)
    stage D  JsonlReader(filtered) -> MinhashDedupFilter -> JsonlWriter(output)
Its wall clock covers building the steps and all four stages (process pools included). datatrove parallelises over
input files, so it reads the same records split (untimed, at gzip-member boundaries) into --workers shard files.
Ours: tasks.preprocess.preprocess_warc(the same shard files, workers=--workers): the crawl stage's reading (FastWARC,
warcio for damaged records), then the preprocess pipeline, once per --engines extraction engine (Resiliparse, the
default, and trafilatura as datatrove runs it). docs/s = response records read / wall seconds; per core = docs/s /
workers. The ratio is ours with the default engine over datatrove.

Quality, untimed, on the sample crawl's pages and on each --crawl WARC (each URL once): per page, the share of
trafilatura's words (favor_precision, FineWeb's) the other engine keeps, median and p10; the share of pages whose
keep/drop decision after FineWeb's filters changes between the engines; the three pages (of 50+ trafilatura words)
they disagree on most.

Fixed costs included on the datatrove side: process pools per stage, and each stage-A task loading URLFilter's
block lists (~4.6M domains, seconds per task): on a small crawl they weigh, --copies amortises them.

Workarounds on the datatrove side (this machine reaches no hub and has no NLTK/fastText data):
- LanguageFilter downloads fastText lid.176 from the hub at first use: replaced by Py3LangidFilter (a datatrove
  BaseFilter) calling our language step's classifier, data.cleaning.langid.detect (py3langid's normalised model, shipped
  inside the package, on the same first characters), so the stand-in for fastText costs datatrove what it costs
  us. It keeps a document when P(en) > 0.65, as LanguageFilter(languages=["en"], language_threshold=0.65); the top
  label suffices: normalised probabilities sum to 1, so P(en) > 0.65 exactly when "en" is top with score > 0.65.
- Word tokenizer: datatrove 0.10 maps English to spaCy's blank "en" tokenizer (no NLTK punkt any more; spacy.blank
  needs no model download), used by the Gopher, C4 (sentences), FineWeb and MinHash steps. spaCy is not in
  datatrove[processing]; without it, --words split passes a WordTokenizer instance as their `language` (datatrove's
  load_word_tokenizer accepts one): str.split() words (lighter than our filters' regex words, which approximate
  spaCy's; tests/data/test_datatrove_parity.py gives datatrove our own splitting) and the sentence regex of
  datatrove's WhitespaceTokenizer. --words auto (default) takes spacy when it imports. Not only slower: spaCy
  splits punctuation off words, so Gopher's alphabetic-word ratio drops most code-heavy pages (on 200 sample
  pages: 4 kept with spacy, 28 with split).
- URLFilter: its TLDExtract() would fetch the public suffix list on first use; it gets TLDExtract(suffix_list_urls=())
  instead, which reads the snapshot tldextract ships (or its cache). Its block lists ship inside datatrove
  (assets/url_filterblacklistsv0_3_0.tar.gz, extracted once into the huggingface_hub assets cache: warmed up
  untimed before the first round; each task still loads them).
- WarcReader needs python-magic (+ the system libmagic) and faust-cchardet at construction, and sniffs every
  payload with libmagic when WARC-Identified-Payload-Type is missing (as in our sample), dropping what it misjudges.
  Without them --reader http (auto's fallback) is WarcReader with datatrove's own record handling except the mime
  type, taken from the HTTP Content-Type header (as our reader trusts it), and charset detection, done with
  charset_normalizer (trafilatura's dependency) when the payload is not UTF-8.
- MinhashDedupSignature hashes str n-grams with xxhash, which xxhash >= 4 refuses (datatrove[processing] pins
  xxhash < 4, and trafilatura < 1.12, which this project's trafilatura >= 2 excludes): Utf8MinhashSignature hashes
  their UTF-8 bytes with the same xxh64 when the installed xxhash needs it.
- Trafilatura runs each task's extraction in a sandbox process with a per-document timeout (1 s, its default, as
  FineWeb ran it): a loaded machine turns slow pages into timeouts, which drop them; the funnel line counts them.

Usage: python bench/preprocess.py [--pages 600] [--copies 4] [--workers 2] [--rounds 1] [--workdir DIR]
       [--words auto|spacy|split] [--reader auto|datatrove|http] [--extract-timeout 1] [--baseline-only]
       [--engines resiliparse,trafilatura] [--crawl OTHER.warc.gz ...]
Rounds alternate who goes first (untimed cleanup between runs); medians are compared.
Last line: `ratio: X.XX` (ours docs/s / datatrove docs/s).
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py shadows the standard library's `tokenize` for scripts in this folder: keep it off the path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gzip  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

# Not datatrove[processing]: it pins trafilatura < 1.12 and xxhash < 4.
DATATROVE_DEPS = ('pip install "datatrove>=0.10.1,<0.11" "tldextract>=5" "pyahocorasick>=2" "fasteners>=0.19" '
                  '"xxhash>=3" "orjson>=3" regex  (or pip install -e ".[bench]"; datatrove\'s stock word tokenizer and '
                  'WARC reader also need spacy>=3.8, python-magic + libmagic1, faust-cchardet)')
LANGUAGE, LANGUAGE_THRESHOLD = "en", 0.65
MINHASH = {"n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8}


# --- input --------------------------------------------------------------------------------------------------------


def gzip_members(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, first decompressed bytes) of each gzip member: one WARC record each in our WARCs."""
    view, start = memoryview(data), 0
    while start < len(data):
        inflater, pos, head = zlib.decompressobj(wbits=31), start, b""
        while not inflater.eof:
            if pos >= len(data):
                raise ValueError(f"truncated gzip member at byte {start}")
            chunk = view[pos:pos + (1 << 16)]
            pos += len(chunk)
            out = inflater.decompress(chunk)
            if len(head) < 512:
                head += out[:512]
        end = pos - len(inflater.unused_data)
        yield start, end, head
        start = end


def build_input(workdir: Path, pages: int, copies: int, shards: int) -> tuple[Path, Path, int]:
    """(the WARC, a folder of `shards` WARC files holding the same records, response records in it)."""
    from data.samples.warc import build_sample_warc

    sample = workdir / f"sample-{pages}.warc.gz"
    if not sample.exists():
        print(f"building the sample crawl ({pages} pages)...", flush=True)
        build_sample_warc(sample, max_pages=pages)
    warc = workdir / f"crawl-{pages}x{copies}.warc.gz"
    if not warc.exists():
        warc.write_bytes(sample.read_bytes() * copies)
    data = warc.read_bytes()
    members = list(gzip_members(data))
    responses = sum(b"WARC-Type: response\r\n" in head for _, _, head in members)

    shard_dir = workdir / f"shards-{pages}x{copies}-{shards}"
    if not shard_dir.exists():
        tmp = shard_dir.with_name(shard_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        bounds = [0]  # contiguous runs of whole records, about len(data) / shards bytes each
        for i in range(1, shards):
            bounds.append(next((s for s, _, _ in members if s >= i * len(data) // shards and s >= bounds[-1]),
                               len(data)))
        bounds.append(len(data))
        for i in range(shards):
            (tmp / f"shard-{i:05d}.warc.gz").write_bytes(data[bounds[i]:bounds[i + 1]])
        tmp.rename(shard_dir)
    return warc, shard_dir, responses


# --- datatrove ------------------------------------------------------------------------------------------------------


def resolve_choices(args: argparse.Namespace) -> tuple[str, str]:
    """--words / --reader auto -> datatrove's stock block when its optional dependencies import, else our stand-in."""
    def have(*modules: str) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in modules)

    words = args.words if args.words != "auto" else ("spacy" if have("spacy") else "split")
    reader = args.reader if args.reader != "auto" else ("datatrove" if have("magic", "cchardet") else "http")
    if words == "spacy" and not have("spacy"):
        raise SystemExit("--words spacy: spaCy is not installed (pip install spacy), or pass --words split")
    if reader == "datatrove" and not have("magic", "cchardet"):
        raise SystemExit("--reader datatrove: needs pip install python-magic faust-cchardet (and the system libmagic)"
                         ", or pass --reader http")
    return words, reader


def datatrove_blocks(words: str, reader: str, extract_timeout: float) -> dict:
    """The steps datatrove lacks offline (see the module docstring), built on its own base classes."""
    import xxhash
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.filters.base_filter import BaseFilter
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.readers.base import BaseDiskReader
    from datatrove.utils.word_tokenizers import WhitespaceTokenizer

    class Py3LangidFilter(BaseFilter):
        """LanguageFilter(languages=[LANGUAGE], language_threshold=LANGUAGE_THRESHOLD) on our language step's
        classifier (data.cleaning.langid.detect: py3langid, the same first characters of the text)."""

        name = "🌍 Language ID (py3langid)"

        def filter(self, doc) -> bool:
            from data.cleaning.langid import detect

            lang, score = detect(doc.text)
            doc.metadata["language"], doc.metadata["language_score"] = lang, score
            return lang == LANGUAGE and score > LANGUAGE_THRESHOLD

    class SplitWordTokenizer(WhitespaceTokenizer):
        """str.split() words (WhitespaceTokenizer's own needs spaCy); its sentence regex is kept."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

    class HttpWarcReader(BaseDiskReader):
        """WarcReader taking the mime type from the HTTP Content-Type header instead of libmagic. A sibling, not a
        subclass: datatrove checks the dependencies of every class in the MRO."""

        name = "🕷 Warc (HTTP Content-Type)"
        _requires_dependencies = ["warcio"]

        def __init__(self, data_folder: str, compression: str | None = "infer", **kwargs) -> None:
            self.compression = compression
            super().__init__(data_folder, **kwargs)

        def read_file(self, filepath: str):
            from warcio.archiveiterator import ArchiveIterator

            with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
                for ri, record in enumerate(ArchiveIterator(f)):
                    with self.track_time():
                        extracted = http_process_record(record)
                        document = self.get_document_from_dict(extracted, filepath, ri) if extracted else None
                    if document:
                        yield document

    def http_process_record(record) -> dict | None:
        """datatrove's process_record, but the mime type and charset come from the HTTP header."""
        if record.rec_type != "response" or record.http_headers is None:
            return None
        mime, _, params = (record.http_headers.get_header("Content-Type") or "").partition(";")
        if mime.strip().lower() not in ("text/html", "application/xhtml+xml"):
            return None
        content = record.content_stream().read()
        try:
            html = content.decode("utf-8")
        except UnicodeDecodeError:  # datatrove asks cchardet here; charset_normalizer is trafilatura's dependency
            declared = params.partition("charset=")[2].strip().strip('"').lower() or None
            if declared is None:
                import charset_normalizer
                best = charset_normalizer.from_bytes(content).best()
                declared = best.encoding if best else None
            try:
                html = content.decode(declared or "utf-8")
            except (UnicodeDecodeError, LookupError):
                return None
        return {"text": html, "id": record.rec_headers.get_header("WARC-Record-ID"),
                "url": record.rec_headers.get_header("WARC-Target-URI"),
                "date": record.rec_headers.get_header("WARC-Date")}

    class Utf8MinhashSignature(MinhashDedupSignature):
        """MinhashDedupSignature hashing each n-gram's UTF-8 bytes: xxhash >= 4 refuses str (datatrove's processing
        extra pins xxhash < 4, which this project's other packages may not allow)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if getattr(self._hash_func, "__name__", "") in ("xxhash32", "xxhash64") and not xxhash_takes_str():
                digest = xxhash.xxh64_intdigest if self.config.hash_config.precision == 64 else xxhash.xxh32_intdigest
                self._hash_func = lambda text: digest(text.encode("utf-8"))

    return {
        "signature": Utf8MinhashSignature,
        "language": Py3LangidFilter,
        "words": LANGUAGE if words == "spacy" else SplitWordTokenizer(),
        "reader": WarcReader if reader == "datatrove" else HttpWarcReader,
        "extract_timeout": extract_timeout,
    }


def datatrove_executors(shards: Path, out: Path, workers: int, blocks: dict):
    """The four stages (module docstring); running the last runs the others first."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        URLFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from tldextract import TLDExtract

    words = blocks["words"]
    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=())  # the suffix list tldextract ships: no fetch
    config = MinhashConfig(hash_config=HashConfig(precision=64), **MINHASH)
    stage_a = LocalPipelineExecutor(pipeline=[
        blocks["reader"](str(shards)),
        url_filter,
        Trafilatura(favour_precision=True, timeout=blocks["extract_timeout"]),
        blocks["language"](),
        GopherRepetitionFilter(language=words),
        GopherQualityFilter(language=words),
        C4QualityFilter(filter_no_terminal_punct=False, language=words),
        FineWebQualityFilter(language=words),
        JsonlWriter(str(out / "filtered")),
        blocks["signature"](output_folder=str(out / "signatures"), config=config, language=words),
    ], tasks=workers, workers=workers, logging_dir=str(out / "logs/a"))
    stage_b = LocalPipelineExecutor(pipeline=[
        MinhashDedupBuckets(input_folder=str(out / "signatures"), output_folder=str(out / "buckets"), config=config),
    ], tasks=config.num_buckets, workers=workers, logging_dir=str(out / "logs/b"), depends=stage_a)
    stage_c = LocalPipelineExecutor(pipeline=[
        MinhashDedupCluster(input_folder=str(out / "buckets"), output_folder=str(out / "remove_ids"), config=config),
    ], tasks=1, workers=1, logging_dir=str(out / "logs/c"), depends=stage_b)
    return LocalPipelineExecutor(pipeline=[
        JsonlReader(str(out / "filtered")),
        MinhashDedupFilter(input_folder=str(out / "remove_ids")),
        JsonlWriter(str(out / "output")),
    ], tasks=workers, workers=workers, logging_dir=str(out / "logs/d"), depends=stage_c)


def count_jsonl(folder: Path) -> int:
    n = 0
    for path in folder.glob("*.jsonl.gz"):
        with gzip.open(path, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


def xxhash_takes_str() -> bool:
    import xxhash

    try:
        xxhash.xxh64_intdigest("n-gram")
        return True
    except TypeError:
        return False


def warm_up_datatrove() -> None:
    """Untimed, once: import datatrove and extract URLFilter's shipped block lists into the assets cache."""
    try:
        from datatrove.pipeline.filters import URLFilter
    except ImportError as e:
        raise SystemExit(f"datatrove side: {e}\n  fix: {DATATROVE_DEPS}") from e
    URLFilter().download_data()


def datatrove_child(args: argparse.Namespace) -> None:
    """One timed datatrove run, in a process of its own session (see run_datatrove); writes its seconds."""
    out = args.workdir / "datatrove"
    blocks = datatrove_blocks(args.words, args.reader, args.extract_timeout)
    datatrove_executors(args.datatrove_child, out, args.workers, blocks)  # untimed: imports what the steps use
    start = time.perf_counter()
    datatrove_executors(args.datatrove_child, out, args.workers, blocks).run()
    seconds = time.perf_counter() - start
    (out / "result.json").write_text(json.dumps({"seconds": seconds}))


def run_datatrove(shards: Path, workdir: Path, workers: int, words: str, reader: str,
                  extract_timeout: float) -> tuple[int, float]:
    """(documents kept, wall seconds) of the whole datatrove run.

    It runs in a child process that leads a new session, logging to workdir/datatrove.log (its tasks log every step
    to stderr), and the session is killed afterwards: the Trafilatura sandbox processes of a task that failed
    outlive it and would hold this script's output open.
    """
    log = workdir / "datatrove.log"
    cmd = [sys.executable, os.path.abspath(__file__), "--datatrove-child", str(shards), "--workdir", str(workdir),
           "--workers", str(workers), "--words", words, "--reader", reader, "--extract-timeout", str(extract_timeout)]
    with open(log, "ab") as fh:
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = child.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
    result = workdir / "datatrove" / "result.json"
    if rc != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{tail}\ndatatrove run failed (exit {rc}; its log: {log})\n"
                         f"  if a package is missing: {DATATROVE_DEPS}")
    return count_jsonl(workdir / "datatrove" / "output"), json.loads(result.read_text())["seconds"]


def datatrove_funnel(workdir: Path) -> str:
    """Documents left after each step, from datatrove's own stats (logs/*/stats.json) of the last run."""
    counts = []
    for stage in "ad":
        path = workdir / f"datatrove/logs/{stage}/stats.json"
        for step in json.loads(path.read_text()) if path.exists() else []:
            stats, name = step.get("stats", {}), step["name"].split(": ", 1)[-1]
            kept = stats.get("forwarded", stats.get("documents", stats.get("total")))
            kept = kept.get("total") if isinstance(kept, dict) else kept  # readers count {"total": n, ...}
            if "WRITER" not in step["name"] and "stage 1" not in name and (stage == "a" or "stage 4" in name):
                counts.append(f"{name} {kept}" + (f" ({stats['timeout']} timeouts)" if stats.get("timeout") else ""))
    return " -> ".join(counts)


# --- ours -----------------------------------------------------------------------------------------------------------


def run_ours(shards: Path, workdir: Path, workers: int, engine: str) -> tuple[int, int, str]:
    """(response records read, documents kept, the funnel) of our crawl reading + preprocess on the same WARC files
    as datatrove (FineWeb's default thresholds on both sides), extracting with `engine`."""
    from data.cleaning.config import ExtractOptions, PreprocessConfig
    from tasks.preprocess import preprocess_warc

    cfg = PreprocessConfig(extract=ExtractOptions(engine=engine))
    report = preprocess_warc(sorted(shards.glob("*.warc.gz")), workdir / "ours", workers=workers, cfg=cfg)
    steps = report["report"].steps
    funnel = " -> ".join(f"{name} {step['docs_out']}" for name, step in steps.items())
    print(f"  ours ({engine}): {funnel}", flush=True)
    return report["records"], report["kept"], funnel


# --- extraction quality: each engine against trafilatura, page by page ----------------------------------------------


def word_share(kept: str, reference: str) -> float:
    """The share of `reference`'s words (counted with repeats) that `kept` has too."""
    from collections import Counter

    ref = Counter(reference.split())
    return sum((ref & Counter(kept.split())).values()) / max(1, sum(ref.values()))


def quality(crawls: list[Path], engine: str) -> None:
    """Per page of each crawl (each URL once): the share of trafilatura's words `engine` keeps (median, p10), the
    share of pages whose keep/drop decision after FineWeb's filters changes, and the three biggest disagreements."""
    from collections import Counter

    from data.cleaning.config import ExtractOptions, PreprocessConfig
    from data.cleaning.extract import raw_to_document
    from data.cleaning.filters import apply_filters, build_filters
    from data.sources.quarantine import Quarantine
    from data.sources.readers import read_sources

    filters = build_filters(PreprocessConfig())
    ours, theirs = ExtractOptions(engine=engine), ExtractOptions(engine="trafilatura")
    for crawl in crawls:
        pages, seen = [], set()
        with tempfile.TemporaryDirectory() as tmp, Quarantine(Path(tmp) / "q.jsonl") as quarantine:
            for raw in read_sources([str(crawl)], quarantine, Counter()):
                if raw.url in seen or raw.content_type == "text/plain":
                    continue
                seen.add(raw.url)
                a, b = raw_to_document(raw, ours), raw_to_document(raw, theirs)
                kept = [bool(list(apply_filters([d], filters, Counter()))) if d else False for d in (a, b)]
                pages.append({"url": raw.url, "ours": a["text"] if a else "", "theirs": b["text"] if b else "",
                              "kept": kept})
        scored = [p | {"share": word_share(p["ours"], p["theirs"])} for p in pages if p["theirs"].split()]
        shares = sorted(p["share"] for p in scored)
        changed = sum(p["kept"][0] != p["kept"][1] for p in pages)
        words = [len(p["ours"].split()) / max(1, len(p["theirs"].split())) for p in scored]
        print(f"quality on {crawl.name} ({len(pages)} HTML pages, {len(scored)} with trafilatura text): {engine} keeps "
              f"a median {statistics.median(shares):.1%} (p10 {shares[len(shares) // 10]:.1%}) of trafilatura's "
              f"words, output {statistics.median(words):.2f}x its words (median); keep/drop after FineWeb's filters "
              f"changes on {changed} pages ({changed / max(1, len(pages)):.1%}): kept by {engine} only "
              f"{sum(p['kept'] == [True, False] for p in pages)}, by trafilatura only "
              f"{sum(p['kept'] == [False, True] for p in pages)}", flush=True)
        for p in sorted([p for p in scored if len(p["theirs"].split()) >= 50], key=lambda p: p["share"])[:3]:
            missing = Counter(p["theirs"].split()) - Counter(p["ours"].split())
            print(f"  biggest disagreement: {p['url']}: {p['share']:.0%} of trafilatura's "
                  f"{len(p['theirs'].split())} words ({engine}: {len(p['ours'].split())}); missing e.g. "
                  f"{' '.join(list(missing)[:12])!r}", flush=True)


def warm_up_ours() -> None:
    """Untimed, once: import our side, as warm_up_datatrove imports datatrove."""
    try:
        from tasks.preprocess import preprocess_warc  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"our side: {e} (tasks.preprocess.preprocess_warc); to time datatrove alone: "
                         "--baseline-only") from e


# --- main -----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pages", type=int, default=600, help="documentation pages in the sample crawl")
    parser.add_argument("--copies", type=int, default=4, help="the sample crawl concatenated this many times")
    parser.add_argument("--workers", type=int, default=2, help="processes for each side")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where the WARC and outputs go (kept); default: a temp dir")
    parser.add_argument("--words", choices=["auto", "spacy", "split"], default="auto",
                        help="datatrove's word tokenizer: spacy (its stock English one) or str.split")
    parser.add_argument("--reader", choices=["auto", "datatrove", "http"], default="auto",
                        help="datatrove's WARC reader: stock (libmagic sniffing) or HTTP Content-Type")
    parser.add_argument("--extract-timeout", type=float, default=1.0,
                        help="datatrove's Trafilatura per-document timeout (s), its default")
    parser.add_argument("--baseline-only", action="store_true", help="run datatrove only (no ratio)")
    parser.add_argument("--engines", default="resiliparse,trafilatura",
                        help="our extraction engines to time (the ratio is the default engine's, resiliparse)")
    parser.add_argument("--crawl", type=Path, action="append", default=[],
                        help="another WARC to measure extraction quality on, besides the sample crawl (repeatable)")
    parser.add_argument("--datatrove-child", type=Path, help=argparse.SUPPRESS)  # shards: run_datatrove's child
    args = parser.parse_args()
    if args.datatrove_child:
        return datatrove_child(args)
    if min(args.pages, args.copies, args.workers, args.rounds) < 1:
        parser.error("--pages, --copies, --workers and --rounds must be >= 1")
    words, reader = resolve_choices(args)
    from data.cleaning.extract import ENGINES, ExtractOptions

    engines = [e for e in args.engines.split(",") if e]
    default = ExtractOptions().engine
    if unknown := [e for e in engines if e not in ENGINES]:
        parser.error(f"--engines: unknown {unknown}; known: {list(ENGINES)}")
    if default not in engines and not args.baseline_only:
        parser.error(f"--engines must include the default engine, {default}: the ratio is its")

    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-preprocess-")))
        else:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        warc, shards, responses = build_input(workdir, args.pages, args.copies, args.workers)
        print(f"input: {warc.name} ({warc.stat().st_size / 1e6:.1f} MB, {responses} response records), "
              f"{args.workers} workers, datatrove words={words} reader={reader}", flush=True)
        warm_up_datatrove()
        if not args.baseline_only:
            warm_up_ours()
        (workdir / "datatrove.log").write_bytes(b"")

        def datatrove() -> tuple[float, int]:
            shutil.rmtree(workdir / "datatrove", ignore_errors=True)
            kept, seconds = run_datatrove(shards, workdir, args.workers, words, reader, args.extract_timeout)
            return responses / seconds, kept

        funnels: dict[str, str] = {}

        def ours(engine: str) -> tuple[float, int]:
            shutil.rmtree(workdir / "ours", ignore_errors=True)
            start = time.perf_counter()
            read, kept, funnels[engine] = run_ours(shards, workdir, args.workers, engine)
            seconds = time.perf_counter() - start
            if read != responses:
                print(f"  note: ours read {read} records, the WARC has {responses} response records")
            return responses / seconds, kept

        runs = [("datatrove", datatrove)] + ([] if args.baseline_only else
                                             [(f"ours ({e})", lambda e=e: ours(e)) for e in engines])
        rates: dict[str, list[float]] = {name: [] for name, _ in runs}
        kept: dict[str, int] = {}
        for r in range(args.rounds):
            for name, fn in (runs if r % 2 == 0 else runs[::-1]):
                rate, kept[name] = fn()
                rates[name].append(rate)
            print(f"round {r}: " + " | ".join(f"{name} {rates[name][-1]:,.1f} docs/s ({kept[name]} kept)"
                                              for name, _ in runs), flush=True)

        print(f"datatrove, last run: {datatrove_funnel(workdir)}")
        for engine, funnel in funnels.items():
            print(f"ours ({engine}), last run: {funnel}")
        for name, _ in runs:
            rate = statistics.median(rates[name])
            print(f"{name}: {rate:,.1f} docs/s, {rate / args.workers:,.1f} docs/s per core, "
                  f"{kept[name]} of {responses} documents kept")
        if not args.baseline_only:
            for engine in [e for e in engines if e != "trafilatura"]:
                quality([workdir / f"sample-{args.pages}.warc.gz", *args.crawl], engine)
            ours_rate = statistics.median(rates[f"ours ({default})"])
            print(f"ratio: {ours_rate / statistics.median(rates['datatrove']):.2f}")


if __name__ == "__main__":
    main()
