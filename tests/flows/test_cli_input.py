"""Bad input fails fast and plainly: one line naming the input, exit code 2, before any Prefect or MLflow start."""

import os
import subprocess
import sys

import pytest

CASES = [
    (["run", "all", "--preset", "nope"], "preset 'nope'"),
    (["stage", "pretrian"], "unknown stage 'pretrian'"),
    (["run", "all", "--set", "pretrain.steps=abc"], "pretrain.steps"),
    (["run", "weekly", "--set", "nosuch.key=1"], "nosuch"),
    (["run", "yearly", "--set", "pretrain.steps"], "section.key=VALUE"),
    (["stage", "crawl", "--set", "crawl.sources=['/no/such/dir/*.warc.gz']"], "/no/such/dir/*.warc.gz"),
    (["run", "all", "--force", "pretrian"], "unknown stage 'pretrian'"),
    (["run", "weekly", "--set", "evals.skills=[juggling]"], "juggling"),
    (["chat", "--preset", "nope", "--prompt", "hi"], "preset 'nope'"),
    (["rollback", "--set", "deploy.bogus=1"], "deploy.bogus"),
    (["samples", "--preset", "nope"], "preset 'nope'"),
    (["serve", "--tools", "calculator,browser"], "--tools: 'browser'"),
    (["chat", "--system", "Be brief.", "--no-system", "--prompt", "hi"], "--system and --no-system"),
]


@pytest.mark.parametrize(("args", "named"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_naming_it_and_nothing_starts(tmp_path, args, named):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.cli", *args, "--workdir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert not errors, errors  # no traceback
    # nothing was started or even loaded: no Prefect (server or client), no MLflow store, no torch
    assert not {"prefect", "mlflow", "torch"} & imported
    assert not (tmp_path / "prefect").exists() and not (tmp_path / "mlflow.db").exists()
