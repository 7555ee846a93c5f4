"""The preprocess pipeline over shards: per-shard filtering, run-wide dedup and poisoning scan, per-shard output.

    1. filter_shard (one job per raw shard, in parallel): URL filter -> text extraction -> language -> Gopher
       repetition -> Gopher quality -> C4 -> FineWeb rules; survivors are written to a work shard together with
       their exact-text hash, MinHash band keys and phrase fingerprints (numpy files).
    2. plan_removals (once, over all shards; 16 bytes per document for one MinHash bucket at a time, 1/16 of the
       phrase fingerprints at a time, and a few bytes per duplicate found): exact duplicates,
       MinHash near-duplicate clusters, phrases planted on many domains; the result is a small per-shard list.
    3. finish_shard (one job per shard, in parallel): drop the duplicates, flag (or drop) suspected poisoning,
       replace PII, split train/val by document id, write `documents/{train,val}-SHARD-*.parquet`.
    Then the flagged phrases and trigger hits are listed for review in `suspicious_phrases.jsonl`.

Every step counts documents and bytes in and out, and why it dropped what it dropped (with a few examples), so
    read == kept + dropped by every step + quarantined
holds for every run. A document's id in steps 2-3 is (shard << 32 | row): the smallest id wins every tie, so the
output is byte-identical whatever the number of workers or the order they finish in.
"""

from __future__ import annotations

import json
import resource
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.cleaning.base import Filter
from data.cleaning.config import PreprocessConfig
from data.cleaning.extract import ExtractOptions, html_to_text
from data.cleaning.filters import FILTER_KEYS as FILTER_KEYS  # re-exported: tests read it here
from data.cleaning.filters import build_filters
from data.cleaning.minhash import HashedWords, MinHashConfig, MinHasher, duplicates_by_key, hash64, near_duplicates
from data.cleaning.pii import PII
from data.cleaning.poison import (
    PHRASE_FILE,
    PoisonConfig,
    PoisonScanner,
    common_phrases,
    domain_of,
    phrases_markdown,
    summarize_hits,
    suspicious_phrases,
    write_suspicious_phrases,
)
from data.cleaning.split import split_of, text_hash
from data.sources.quarantine import Quarantine, merge_quarantine
from data.tokens.documents import Document, ShardWriter, read_documents
from model.files import atomic_write_text

MAX_EXAMPLES = 3
ROW_BITS = 32
PHRASE_PARTITIONS = 16  # the poisoning scan holds 1/16 of the run's phrase fingerprints in memory at a time
PHRASE_COLUMNS = 4  # fingerprint, domain hash, document id, on a boilerplate line (0/1)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def bytes_after(doc: Document, result: Document, nbytes: int) -> int:
    """UTF-8 size of a step's output: measured again only when the step rewrote the text."""
    return nbytes if result["text"] is doc["text"] else utf8_len(result["text"])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Report:
    """Per step: documents and bytes in and out, drops by reason, and the first few examples of each reason."""

    def __init__(self, steps: dict[str, dict] | None = None):
        self.steps: dict[str, dict] = steps or {}

    def _step(self, name: str) -> dict:
        if name not in self.steps:
            self.steps[name] = {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0, "dropped": {},
                                "flagged": {}, "examples": {}}
        return self.steps[name]

    def passed(self, name: str, bytes_in: int, bytes_out: int) -> None:
        step = self._step(name)
        step["docs_in"] += 1
        step["docs_out"] += 1
        step["bytes_in"] += bytes_in
        step["bytes_out"] += bytes_out

    def dropped(self, name: str, reason: str, doc: Document, nbytes: int) -> None:
        step = self._step(name)
        step["docs_in"] += 1
        step["bytes_in"] += nbytes
        step["dropped"][reason] = step["dropped"].get(reason, 0) + 1
        self._example(step, reason, doc)

    def flagged(self, name: str, reason: str, doc: Document, detail: str = "") -> None:
        """Counted and shown, not dropped (the document also passes or drops through this step separately)."""
        step = self._step(name)
        step["flagged"][reason] = step["flagged"].get(reason, 0) + 1
        self._example(step, reason, doc, detail)

    @staticmethod
    def _example(step: dict, reason: str, doc: Document, detail: str = "") -> None:
        examples = step["examples"].setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            text = " ".join(str(doc.get("text") or "").split())[:160]
            examples.append({"id": doc["id"], "url": doc.get("url", ""), "text": text, **({"detail": detail}
                                                                                           if detail else {})})

    def merge(self, other: Report) -> None:
        """Add another shard's report (merged in shard order, so examples are the same in every run)."""
        for name, theirs in other.steps.items():
            ours = self._step(name)
            for key in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
                ours[key] += theirs[key]
            for key in ("dropped", "flagged"):
                for reason, n in theirs[key].items():
                    ours[key][reason] = ours[key].get(reason, 0) + n
            for reason, examples in theirs["examples"].items():
                mine = ours["examples"].setdefault(reason, [])
                mine.extend(examples[:MAX_EXAMPLES - len(mine)])

    def dropped_total(self) -> int:
        return sum(sum(step["dropped"].values()) for step in self.steps.values())

    def markdown(self, title: str = "preprocess") -> str:
        lines = [f"### {title}: documents and bytes through each step", "",
                 "| step | docs in | docs out | dropped | bytes in | bytes out | drop reasons |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        for name, step in self.steps.items():
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(step["dropped"].items(), key=lambda x: -x[1]))
            flagged = ", ".join(f"{r} {n} (flagged)" for r, n in sorted(step["flagged"].items()))
            why = "; ".join(filter(None, [reasons, flagged]))
            lines.append(f"| {name} | {step['docs_in']:,} | {step['docs_out']:,} | {sum(step['dropped'].values()):,} "
                         f"| {step['bytes_in']:,} | {step['bytes_out']:,} | {why} |")
        lines += ["", "### Examples of each drop reason", ""]
        for name, step in self.steps.items():
            for reason, examples in step["examples"].items():
                lines.append(f"**{name} / {reason}**")
                for ex in examples:
                    detail = f" — {ex['detail']}" if ex.get("detail") else ""
                    text = ex["text"].replace("|", "\\|").replace("`", "'")
                    lines.append(f"- `{ex['id']}` {ex['url']}{detail}: {text}")
                lines.append("")
        return "\n".join(lines)


class Extract(Filter):
    """HTML -> main text with the configured engine (text/plain documents pass through stripped)."""

    name = "extract"

    def __init__(self, options: ExtractOptions):
        self.options = options

    def apply(self, doc: Document) -> Document | str:
        if "html" not in doc["meta"].get("content_type", "text/html"):
            text = doc["text"].strip()
        else:
            text = html_to_text(doc["text"], doc["url"], options=self.options) or ""
        return {**doc, "text": text} if text else "no_text"


def steps_for(cfg: PreprocessConfig) -> list[Filter]:
    """URL filter, extraction, then the quality filters, in FineWeb's order."""
    filters = build_filters(cfg)
    url = [f for f in filters if f.name == "url"]
    return url + [Extract(cfg.extract)] + [f for f in filters if f.name != "url"]


def _minhash(cfg: PreprocessConfig) -> MinHashConfig | None:
    return cfg.minhash if cfg.minhash.enabled else None


def _poison(cfg: PreprocessConfig) -> PoisonConfig | None:
    return cfg.poison if cfg.poison.enabled else None


def _work_paths(work: Path, index: int) -> dict[str, Path]:
    return {name: work / f"{name}-{index:05d}{suffix}" for name, suffix in
            (("docs", ".parquet"), ("exact", ".npy"), ("bands", ".npy"), ("triggers", ".json"),
             ("quarantine", ".jsonl"))}


class PhraseWriter:
    """(fingerprint, domain, document id, on a boilerplate line) rows of one shard, hash-partitioned into
    PHRASE_PARTITIONS files as they come (flushed every `flush_rows`), so neither the worker nor the run-wide scan
    holds a shard's phrases at once."""

    def __init__(self, work: Path, index: int, flush_rows: int = 200_000):
        self.paths = [_phrase_path(work, index, part) for part in range(PHRASE_PARTITIONS)]
        self.flush_rows = flush_rows
        self._pending: list[np.ndarray] = []
        self._rows = 0
        for path in self.paths:
            path.write_bytes(b"")

    def add(self, fingerprints: np.ndarray, on_boilerplate: np.ndarray, domain: int, gid: int) -> None:
        rows = np.empty((len(fingerprints), PHRASE_COLUMNS), dtype=np.uint64)
        rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = fingerprints, domain, gid, on_boilerplate
        self._pending.append(rows)
        self._rows += len(rows)
        if self._rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows = np.concatenate(self._pending)
        parts = (rows[:, 0] % np.uint64(PHRASE_PARTITIONS)).astype(np.int64)
        rows = rows[np.argsort(parts, kind="stable")]
        bounds = np.concatenate(([0], np.cumsum(np.bincount(parts, minlength=PHRASE_PARTITIONS))))
        for part, path in enumerate(self.paths):
            if bounds[part + 1] > bounds[part]:
                with open(path, "ab") as fh:
                    fh.write(rows[bounds[part]:bounds[part + 1]].tobytes())
        self._pending, self._rows = [], 0


def _phrase_path(work: Path, index: int, part: int) -> Path:
    return work / f"phrases-{index:05d}-{part:02d}.bin"


def filter_shard(job: dict) -> dict:
    """Step 1 for one shard. job: {"index", "path", "work", "config" (a PreprocessConfig)}; returns {"report",
    "rows", "docs", "peak_rss_mb"}."""
    cfg: PreprocessConfig = job["config"]
    index, work = job["index"], Path(job["work"])
    paths = _work_paths(work, index)
    steps = steps_for(cfg)
    minhasher = MinHasher(p) if (p := _minhash(cfg)) else None
    scanner = PoisonScanner(p) if (p := _poison(cfg)) else None
    report = Report()
    exact, bands, triggers = [], [], {}
    phrases = PhraseWriter(work, index) if scanner else None
    rows = 0
    with Quarantine(paths["quarantine"]) as quarantine, \
            ShardWriter(work, paths["docs"].stem, rows_per_shard=2**31) as writer:
        for doc in read_documents([job["path"]]):
            report.passed("read", nbytes := utf8_len(doc["text"]), nbytes)
            for step in steps:
                try:
                    result = step.apply(doc)
                except Exception as exc:  # a page a step chokes on is kept aside with its reason, never lost
                    quarantine.add(doc, doc.get("url", ""), f"{step.name} failed: {type(exc).__name__}: {exc}")
                    report.dropped(step.name, "quarantined", doc, nbytes)
                    break
                if isinstance(result, str):
                    report.dropped(step.name, result, doc, nbytes)
                    break
                new_bytes = bytes_after(doc, result, nbytes)
                report.passed(step.name, nbytes, new_bytes)
                doc, nbytes = result, new_bytes
            else:
                gid = (index << ROW_BITS) | rows
                exact.append(int.from_bytes(text_hash(doc["text"])[:8], "little"))
                hashed = HashedWords.of(doc["text"]) if minhasher or scanner else None
                if minhasher:
                    bands.append(minhasher.band_keys(hashed))
                if scanner:
                    if found := scanner.triggers(doc["text"]):
                        triggers[rows] = found
                    fingerprints, on_boilerplate = scanner.placed_fingerprints(doc["text"], hashed)
                    phrases.add(fingerprints, on_boilerplate, hash64(domain_of(doc.get("url", ""))), gid)
                writer.write(doc)
                rows += 1
    np.save(paths["exact"], np.array(exact, dtype=np.uint64))
    np.save(paths["bands"], np.stack(bands) if bands else np.zeros((0, 0), np.uint64))
    if phrases:
        phrases.flush()
    paths["triggers"].write_text(json.dumps(triggers))
    return {"report": report.steps, "rows": rows, "docs": [str(p) for p in writer.paths],
            "peak_rss_mb": peak_rss_mb()}


def plan_removals(work: Path, shard_rows: Sequence[int], cfg: PreprocessConfig) -> dict[int, dict]:
    """Step 2: {shard: {"drop": {row: step}, "poison": {row: [reasons]}, "phrases": {row: [fingerprints]},
    "common": {row: [fingerprints of common text]}}} (see _plan_poison)."""
    n_shards = len(shard_rows)
    plan: dict[int, dict] = {i: {"drop": {}, "poison": {}, "phrases": {}, "common": {}} for i in range(n_shards)}
    removed: set[int] = set()

    def mark(ids: np.ndarray, step: str) -> None:
        for gid in ids.tolist():
            if gid not in removed:
                removed.add(gid)
                plan[gid >> ROW_BITS]["drop"][gid & ((1 << ROW_BITS) - 1)] = step

    def ids_of(i: int) -> np.ndarray:
        return (np.uint64(i) << np.uint64(ROW_BITS)) | np.arange(shard_rows[i], dtype=np.uint64)

    ids = np.concatenate([ids_of(i) for i in range(n_shards)]).astype(np.int64)  # every document, shard order
    if cfg.exact_dedup:
        hashes = np.concatenate([np.load(_work_paths(work, i)["exact"]) for i in range(n_shards)])
        mark(duplicates_by_key(hashes, ids), "exact_dedup")
    params = _minhash(cfg)
    if params:
        def buckets():
            for b in range(params.buckets):
                keys = [np.load(_work_paths(work, i)["bands"], mmap_mode="r") for i in range(n_shards)]
                yield np.concatenate([k[:, b] for k in keys if len(k)] or [np.zeros(0, np.uint64)]), ids
        mark(near_duplicates(buckets()), "minhash")
    poison = _poison(cfg)
    if poison:
        _plan_poison(work, n_shards, plan, removed, poison)
    return plan


def _plan_poison(work: Path, n_shards: int, plan: dict[int, dict], removed: set[int], params: PoisonConfig) -> None:
    mask = (1 << ROW_BITS) - 1
    for i in range(n_shards):
        for row, names in json.loads(_work_paths(work, i)["triggers"].read_text()).items():
            if ((i << ROW_BITS) | int(row)) not in removed:
                plan[i]["poison"].setdefault(int(row), []).extend(f"trigger:{n}" for n in names)
    removed_ids = np.array(sorted(removed), dtype=np.uint64)

    def partition(part: int) -> np.ndarray:
        rows = np.concatenate([np.fromfile(_phrase_path(work, i, part), dtype=np.uint64).reshape(-1, PHRASE_COLUMNS)
                               for i in range(n_shards)])
        return rows[~np.isin(rows[:, 2], removed_ids)]

    flagged_ids: set[int] = set()
    for part in range(PHRASE_PARTITIONS):
        rows = partition(part)
        flagged = suspicious_phrases(rows[:, 0], rows[:, 1], rows[:, 2].astype(np.int64), params,
                                     boilerplate=rows[:, 3] != 0)
        for gid, fps in flagged.items():
            shard_plan = plan[gid >> ROW_BITS]
            row = gid & mask
            flagged_ids.add(gid)
            shard_plan["phrases"].setdefault(row, []).extend(fps)
            if "spread_phrase" not in shard_plan["poison"].get(row, []):
                shard_plan["poison"].setdefault(row, []).append("spread_phrase")
    if not flagged_ids:
        return
    # Winnowing keeps a shared phrase's inner fingerprints on every page that has it, but those at its edges only on
    # some (they depend on the words around it): common text can show a rare-looking edge. The flagged documents'
    # fingerprints of common text go to finish_shard, which unflags a phrase found beside one (a second read of
    # the partitions, only when something was flagged).
    ids = np.array(sorted(flagged_ids), dtype=np.uint64)
    for part in range(PHRASE_PARTITIONS):
        rows = partition(part)
        rows = rows[np.isin(rows[:, 0], common_phrases(rows[:, 0], params)) & np.isin(rows[:, 2], ids)]
        for fp, gid in rows[:, [0, 2]].tolist():
            plan[gid >> ROW_BITS]["common"].setdefault(gid & mask, []).append(fp)


def finish_shard(job: dict) -> dict:
    """Step 3 for one shard. job: {"index", "out", "config" (a PreprocessConfig), "plan", "docs" (step 1's files)};
    returns {"report", "splits", "hits" (the poisoning scan's, for summarize_hits), "peak_rss_mb"}."""
    cfg: PreprocessConfig = job["config"]
    index, out = job["index"], Path(job["out"])
    plan = job["plan"]
    drop, poison_flags, phrases, common = plan["drop"], plan["poison"], plan["phrases"], plan["common"]
    scanner = PoisonScanner(p) if (p := _poison(cfg)) else None
    pii = PII(cfg.pii) if cfg.pii is not None else None

    def redact(text: str) -> str:
        return pii.replace(text)[0] if pii is not None else text

    report = Report()
    splits = {"train": Counter(), "val": Counter()}
    hits: list[dict] = []
    dedup_steps = dedup_steps_for(cfg)
    with ShardWriter(out, f"train-{index:05d}") as train, ShardWriter(out, f"val-{index:05d}") as val:
        for row, doc in enumerate(read_documents(job["docs"])):
            nbytes = utf8_len(doc["text"])
            step = drop.get(row)
            for name in dedup_steps:
                if step == name:
                    report.dropped(name, "exact_duplicate" if name == "exact_dedup" else "near_duplicate",
                                   doc, nbytes)
                    break
                report.passed(name, nbytes, nbytes)
            else:
                if scanner:
                    reasons = poison_flags.get(row, [])
                    if reasons:
                        found = _poison_hits(scanner, doc, (index << ROW_BITS) | row, phrases.get(row),
                                             common.get(row), redact)
                        if "spread_phrase" in reasons and not any(h["kind"] == "spread_phrase" for h in found):
                            reasons = [r for r in reasons if r != "spread_phrase"]  # only edges of common text
                        hits += found
                        shown = {**doc, "text": redact(doc["text"])}  # the report shows no PII the output lacks
                        for reason in reasons:
                            detail = ""
                            if reason == "spread_phrase":
                                spans = [hit["phrase"] for hit in found if hit["kind"] == "spread_phrase"]
                                detail = f"phrase: {max(spans, key=len)!r}"
                            report.flagged("poison", reason, shown, detail)
                        if reasons and cfg.poison.drop:
                            report.dropped("poison", reasons[0], shown, nbytes)
                            continue
                    report.passed("poison", nbytes, nbytes)
                    if reasons:
                        doc = {**doc, "meta": {**doc["meta"], "poison": reasons}}
                if pii is not None:
                    result = pii.apply(doc)
                    new_bytes = bytes_after(doc, result, nbytes)
                    report.passed("pii", nbytes, new_bytes)
                    for kind, n in sorted((result["meta"].get("pii") or {}).items()):
                        report.flagged("pii", f"{kind}_replaced", result, f"{n} replaced")  # never the original
                    doc, nbytes = result, new_bytes
                split = split_of(doc["id"], cfg.val_fraction, cfg.seed)
                (val if split == "val" else train).write(doc)
                splits[split]["docs"] += 1
                splits[split]["chars"] += len(doc["text"])
                splits[split]["bytes"] += nbytes
    return {"report": report.steps, "splits": {k: dict(v) for k, v in splits.items()}, "hits": hits,
            "peak_rss_mb": peak_rss_mb()}


def _poison_hits(scanner: PoisonScanner, doc: Document, gid: int, fingerprints: list[int] | None,
                 common: list[int] | None, redact: Callable[[str], str]) -> list[dict]:
    """A flagged document's entries for the review list: each trigger match and each span of flagged phrases that
    is not beside common text, shown with its PII replaced as in the output."""
    where = {"doc": gid, "domain": domain_of(doc.get("url", "")), "url": doc.get("url", "")}
    hits = [{"kind": "trigger", "name": name, "phrase": redact(match), **where}
            for name, match in scanner.trigger_hits(doc["text"])]
    if fingerprints:
        hits += [{"kind": "spread_phrase", "fingerprints": fps, "phrase": redact(text), **where}
                 for fps, text in scanner.phrase_spans(doc["text"], set(fingerprints), set(common or ()))]
    return hits


def dedup_steps_for(cfg: PreprocessConfig) -> tuple[str, ...]:
    steps = ("exact_dedup",) if cfg.exact_dedup else ()
    return steps + (("minhash",) if _minhash(cfg) else ())


MapFn = Callable[[Callable[[Any], Any], Sequence[Any], str], list[Any]]


def serial_map(fn: Callable[[Any], Any], items: Sequence[Any], name: str = "shard") -> list[Any]:
    return [fn(item) for item in items]


def run_preprocess(raw_files: Sequence[Path], out: Path, cfg: PreprocessConfig | Mapping[str, Any],
                   map_fn: MapFn = serial_map, log: Callable[[str], None] = print) -> dict:
    """All three steps over `raw_files` (raw document shards); outputs in `out`: documents/, quarantine.jsonl,
    report.md and, with the poisoning scan on, suspicious_phrases.jsonl (its flagged phrases, also listed in the
    report).

    `cfg` is a PreprocessConfig; a mapping (as in YAML) or an object with the same fields is validated into one
    here, before any job starts, so the jobs only ever see a valid config. Returns {"report": Report, "markdown":
    report.md's text, "counts": {...}, "suspicious_phrases": [...] (None with the scan off), "peak_rss_mb": ...};
    the work files are removed at the end."""
    cfg = PreprocessConfig.model_validate(cfg, from_attributes=True)
    if not raw_files:
        raise ValueError("preprocess: no raw document shards to read (did the crawl keep any documents?)")
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    jobs = [{"index": i, "path": str(p), "work": str(work), "config": cfg} for i, p in enumerate(raw_files)]
    log(f"preprocess: filtering {len(jobs)} shard(s)")
    first = map_fn(filter_shard, jobs, "filter_shard")
    shard_rows = [r["rows"] for r in first]
    log(f"preprocess: {sum(shard_rows):,} documents passed the filters; deduplicating across shards")
    plan = plan_removals(work, shard_rows, cfg)
    finish_jobs = [{"index": i, "out": str(out / "documents"), "config": cfg, "plan": plan[i],
                    "docs": first[i]["docs"]} for i in range(len(jobs))]
    second = map_fn(finish_shard, finish_jobs, "finish_shard")

    report = Report()
    for result in first + second:
        report.merge(Report(result["report"]))
    splits = {s: Counter() for s in ("train", "val")}
    for result in second:
        for s, counts in result["splits"].items():
            splits[s].update(counts)
    merge_quarantine([_work_paths(work, i)["quarantine"] for i in range(len(jobs))], out / "quarantine.jsonl")
    phrases, markdown = None, report.markdown()
    if _poison(cfg):  # hits come in shard order, so the list is the same whatever the workers
        phrases = summarize_hits(hit for result in second for hit in result["hits"])
        write_suspicious_phrases(out / PHRASE_FILE, phrases)
        markdown += "\n\n" + phrases_markdown(phrases)
    atomic_write_text(out / "report.md", markdown)
    shutil.rmtree(work)
    read = report.steps.get("read", {}).get("docs_in", 0)
    kept = splits["train"]["docs"] + splits["val"]["docs"]
    quarantined = sum(step["dropped"].get("quarantined", 0) for step in report.steps.values())
    dropped = report.dropped_total() - quarantined
    assert read == kept + dropped + quarantined, f"preprocess counts do not reconcile: {read} read, {kept} kept, " \
                                                 f"{dropped} dropped, {quarantined} quarantined"
    counts = {"read": read, "kept": kept, "train": splits["train"]["docs"], "val": splits["val"]["docs"],
              "dropped": dropped, "quarantined": quarantined,
              **{f"dropped_{name}": sum(step["dropped"].values()) - step["dropped"].get("quarantined", 0)
                 for name, step in report.steps.items() if step["dropped"]},
              **{f"flagged_{name}": sum(step["flagged"].values()) for name, step in report.steps.items()
                 if step["flagged"]},
              "chars_train": splits["train"]["chars"], "chars_val": splits["val"]["chars"],
              "bytes_train": splits["train"]["bytes"], "bytes_val": splits["val"]["bytes"]}
    peak = max([r["peak_rss_mb"] for r in first + second] + [peak_rss_mb()])
    return {"report": report, "markdown": markdown, "counts": counts, "suspicious_phrases": phrases,
            "peak_rss_mb": peak,
            "worker_peak_rss_mb": max((r["peak_rss_mb"] for r in first + second), default=0.0),
            "driver_peak_rss_mb": peak_rss_mb()}

