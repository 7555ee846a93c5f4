"""prefect.yaml as a user runs it: a real Prefect server, `prefect deploy --all`, a worker running a stage."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.micro import MICRO

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{api}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the Prefect server did not answer within 120 s")
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def prefect(env, *args: str) -> str:
    # run from the repository root, as the README says; prefect.yaml's pull step reads $PWD
    env = {**env, "PWD": str(ROOT)}
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_deployments_have_cron_schedules_and_a_worker_runs_a_stage(server, tmp_path):
    prefect(server, "work-pool", "create", "local", "--type", "process")
    prefect(server, "deploy", "--all")
    listed = prefect(server, "deployment", "ls")
    assert "yearly_cycle/yearly" in listed and "stage/stage-pretrain" in listed
    weekly = prefect(server, "deployment", "inspect", "weekly_cycle/weekly")
    assert "0 0 * * 1" in weekly

    workdir = tmp_path / "work"
    overrides = json.dumps([o for o in MICRO if o.split(".")[0] in ("crawl", "preprocess", "tokenizer")])
    prefect(
        server,
        "deployment",
        "run",
        "stage/stage-train_tokenizer",
        "-p",
        f"workdir={workdir}",
        "-p",
        f"overrides={overrides}",
    )
    prefect(server, "worker", "start", "--pool", "local", "--run-once")
    built = {p.parent.parent.name for p in (workdir / "artifacts").glob("*/*/manifest.json")}
    assert built == {"crawl", "preprocess", "train_tokenizer"}
