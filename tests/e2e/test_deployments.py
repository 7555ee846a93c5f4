"""prefect.yaml as a user runs it: a real Prefect server, `prefect deploy --all`, a worker running a stage."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tasks.core.config import load_config
from tests.micro import MICRO
from tests.net import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


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


def test_deployments_have_cron_schedules_and_a_worker_reruns_a_stage_with_typed_settings(server, tmp_path):
    prefect(server, "work-pool", "create", "local", "--type", "process")
    prefect(server, "deploy", "--all")
    listed = prefect(server, "deployment", "ls")
    assert "yearly_cycle/cycle-yearly" in listed and "stage-pretrain/rerun-pretrain" in listed
    weekly = prefect(server, "deployment", "inspect", "weekly_cycle/cycle-weekly")
    assert "0 0 * * 1" in weekly
    rerun = "stage-train_tokenizer/rerun-train_tokenizer"
    schema = json.loads(prefect(server, "deployment", "inspect", rerun, "--output", "json"))
    assert "vocab_size" in json.dumps(schema["parameter_openapi_schema"])  # the UI's form: typed tokenizer settings

    preset = tmp_path / "micro.yaml"
    preset.write_text(yaml.safe_dump(load_config("tiny", MICRO).model_dump(mode="json")))
    workdir = tmp_path / "work"
    settings = json.dumps({"min_frequency": 3})  # one field set in the form; the rest stays the preset's
    prefect(server, "deployment", "run", rerun, "-p", f"preset={preset}",
            "-p", f"workdir={workdir}", "-p", f"tokenizer={settings}", "-p", "with_downstream=false")  # fmt: skip
    prefect(server, "worker", "start", "--pool", "local", "--run-once")
    built = {p.parent.parent.name: json.loads(p.read_text()) for p in (workdir / "artifacts").glob("*/*/manifest.json")}
    assert set(built) == {"crawl", "preprocess", "train_tokenizer"}
    assert built["train_tokenizer"]["config"]["tokenizer"] == {
        **load_config(preset).tokenizer.model_dump(),
        "min_frequency": 3,
    }
    assert built["train_tokenizer"]["metrics"]["vocab_size"] == 512  # the micro preset's, not the class default
