"""Model updates without a restart: the server follows assistant@production when it moves (or at once on
/admin/reload); a request in flight finishes on the version it started on, and every answer records its version."""

import json
import time

import httpx

from flows.serving import build_app
from serve.app import ServeSettings
from tests.serve.conftest import register, running, stalled

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "How many letters are in the word banana?"}]
ADMIN = "admin-key-0123456789"


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def served_version(url: str) -> str:
    return httpx.get(url + "/health").json()["version"]


def wait_for_version(url: str, version: str, timeout: float = 15.0) -> float:
    """Seconds until /health says `version`."""
    start = time.monotonic()
    while served_version(url) != version:
        assert time.monotonic() - start < timeout, f"still serving v{served_version(url)} after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def answer(url: str) -> dict:
    r = httpx.post(url + CHAT, json={"messages": HELLO, "max_tokens": 20, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_when_the_alias_moves_new_requests_get_the_new_version_and_one_in_flight_ends_on_the_old(workdir,
                                                                                                  model_dirs):
    app = build_app(workdir, "assistant@production", ServeSettings(), poll_s=0.5)
    with running(app) as url:
        before = answer(url)
        assert before["model_version"] == "1"
        old = app.state.served.current
        with stalled(old, steps=2) as permits, httpx.stream(
                "POST", url + CHAT, json={"messages": HELLO, "max_tokens": 20, "temperature": 0, "stream": True},
                timeout=60) as in_flight:
            lines = in_flight.iter_lines()
            first = json.loads(next(lines)[6:])  # started on v1, which is held mid-answer
            wait_for(lambda: old.running == 1, "the request to run on v1")
            assert register(workdir, model_dirs[1]) == "2"
            assert wait_for_version(url, "2") < 10
            after = answer(url)
            assert after["model_version"] == "2"
            assert after["choices"][0]["message"]["content"] != before["choices"][0]["message"]["content"]

            permits.release(1_000_000)  # v1 goes on with the request it holds
            rest = [line for line in lines if line]
        chunks = [first] + [json.loads(line[6:]) for line in rest[:-1]]
        assert rest[-1] == "data: [DONE]"
        assert {c["model_version"] for c in chunks} == {"1"}
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == before["choices"][0]["message"]["content"]  # v1's own greedy answer

        store = app.state.store
        assert {rid: store.get(rid)["model_version"] for rid in (before["id"], first["id"], after["id"])} == {
            before["id"]: "1", first["id"]: "1", after["id"]: "2"}
        wait_for(lambda: not old._thread.is_alive(), "v1 to be unloaded once its last request ended")


def test_admin_reload_switches_at_once_without_waiting_for_the_poll(workdir, model_dirs):
    app = build_app(workdir, "assistant@production", ServeSettings(admin_key=ADMIN), poll_s=0)  # never polls
    with running(app) as url:
        assert answer(url)["model_version"] == "1"
        register(workdir, model_dirs[1])
        assert served_version(url) == "1"
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = httpx.post(url + "/admin/reload", headers=admin, timeout=60)
        assert r.json() == {"changed": True, "model": "assistant", "version": "2"}
        assert served_version(url) == "2"
        reply = answer(url)
        assert reply["model_version"] == "2" and app.state.store.get(reply["id"])["model_version"] == "2"
        assert 'factory_model_version{model="assistant",version="2"} 1.0' in httpx.get(url + "/metrics").text
        assert httpx.post(url + "/admin/reload", headers=admin, timeout=60).json()["changed"] is False


def test_when_the_alias_is_gone_the_server_keeps_serving_and_admin_reload_says_why(workdir):
    from tasks.core.tracking import client

    app = build_app(workdir, "assistant@production", ServeSettings(admin_key=ADMIN), poll_s=0.2)
    with running(app) as url:
        client(workdir).delete_registered_model_alias("assistant", "production")
        time.sleep(0.6)  # a few polls that find nothing
        assert answer(url)["model_version"] == "1"
        r = httpx.post(url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
        assert r.status_code == 404
        assert "no model assistant@production" in r.json()["error"]["message"]
        assert served_version(url) == "1"
