"""A second run of the same artifact key waits for (or gives up on) the first; neither deletes the other's work."""

import subprocess
import sys
import time

import pytest

from tasks.core.locks import ArtifactLocked, artifact_lock

HOLD = """
import sys, time
from pathlib import Path
from tasks.core.locks import artifact_lock
with artifact_lock(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_held_artifact_is_refused_with_the_holders_pid(tmp_path):
    proc = hold(tmp_path / "preprocess" / "abc", 30)
    try:
        with pytest.raises(ArtifactLocked, match=f"pid {proc.pid}"):
            with artifact_lock(tmp_path / "preprocess" / "abc", timeout_s=0.5):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_waits_until_the_first_is_done(tmp_path):
    proc = hold(tmp_path / "preprocess" / "abc", 1.5)
    said = []
    started = time.monotonic()
    with artifact_lock(tmp_path / "preprocess" / "abc", on_wait=said.append):
        waited = time.monotonic() - started
    proc.wait()
    assert waited > 0.5 and proc.returncode == 0
    assert said and "being built by another run" in said[0]


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = hold(tmp_path / "x" / "k", 30)
    proc.kill()
    proc.wait()
    with artifact_lock(tmp_path / "x" / "k", timeout_s=1):
        pass


def test_a_follower_builds_without_the_lock_and_returns_what_the_lead_commits(tmp_path, monkeypatch):
    """A node other than 0 of a multi-node run trains into the same folder while node 0 holds the lock, and returns
    the artifact node 0 commits (not one of its own)."""
    import threading

    from tasks.core.artifacts import ArtifactStore
    from tasks.core.stage import Context, StageSpec, execute

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    built = []
    spec = StageSpec("train", "yearly", (), {}, lambda s: built.append(s.out) or {}, "tests", follower=lambda cfg: True)
    ctx = Context(str(tmp_path), config=None)
    key = spec.key(None, {}, tmp_path)
    store = ArtifactStore(tmp_path / "artifacts")
    with artifact_lock(store.path("train", key)):  # the lead holds the lock the whole time
        commit = threading.Timer(1.0, lambda: store.commit("train", key, {"metrics": {"loss": 1.5}}))
        commit.start()
        artifact = execute(spec, ctx, {})
        commit.join()
    assert built == [store.path("train", key)]
    assert artifact.metrics == {"loss": 1.5}
