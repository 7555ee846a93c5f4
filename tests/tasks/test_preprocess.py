"""The preprocess stage under Prefect: on local processes and on a Dask cluster, with the same bytes out."""

import hashlib
import random

import pytest

from flows.cycles import stage
from tasks.core.artifacts import Artifact, ArtifactStore
from tasks.core.config import load_config
from tasks.core.registry import spec
from tests.tasks.test_stages import write_warc

WORDS = {
    "adj": "old quiet busy green narrow bright famous little heavy gentle modern ancient open warm cold".split(),
    "noun": "river town library garden bridge market school harbour museum station village forest castle "
            "bakery theatre".split(),
    "verb": "welcomes surprises attracts protects connects faces follows shelters reaches overlooks".split(),
    "prep": "near behind beyond around beside under above across".split(),
    "adv": "every morning; in the evening; during the summer; after the rain; on most days; for many years".split("; "),
}


def sentence(rng: random.Random) -> str:
    w = {k: rng.sample(v, 3) for k, v in WORDS.items() if k != "adv"}
    return (f"The {w['adj'][0]} {w['noun'][0]} {w['verb'][0]} the {w['adj'][1]} {w['noun'][1]} "
            f"{w['prep'][0]} a {w['adj'][2]} {w['noun'][2]} and {rng.choice(WORDS['adv'])} with {w['adj'][0]} "
            f"{w['noun'][1]}.")


def english_page(rng: random.Random) -> str:
    paragraphs = ["<p>" + " ".join(sentence(rng) for _ in range(5)) + "</p>" for _ in range(4)]
    return f"<html><head><title>Page</title></head><body><article>{''.join(paragraphs)}</article></body></html>"


@pytest.fixture(scope="module")
def crawl_file(tmp_path_factory):
    rng = random.Random(0)
    pages = [(f"https://site{i % 7}.example/page{i}", "text/html; charset=utf-8", english_page(rng)) for i in range(36)]
    pages.append(("https://mirror.example/copy", "text/html", pages[3][2]))  # an exact copy on another domain
    path = tmp_path_factory.mktemp("crawl") / "pages.warc.gz"
    write_warc(path, pages)
    return path


def outputs(workdir):
    store = ArtifactStore(workdir / "artifacts")
    (key,) = store.list_keys("preprocess")
    artifact = store.load("preprocess", key)
    files = sorted((artifact.path / "documents").glob("*.parquet"))
    return artifact, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run(workdir, crawl_file, *extra):
    overrides = [f'crawl.sources=["{crawl_file}"]', "crawl.rows_per_shard=8", "preprocess.val_fraction=0.2",
                 *extra]
    stage(name="preprocess", workdir=str(workdir), overrides=overrides)
    return outputs(workdir)


def test_local_processes_and_a_dask_cluster_write_the_same_bytes(tmp_path, crawl_file, prefect_server):
    from dask.distributed import LocalCluster

    serial, serial_files = run(tmp_path / "serial", crawl_file, "preprocess.workers=1")
    assert serial.counts["read"] == 37 and serial.counts["dropped_exact_dedup"] == 1
    assert len(serial_files) >= 4  # 5 shards of raw pages -> train and val files per shard
    parallel, parallel_files = run(tmp_path / "parallel", crawl_file, "preprocess.workers=2")
    assert parallel_files == serial_files
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask, dask_files = run(tmp_path / "dask", crawl_file, f"preprocess.dask_address={cluster.scheduler_address}")
    assert dask_files == serial_files
    assert dask.counts == serial.counts



def test_how_a_stage_runs_is_not_part_of_its_key(tmp_path):
    crawl = Artifact("crawl", "k", tmp_path, {"build_id": "b1"})
    keys = {spec("preprocess").key(load_config("tiny", extra), {"crawl": crawl}, tmp_path)
            for extra in ([], ["preprocess.workers=1"], ["preprocess.dask_address=tcp://10.0.0.1:8786"])}
    assert len(keys) == 1
    assert spec("preprocess").key(load_config("tiny", ["preprocess.seed=3"]), {"crawl": crawl}, tmp_path) not in keys


def test_the_report_reaches_the_manifest_and_reconciles(tmp_path, crawl_file, prefect_server):
    artifact, _ = run(tmp_path / "w", crawl_file)
    c = artifact.counts
    assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
    steps = artifact.manifest["info"]["steps"]
    assert [st["step"] for st in steps][:3] == ["read", "url", "extract"]
    assert all(a["docs_out"] == b["docs_in"] for a, b in zip(steps, steps[1:], strict=False))
    assert artifact.file("report.md").read_text().startswith("### preprocess")
    assert artifact.metrics["peak_rss_mb"] > 0
