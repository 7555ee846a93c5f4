"""The demo's runs as a user sees them: `factory run` then `factory up`, the Prefect and MLflow UIs in Chromium."""

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from flows.services import down, up
from tests.micro import MICRO_ARGS
from tests.net import free_port

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FACTORY = str(Path(sys.executable).parent / "factory")


def post(url: str, body: dict) -> list | dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ui") / "work"
    # As a user: the CLI with no server, Prefect's state in <workdir>/prefect, MLflow's in <workdir>/mlflow.db.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    subprocess.run([FACTORY, "run", "all", "--workdir", str(workdir), *MICRO_ARGS], env=env, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    urls = up(workdir, prefect_port=free_port(), mlflow_port=free_port(), deploy=False, worker=False)
    try:
        yield workdir, urls
    finally:
        down(workdir)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking",
                                                               "--disable-gpu", "--no-first-run"])  # fmt: skip
        yield b
        b.close()


def test_prefect_ui_shows_the_weekly_run_with_its_stages_and_eval_table(stack, browser, tmp_path):
    workdir, urls = stack
    (run,) = post(
        f"{urls['prefect_api']}/flow_runs/filter", {"flow_runs": {}, "flows": {"name": {"any_": ["weekly_cycle"]}}}
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{urls['prefect_ui']}/runs/flow-run/{run['id']}")
    # the run's task list (a page of ten; the yearly stages the run reused come first) shows the weekly stages; those
    # past the first page are there through the API
    for stage in ("ingest_labels", "finetune", "reward_model", "preference"):
        page.get_by_text(stage, exact=True).first.wait_for(timeout=60_000)
    tasks = post(f"{urls['prefect_api']}/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert {"index", "rl", "interrogate", "evals", "deploy"} <= {t["name"] for t in tasks}
    page.screenshot(path=str(tmp_path / "prefect-run.png"))
    (table,) = post(f"{urls['prefect_api']}/artifacts/filter", {"artifacts": {"key": {"any_": ["evals-scores"]}}})
    page.goto(f"{urls['prefect_ui']}/artifacts/artifact/{table['id']}")
    page.get_by_text("letter_count").first.wait_for(timeout=60_000)
    page.get_by_text("identity").first.wait_for(timeout=10_000)
    (table,) = post(f"{urls['prefect_api']}/artifacts/filter", {"artifacts": {"key": {"any_": ["rl-pass-rates"]}}})
    page.goto(f"{urls['prefect_ui']}/artifacts/artifact/{table['id']}")
    page.get_by_text("pass@1 after").first.wait_for(timeout=60_000)
    (table,) = post(f"{urls['prefect_api']}/artifacts/filter", {"artifacts": {"key": {"any_": ["interrogate-rates"]}}})
    page.goto(f"{urls['prefect_ui']}/artifacts/artifact/{table['id']}")
    page.get_by_text("hallucination_rate").first.wait_for(timeout=60_000)


def test_mlflow_ui_opens_the_pretrain_run_with_its_metrics(stack, browser):
    workdir, urls = stack
    manifest = next((workdir / "artifacts" / "pretrain").glob("*/manifest.json"))
    run_id = json.loads(manifest.read_text())["mlflow_run_id"]
    with urllib.request.urlopen(f"{urls['mlflow']}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30) as r:
        experiment = json.loads(r.read())["run"]["info"]["experiment_id"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{urls['mlflow']}/#/experiments/{experiment}/runs/{run_id}")
    page.get_by_text("pretrain").first.wait_for(timeout=60_000)
    page.get_by_text("val_bpb").first.wait_for(timeout=60_000)


def test_prefect_ui_shows_the_red_team_table_its_chart_and_the_gate_rules(stack, browser):
    workdir, urls = stack

    def artifact(key: str) -> dict:
        (found,) = post(f"{urls['prefect_api']}/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})
        return found

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{urls['prefect_ui']}/artifacts/artifact/{artifact('evals-redteam')['id']}")
    for family in ("base64", "many_shot", "all"):
        page.get_by_text(family, exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("over_refusal_high").first.wait_for(timeout=10_000)
    page.goto(f"{urls['prefect_ui']}/artifacts/artifact/{artifact('evals-redteam-chart')['id']}")
    chart = page.locator('img[alt="redteam-chart"]').first
    chart.wait_for(state="attached", timeout=60_000)
    # the PNG is MLflow's to serve: the stage wrote its link before `factory up` chose the port, so ask that port
    query = chart.get_attribute("src").split("/get-artifact", 1)[1]
    with urllib.request.urlopen(f"{urls['mlflow']}/get-artifact{query}", timeout=30) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    page.goto(f"{urls['prefect_ui']}/artifacts/artifact/{artifact('deploy-gate')['id']}")
    page.get_by_text("redteam.benign.answered", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("hallucination: share of questions about invented subjects refused").first.wait_for(
        timeout=10_000)
    page.goto(f"{urls['prefect_ui']}/artifacts/artifact/{artifact('evals-harness')['id']}")
    page.get_by_text("factory_arith_mc", exact=True).first.wait_for(timeout=60_000)
