"""`factory up` / `factory down` as a user runs them: the whole local stack started from one workdir, then stopped.

The tests share one stack (starting it takes most of a minute on 2 cores) and run in file order: the last one
stops it.
"""

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import services
from tasks.core.tracking import experiment_id
from tests.models import make_model_dir, register
from tests.net import free_port

pytestmark = pytest.mark.e2e
PREFECT = str(Path(sys.executable).parent / "prefect")
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def can_listen(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def running_in_group(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies wait for this machine's init to reap them)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(group) == pgid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def pids(work: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (work / "run").glob("*.pid")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("services") / "work"
    register(work, make_model_dir(work.parent / "assistant"))  # so `up` starts the chat server too
    ports = {"prefect_port": free_port(), "mlflow_port": free_port(), "serve_port": free_port()}
    try:
        yield work, ports, services.up(work, **ports)
    finally:
        services.down(work)


@pytest.fixture(scope="module")
def logged_plot(stack):
    """A PNG logged the way the pipeline logs plots: straight to the workdir's store, into a file:// location."""
    work, _, _ = stack
    client = MlflowClient(tracking_uri=f"sqlite:///{work}/mlflow.db")
    run = client.create_run(experiment_id(client, "yearly", work))
    plot = work / "loss.png"
    plot.write_bytes(PNG)
    client.log_artifact(run.info.run_id, str(plot), artifact_path="plots")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_up_serves_the_prefect_api_and_ui_and_mlflow(stack):
    work, ports, urls = stack
    assert urls == {
        "prefect_ui": f"http://127.0.0.1:{ports['prefect_port']}",
        "prefect_api": f"http://127.0.0.1:{ports['prefect_port']}/api",
        "mlflow": f"http://127.0.0.1:{ports['mlflow_port']}",
        "chat": f"http://127.0.0.1:{ports['serve_port']}",
    }
    assert json.loads((work / "run" / "urls.json").read_text()) == urls
    assert get(f"{urls['prefect_api']}/health")[0] == 200
    status, page = get(urls["prefect_ui"] + "/")
    assert status == 200 and b"<html" in page.lower()
    assert get(f"{urls['mlflow']}/health")[0] == 200
    assert get(urls["mlflow"] + "/")[0] == 200
    status, body = get(f"{urls['chat']}/health")
    assert status == 200 and json.loads(body)["version"] == "1"
    assert b'aria-label="Message"' in get(urls["chat"] + "/")[1]


def test_mlflow_serves_the_runs_file_artifacts(stack, logged_plot):
    _, _, urls = stack
    status, body = get(f"{urls['mlflow']}/get-artifact?path=plots/loss.png&run_uuid={logged_plot}")
    assert status == 200 and body == PNG


def test_up_deploys_prefect_yaml_and_starts_a_worker(stack):
    work, _, urls = stack
    env = {**os.environ, "PREFECT_API_URL": urls["prefect_api"], "PREFECT_HOME": str(work / "prefect")}
    env["COLUMNS"] = "200"  # rich would shorten the names in a narrow table
    listed = subprocess.run([PREFECT, "deployment", "ls"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "yearly_cycle/cycle-yearly" in listed.stdout
    os.kill(pids(work)["worker"], 0)  # raises if the worker is gone
    assert services.status(work) == {"mlflow": True, "prefect": True, "serve": True, "worker": True}


def test_up_again_returns_the_running_stack_without_starting_it_twice(stack):
    work, ports, urls = stack
    before = pids(work)
    assert services.up(work, **ports) == urls
    assert pids(work) == before


def test_up_refuses_a_busy_port_before_starting_anything(stack, tmp_path):
    _, ports, _ = stack
    other = tmp_path / "other"
    busy = ports["prefect_port"]
    with pytest.raises(RuntimeError, match=f"port {busy} on 127.0.0.1 is in use: .* --prefect-port"):
        services.up(other, prefect_port=busy, mlflow_port=free_port())
    assert not list(other.glob("run/*.pid"))


def test_up_that_times_out_stops_what_it_started_and_shows_the_log(tmp_path):
    slow = tmp_path / "slow"
    with pytest.raises(RuntimeError, match=r"prefect did not come up within 2 s; the end of .*prefect\.log"):
        services.up(slow, prefect_port=free_port(), mlflow_port=free_port(), timeout=2)
    assert not list(slow.glob("run/*.pid"))
    assert services.down(slow) == []


def test_down_stops_every_process_it_started_and_frees_the_ports(stack):
    # last: it stops the shared stack
    work, ports, _ = stack
    started = pids(work)
    assert sorted(services.down(work)) == ["mlflow", "prefect", "serve", "worker"]
    for pid in started.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert running_in_group(pid) == []  # the whole group: MLflow's uvicorn, job runner and consumers
    assert not list((work / "run").glob("*.pid"))
    assert all(can_listen(port) for port in ports.values())
    assert services.down(work) == []
