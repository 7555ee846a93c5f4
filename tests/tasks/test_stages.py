"""Stages run by name under Prefect on inputs a user would point them at (not the built-in sample)."""

import io
import json

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from flows.cycles import stage
from tasks.core.artifacts import ArtifactStore

PAGE = "<html><body><p>" + "The quick brown fox jumps over the lazy dog and then it rests. " * 12 + "</p></body></html>"


def write_warc(path, pages: list[tuple[str, str, str]]) -> None:
    """(url, content type header, html) response records, as a crawler writes them."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, content_type, html in pages:
            body = html.encode()
            headers = StatusAndHeaders(
                "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))], protocol="HTTP/1.1"
            )
            writer.write_record(
                writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)
            )


def only_artifact(workdir, name: str):
    store = ArtifactStore(workdir / "artifacts")
    (key,) = store.list_keys(name)
    return store.load(name, key)


def test_crawl_reads_user_sources_and_reconciles_every_record(tmp_path, prefect_server):
    write_warc(
        tmp_path / "a.warc.gz",
        [("https://ex.org/1", "text/html; charset=utf8mb4", PAGE), ("https://ex.org/2", "image/png", "not a page")],
    )
    (tmp_path / "docs.jsonl").write_text(
        json.dumps({"id": "j1", "url": "https://ex.org/j", "text": "hi " * 60}) + "\n{not json\n"
    )
    sources = f'crawl.sources=["{tmp_path}/*.warc.gz", "{tmp_path}/docs.jsonl"]'
    stage(name="crawl", workdir=str(tmp_path / "w"), overrides=[sources])
    crawl = only_artifact(tmp_path / "w", "crawl")
    c = crawl.counts
    assert (c["read"], c["documents"], c["filtered_content_type"], c["quarantined"]) == (4, 2, 1, 1)
    (bad,) = [json.loads(x) for x in crawl.file("quarantine.jsonl").read_text().splitlines()]
    assert bad["source"].endswith("docs.jsonl") and "line 2" in bad["reason"]


def test_ingest_labels_quarantines_bad_records_and_sees_new_files(tmp_path, prefect_server):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    lines = [
        json.dumps(good),
        json.dumps(good),  # a duplicate
        json.dumps({"messages": [{"role": "user", "content": "Hi"}]}),  # ends with the user
        '{"messages": [',  # truncated
        json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}),
    ]
    (inbox / "batch-1.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe not utf-8\n")
    workdir = str(tmp_path / "w")
    stage(name="ingest_labels", workdir=workdir, overrides=[f"labels.inbox={inbox}"])
    first = only_artifact(tmp_path / "w", "ingest_labels")
    c = first.counts
    assert (c["read"], c["kept"], c["duplicates"], c["quarantined"]) == (6, 2, 1, 3)
    reasons = [json.loads(x)["reason"] for x in first.file("quarantine.jsonl").read_text().splitlines()]
    assert any("line 3" in r and "assistant" in r for r in reasons)
    assert any("line 6" in r for r in reasons)

    more = {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye!"}]}
    (inbox / "batch-2.jsonl").write_text(json.dumps(more) + "\n")
    stage(name="ingest_labels", workdir=workdir, overrides=[f"labels.inbox={inbox}"])
    store = ArtifactStore(tmp_path / "w" / "artifacts")
    assert len(store.list_keys("ingest_labels")) == 2  # a new delivery is a new input, not a cache hit
    (newest,) = [store.load("ingest_labels", k) for k in store.list_keys("ingest_labels") if k != first.key]
    assert newest.counts["read"] == 7 and newest.counts["conversations_train"] + newest.counts["conversations_val"] == 2


def test_a_failed_stage_leaves_no_complete_looking_artifact(tmp_path, prefect_server):
    broken = tmp_path / "cut.jsonl"
    broken.write_text(json.dumps({"id": "a", "url": "u", "text": "x " * 80}) + "\n")
    overrides = [f'crawl.sources=["{broken}", "{tmp_path}/missing-*.warc.gz"]']
    state = stage(name="crawl", workdir=str(tmp_path / "w"), overrides=overrides, return_state=True)
    assert state.is_failed() and "missing-*.warc.gz" in str(state.result(raise_on_failure=False))
    assert not list((tmp_path / "w" / "artifacts").glob("crawl/*/manifest.json"))


def test_only_transient_errors_are_retried():
    from prefect.states import Failed

    from tasks.core.stage import _transient

    assert _transient(None, None, Failed(data=ConnectionResetError("peer reset")))
    assert _transient(None, None, Failed(data=TimeoutError("read timed out")))
    assert not _transient(None, None, Failed(data=FileNotFoundError("no such file")))
    assert not _transient(None, None, Failed(data=ValueError("bad record")))


def test_after_a_failed_stage_a_rerun_continues_from_it(tmp_path, prefect_server):
    from flows.cycles import weekly_cycle
    from tests.micro import MICRO

    inbox = tmp_path / "inbox"  # not delivered yet: ingest_labels fails after the yearly stages are built
    overrides = [*MICRO, f"labels.inbox={inbox}"]
    failed = weekly_cycle(workdir=str(tmp_path / "w"), overrides=overrides, return_state=True)
    assert failed.is_failed() and "is not a folder" in str(failed.result(raise_on_failure=False))
    store = ArtifactStore(tmp_path / "w" / "artifacts")
    yearly = {s: store.list_keys(s) for s in ("crawl", "pretrain")}
    assert all(len(keys) == 1 for keys in yearly.values()) and not store.list_keys("finetune")
    assert not store.list_keys("register_base")  # finetuning reads the pretrain artifact, not the registry

    inbox.mkdir()
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    (inbox / "batch.jsonl").write_text(json.dumps(good) + "\n")
    done = weekly_cycle(workdir=str(tmp_path / "w"), overrides=overrides, return_state=True)
    assert done.is_completed()
    assert {s: store.list_keys(s) for s in yearly} == yearly  # reused, not rebuilt
    assert len(store.list_keys("finetune")) == 1
    # a week with conversations only: no reward model, and the SFT model goes on to evals and deploy as it is
    preference = store.load("preference", store.list_keys("preference")[0])
    assert preference.manifest["info"] == {"skipped": True, "why": "no comparisons"}
