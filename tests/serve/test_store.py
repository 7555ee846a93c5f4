"""The request/feedback store: the same behaviour on SQLite and on a real PostgreSQL, several threads and processes
writing at once, a writer killed mid-load, and the `factory requests` commands."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from itertools import count
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.store_cli import store_app
from serve.store import Store, default_url
from tests.pg import create_database, postgres

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400
databases = count()


def chat_row(id: str, **fields) -> dict:
    return {
        "id": id, "created": time.time(), "endpoint": "chat", "model": "assistant@production", "model_version": "3",
        "messages": [{"role": "user", "content": f"question {id}"}], "prompt": None, "answer": f"answer {id}",
        "finish_reason": "stop",
        "sampling": {"temperature": 0.7, "max_tokens": 64}, "prompt_tokens": 12, "completion_tokens": 5,
        "ttft_s": 0.05, "latency_s": 0.4, "status": 200, "client": "alice", "meta": {"simulated": True}, **fields,
    }


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    with postgres(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A new, empty store database of each kind."""
    if request.param == "sqlite":
        return default_url(tmp_path)
    return create_database(request.getfixturevalue("pg_server"), f"test_{next(databases)}")


@pytest.fixture
def store(url):
    with Store(url) as store:
        yield store


def run_python(script: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, **popen)


# one store, either database


def test_a_recorded_request_reads_back_whole_with_its_seq(store):
    row = chat_row("chatcmpl-1")
    seq = store.record(row)
    assert seq >= 1
    assert store.get("chatcmpl-1") == {**row, "seq": seq, "feedback": []}
    assert store.get("chatcmpl-missing") is None


def test_a_nul_character_in_an_answer_or_a_reason_is_kept_as_a_replacement_character(store):
    # a model can sample the byte 0; PostgreSQL text cannot hold it, and the row must not be lost for it
    store.record({**chat_row("chatcmpl-nul"), "answer": "a\x00b", "messages": [{"role": "user", "content": "x\x00"}]})
    store.add_feedback("chatcmpl-nul", -1, "bad\x00")
    got = store.get("chatcmpl-nul")
    assert got["answer"] == "a\ufffdb" and got["messages"][0]["content"] == "x\x00"
    assert got["feedback"][0]["reason"] == "bad\ufffd"


def test_a_completion_row_with_only_an_id_gets_defaults(store):
    store.record({"id": "cmpl-1", "endpoint": "completions", "prompt": "Once upon"})
    got = store.get("cmpl-1")
    assert got["prompt"] == "Once upon" and got["messages"] is None
    assert got["sampling"] == {} and got["meta"] == {} and got["prompt_tokens"] == 0 and got["ttft_s"] is None
    assert got["status"] == 200 and got["client"] == "anonymous" and got["created"] > time.time() - 60


def test_seqs_grow_in_recording_order(store):
    seqs = [store.record(chat_row(f"r{i}")) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [r["id"] for r in store.requests()] == [f"r{i}" for i in range(5)]


def test_recording_an_id_twice_is_an_error(store):
    store.record(chat_row("dup"))
    with pytest.raises(ValueError, match="'dup' is already recorded"):
        store.record(chat_row("dup"))


def test_feedback_is_returned_as_stored_and_listed_with_its_request(store):
    store.record(chat_row("r1"))
    stored = store.add_feedback("r1", -1, "wrong sum", {"source": "web"})
    assert stored["response_id"] == "r1" and stored["rating"] == -1 and stored["reason"] == "wrong sum"
    assert stored["meta"] == {"source": "web"} and stored["seq"] >= 1
    assert store.get("r1")["feedback"] == [stored]


def test_feedback_on_an_unknown_request_is_a_key_error(store):
    with pytest.raises(KeyError, match="nope"):
        store.add_feedback("nope", 1)
    assert store.last_seq()["feedback"] == 0


def test_the_feedback_map_holds_the_latest_rating_of_each_response(store):
    for id in ("a", "b", "c"):
        store.record(chat_row(id))
    store.add_feedback("a", 1)
    store.add_feedback("a", -1, "changed my mind")
    store.add_feedback("b", 1)
    latest = store.feedback(["a", "b", "c", "unknown"])
    assert set(latest) == {"a", "b"}
    assert latest["a"]["rating"] == -1 and latest["a"]["reason"] == "changed my mind"
    assert latest["b"]["rating"] == 1


def test_requests_between_two_seqs_come_oldest_first_with_their_feedback(store):
    seqs = [store.record(chat_row(f"r{i}")) for i in range(6)]
    store.add_feedback("r3", 1)
    got = store.requests(after=seqs[1], until=seqs[4])
    assert [r["seq"] for r in got] == seqs[2:5]
    assert [len(r["feedback"]) for r in got] == [0, 1, 0]
    assert [r["id"] for r in store.requests(after=seqs[4])] == ["r5"]


def test_feedback_since_a_seq_carries_the_request_it_rates(store):
    for id in ("a", "b"):
        store.record(chat_row(id))
    first = store.add_feedback("a", 1)
    second = store.add_feedback("b", -1, "rude")
    got = store.feedback_since(after=first["seq"])
    assert [f["seq"] for f in got] == [second["seq"]]
    assert got[0]["request"]["answer"] == "answer b" and got[0]["request"]["feedback"][0]["reason"] == "rude"
    assert [f["seq"] for f in store.feedback_since(until=first["seq"])] == [first["seq"]]


def test_last_seq_and_a_watermark_tell_a_reader_what_is_new(store):
    assert store.last_seq() == {"requests": 0, "feedback": 0}
    assert store.watermark("collect_misbehaviors") == {"requests": 0, "feedback": 0}
    seq = store.record(chat_row("a"))
    fb = store.add_feedback("a", -1)
    assert store.last_seq() == {"requests": seq, "feedback": fb["seq"]}
    store.set_watermark("collect_misbehaviors", store.last_seq())
    store.record(chat_row("b"))
    mark = store.watermark("collect_misbehaviors")
    assert mark == {"requests": seq, "feedback": fb["seq"]}
    assert [r["id"] for r in store.requests(after=mark["requests"])] == ["b"]
    store.set_watermark("collect_misbehaviors", {"requests": seq + 1, "feedback": fb["seq"]})
    assert store.watermark("collect_misbehaviors")["requests"] == seq + 1
    assert store.watermark("another reader") == {"requests": 0, "feedback": 0}


def test_purge_deletes_old_requests_with_their_feedback_and_never_reuses_a_seq(store):
    store.record(chat_row("old", created=time.time() - 40 * DAY))
    store.add_feedback("old", -1)
    newest = store.record(chat_row("new"))
    store.add_feedback("new", 1)
    assert store.purge(30 * DAY) == 1
    assert store.get("old") is None and [r["id"] for r in store.requests()] == ["new"]
    assert [f["response_id"] for f in store.feedback_since()] == ["new"]
    assert store.purge(-1) == 1  # everything, the newest row included
    assert store.record(chat_row("after purge")) > newest


def test_export_writes_every_request_with_its_feedback_as_jsonl(store, tmp_path):
    seqs = [store.record(chat_row(f"r{i}")) for i in range(3)]
    store.add_feedback("r2", 1, "helpful")
    out = tmp_path / "export" / "requests.jsonl"
    assert store.export_jsonl(out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in rows] == seqs and rows[0]["messages"] == chat_row("r0")["messages"]
    assert rows[2]["feedback"][0]["reason"] == "helpful"
    assert store.export_jsonl(out, after=seqs[1]) == 1
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["r2"]
    assert [p.name for p in out.parent.iterdir()] == ["requests.jsonl"]  # no temp file left beside it


def test_threads_of_one_process_record_at_once(store):
    seqs: list[int] = []

    def write(t: int):
        seqs.extend(store.record(chat_row(f"t{t}-{i}")) for i in range(25))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seqs)) == 100 and len(store.requests()) == 100


# rows that break the contract


def test_a_row_without_an_id_is_rejected_naming_the_field(tmp_path):
    with Store(default_url(tmp_path)) as store, pytest.raises(ValueError, match="'id'"):
        store.record({"answer": "hi"})


def test_a_row_with_an_unknown_field_is_rejected_naming_it(tmp_path):
    with Store(default_url(tmp_path)) as store, pytest.raises(ValueError, match="answr"):
        store.record({"id": "r1", "answr": "hi"})


@pytest.mark.parametrize("rating", [0, 2, -2, True, "1"])
def test_a_rating_other_than_plus_or_minus_one_is_rejected(tmp_path, rating):
    with Store(default_url(tmp_path)) as store:
        store.record(chat_row("r1"))
        with pytest.raises(ValueError, match="rating must be 1 or -1"):
            store.add_feedback("r1", rating)


# SQLite specifics


def test_the_default_store_is_a_wal_sqlite_file_under_the_workdir(tmp_path):
    url = default_url(tmp_path / "work")
    assert url == f"sqlite:///{tmp_path}/work/serving/requests.db"
    with Store(url) as store:
        store.record(chat_row("r1"))
    with sqlite3.connect(tmp_path / "work" / "serving" / "requests.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_in_memory_store_is_one_database_for_every_thread():
    with Store("sqlite://") as store:
        thread = threading.Thread(target=store.record, args=(chat_row("from a thread"),))
        thread.start()
        thread.join()
        assert store.get("from a thread") is not None


# several processes

TWO_WRITERS = """
import json, sys, threading, time
from serve.store import Store

url, me, other = sys.argv[1:]
store = Store(url)
seqs = []
def write(t):
    for i in range(t, 60, 3):
        seqs.append(store.record({"id": f"{me}-{i}", "answer": str(i)}))
threads = [threading.Thread(target=write, args=(t,)) for t in range(3)]
for t in threads: t.start()
for t in threads: t.join()
deadline = time.time() + 15
while store.get(f"{other}-0") is None and time.time() < deadline:
    time.sleep(0.02)
store.add_feedback(f"{other}-0", 1, f"from {me}")
while not store.get(f"{me}-0")["feedback"] and time.time() < deadline:
    time.sleep(0.02)
print(json.dumps({"seqs": seqs, "feedback": store.get(f"{me}-0")["feedback"]}))
"""


def test_two_processes_record_at_once_and_see_each_others_feedback(url):
    Store(url).close()  # the tables exist before both start, as under a running server
    writers = {me: run_python(TWO_WRITERS, url, me, other, stdout=subprocess.PIPE, text=True)
               for me, other in (("a", "b"), ("b", "a"))}
    results = {}
    for me, proc in writers.items():
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results[me] = json.loads(out)
    seqs = results["a"]["seqs"] + results["b"]["seqs"]
    assert len(seqs) == len(set(seqs)) == 120
    with Store(url) as store:
        assert sorted(r["seq"] for r in store.requests()) == sorted(seqs)
    assert [f["reason"] for f in results["a"]["feedback"]] == ["from b"]
    assert [f["reason"] for f in results["b"]["feedback"]] == ["from a"]


KILLED_WRITER = """
import os, sys, threading
from serve.store import Store

store = Store(sys.argv[1])
def write(t):
    for i in range(10**9):
        question = [{"role": "user", "content": "y" * 500}]
        seq = store.record({"id": f"t{t}-{i}", "answer": "x" * 500, "messages": question})
        os.write(1, f"{seq} t{t}-{i}\\n".encode())  # one write call: the line is in the file whole or not at all
for t in range(4):
    threading.Thread(target=write, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_a_writer_killed_under_load_loses_nothing_it_reported_and_leaves_the_file_intact(tmp_path):
    url, reported = default_url(tmp_path), tmp_path / "reported.txt"
    Store(url).close()
    with open(reported, "wb") as stdout:
        proc = run_python(KILLED_WRITER, url, stdout=stdout)
        deadline = time.time() + 30
        while reported.stat().st_size == 0 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    lines = [line.split() for line in reported.read_text().split("\n")[:-1]]
    print(f"{len(lines)} rows reported before the kill")
    assert len(lines) > 20, f"the writer recorded only {len(lines)} rows before it was killed"

    with sqlite3.connect(tmp_path / "serving" / "requests.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with Store(url) as store:
        stored = {r["id"]: r["seq"] for r in store.requests()}
        assert {id: int(seq) for seq, id in lines}.items() <= stored.items()
        assert len(stored) - len(lines) <= 4  # at most the one row each thread had committed but not yet reported
        assert store.record(chat_row("after the crash")) > max(stored.values())


# factory requests ...


def test_the_export_command_writes_the_workdirs_requests(tmp_path):
    with Store(default_url(tmp_path)) as store:
        seqs = [store.record(chat_row(f"r{i}")) for i in range(3)]
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(store_app, ["export", "--out", str(out), "--after", str(seqs[0]),
                                            "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["r1", "r2"]
    assert f"--after {seqs[2]}" in result.output


def test_the_purge_command_deletes_requests_older_than_the_days_given(tmp_path):
    url = f"sqlite:///{tmp_path}/elsewhere.db"
    with Store(url) as store:
        store.record(chat_row("old", created=time.time() - 10 * DAY))
        store.record(chat_row("new"))
    result = CliRunner().invoke(store_app, ["purge", "--days", "7", "--db", url])
    assert result.exit_code == 0, result.output
    assert "purged 1 requests" in result.output
    with Store(url) as store:
        assert [r["id"] for r in store.requests()] == ["new"]


def test_the_commands_read_the_store_url_from_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path}/from-env.db"
    with Store(url) as store:
        store.record(chat_row("r1"))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(store_app, ["export", "--out", str(out)], env={"FACTORY_STORE_URL": url})
    assert result.exit_code == 0, result.output
    assert "exported 1 requests" in result.output


def test_the_commands_say_so_when_the_workdir_has_no_store(tmp_path):
    result = CliRunner().invoke(store_app, ["export", "--out", str(tmp_path / "o.jsonl"), "--workdir", str(tmp_path)],
                                env={"FACTORY_STORE_URL": None})
    assert result.exit_code == 1
    assert "no request store" in result.output and not (tmp_path / "serving").exists()
