"""A `factory serve` killed with SIGKILL under load keeps every answer it gave: its SQLite store opens intact, holds
every request a client saw finish, loses at most those in flight, and takes new records."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from serve.store import Store, default_url
from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]
FACTORY = str(Path(sys.executable).parent / "factory")
START_TIMEOUT_S = 90
CLIENTS = 8
LOAD_S = 2.0


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the server's whole process group (no shutdown handler runs) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


@contextlib.contextmanager
def factory_serve(model: Path, workdir: Path, *options: str) -> Iterator[ServerProcess]:
    """`factory serve --model MODEL` in its own process group on a free loopback port, yielded once /health answers;
    killed (the whole group) after, whatever happened."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}  # no outside store or keys
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, however the package was installed
    command = [FACTORY, "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--workdir", str(workdir), "--poll", "0", *options]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_healthy(server)
        yield server
    finally:
        server.kill()


def wait_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"factory serve exited with {server.process.returncode}:\n{server.log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"factory serve did not answer /health in {START_TIMEOUT_S} s:\n{server.log.read_text()}")


def ask(client: httpx.Client, url: str, model: str, user: str, stream: bool) -> str:
    """One chat request tagged with `user`; returns its response id once the answer has fully arrived (for a stream:
    `data: [DONE]`, which the server sends only after recording it)."""
    body = {"model": model, "messages": [{"role": "user", "content": f"Hello from {user}"}], "max_tokens": 8,
            "temperature": 0.8, "user": user, "stream": stream}
    if not stream:
        response = client.post(f"{url}/v1/chat/completions", json=body)
        response.raise_for_status()
        return response.json()["id"]
    rid = None
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line == "data: [DONE]":
                return rid
            if line.startswith("data: ") and rid is None:
                rid = json.loads(line[6:])["id"]
    raise httpx.RemoteProtocolError(f"stream of {rid} ended without [DONE]")


def test_a_server_killed_under_load_keeps_every_answer_it_gave(tmp_path, model_dirs):
    workdir = tmp_path / "work"
    model = model_dirs[0]
    sent: list[str] = []  # the `user` tag of every request sent
    done: dict[str, str] = {}  # tag -> response id, for every answer a client received whole
    errors: list[str] = []
    killed = threading.Event()

    def client_loop(n: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(10_000):
                if killed.is_set():
                    return
                tag = f"client{n}-{i}"
                sent.append(tag)
                try:
                    done[tag] = ask(client, server.url, model.name, tag, stream=i % 2 == 1)
                except httpx.HTTPError as exc:
                    if not killed.is_set():
                        errors.append(f"{tag}: {exc!r}")
                    return

    with factory_serve(model, workdir) as server:
        clients = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(CLIENTS)]
        for t in clients:
            t.start()
        time.sleep(LOAD_S)
        assert not errors, errors
        assert len(done) >= CLIENTS, f"only {len(done)} answers in {LOAD_S} s"
        killed.set()
        server.kill()
        for t in clients:
            t.join(30)
        assert not any(t.is_alive() for t in clients)

    assert server.process.returncode == -signal.SIGKILL
    lost = set(sent) - set(done)
    assert 0 < len(lost) <= CLIENTS, f"{len(lost)} requests were not answered"  # killed with requests in flight
    with Store(default_url(workdir)) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        rows = store.requests()
        by_tag = {r["meta"]["user"]: r for r in rows}
        assert len(by_tag) == len(rows)
        assert set(by_tag) <= set(sent)
        missing = sorted(set(done) - set(by_tag))
        assert not missing, f"{len(missing)} answered requests are not in the store: {missing[:5]}"
        assert all(by_tag[tag]["id"] == rid for tag, rid in done.items())
        assert all(r["status"] == 200 and r["finish_reason"] in ("stop", "length") for r in rows)

        seq = store.record({"id": "after-the-kill", "answer": "still writable", "meta": {"user": "test"}})
        assert seq > max(r["seq"] for r in rows)
        assert store.get("after-the-kill")["answer"] == "still writable"
