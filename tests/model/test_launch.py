"""Training in several processes, started the way the pipeline starts them (torchrun or the deepspeed launcher, gloo on
CPU): DDP and DeepSpeed ZeRO 1-3 follow one process's loss curve for the same global batch, resume from their own
checkpoints, and a run killed with SIGKILL or stopped with SIGTERM resumes to the same losses as an uninterrupted one.
"""
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data.tokens.shards import write_token_shard
from model import launch
from model.checkpoint import latest_checkpoint, load_model
from model.config import GPTConfig
from model.tokenizer import train_bpe
from model.trainer import TrainConfig, train

pytest.importorskip("deepspeed")

MODEL = GPTConfig(vocab_size=300, seq_len=32, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, mlp_hidden=160)
STEPS = 6
BASE = dict(batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, eval_every=3, eval_batches=2, ckpt_every=3,
            keep_checkpoints=3, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A tokenizer and train/val token shards from generated sentences."""
    out = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = "the cat dog sat on a mat ran fast slow red blue big small house tree river stone".split()
    text = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) + "." for _ in range(3000)]
    tok = train_bpe(text, MODEL.vocab_size)
    assert tok.vocab_size == MODEL.vocab_size
    tok.save(out / "tokenizer.json")
    ids = [i for t in text for i in tok.encode(t)]
    cut = int(len(ids) * 0.9)
    write_token_shard(out / "shards" / "train-00000.bin", ids[:cut], tok.vocab_size)
    write_token_shard(out / "shards" / "val-00000.bin", ids[cut:], tok.vocab_size)
    return out


def job_args(corpus: Path) -> dict:
    return {"tokenizer": str(corpus / "tokenizer.json"), "shards": str(corpus / "shards"), "model": MODEL.to_dict(),
            "batch_size": 4, "seed": 0, "eval_batches": 2, "windows": "random", "sample_prompt": None}


def one_process(corpus: Path, out: Path, **overrides) -> tuple[dict[int, float], dict]:
    """The reference: one process, grad_accum 2, so it reads what two ranks read together."""
    job = launch.build("model.jobs:pretrain_job", job_args(corpus))
    losses = {}
    cfg = TrainConfig(**{**BASE, "steps": STEPS, "grad_accum": 2, **overrides})
    train(job.model, cfg, job.train_batches, job.val_batches, out,
          on_log=lambda step, m: losses.__setitem__(step, m["loss"]))
    return losses, job.model.state_dict()


def launched(corpus: Path, out: Path, nproc: int, launcher: str, **overrides) -> tuple[dict[int, float], dict]:
    losses = {}
    cfg = TrainConfig(**{**BASE, "steps": STEPS, "nproc": nproc, "launcher": launcher, **overrides})
    job = launch.Job(builder="model.jobs:pretrain_job", args=job_args(corpus), train=cfg, ckpt_dir=str(out / "ckpt"))
    result = launch.run(job, out, on_log=lambda step, m: losses.__setitem__(step, m["loss"]))
    assert result["steps"] == STEPS and result["tokens"] == STEPS * 2 * 4 * MODEL.seq_len
    return losses, result


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    return one_process(corpus, tmp_path_factory.mktemp("single"))


@pytest.mark.parametrize("strategy,zero_stage,launcher", [
    ("ddp", 0, "torchrun"),
    ("deepspeed", 1, "torchrun"),
    ("deepspeed", 2, "deepspeed"),
    ("deepspeed", 3, "torchrun"),
])
def test_two_ranks_follow_the_one_process_loss_curve_and_resume(corpus, reference, tmp_path, strategy, zero_stage,
                                                                 launcher):
    ref_losses, ref_state = reference
    losses, _ = launched(corpus, tmp_path, 2, launcher, strategy=strategy, zero_stage=zero_stage)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step, loss in losses.items():
        assert loss == pytest.approx(ref_losses[step], rel=1e-4), step
    # the checkpoint holds the full (gathered) weights, loadable as a plain model
    final = latest_checkpoint(tmp_path / "ckpt")
    assert final.name == f"ckpt_{STEPS:06d}"
    weights = load_model(final).state_dict()
    for name, ref in ref_state.items():
        assert torch.allclose(weights[name], ref, atol=1e-4), name
    # only rank 0 logs progress
    output = (tmp_path / "launch.log").read_text()
    assert "[rank 0]" in output and "step 6/6" in output
    assert not any("[rank 1]" in line and " INFO " in line for line in output.splitlines())

    # drop the last checkpoint: the rerun resumes at step 3 and retraces steps 4-6 exactly
    shutil.rmtree(final)
    resumed, result = launched(corpus, tmp_path, 2, launcher, strategy=strategy, zero_stage=zero_stage)
    assert result["resumed_from"].endswith("ckpt_000003")
    assert sorted(resumed) == [4, 5, 6]
    for step in resumed:
        assert resumed[step] == pytest.approx(losses[step], rel=1e-5), step


def test_a_deepspeed_checkpoint_refuses_another_world_size(corpus, tmp_path):
    launched(corpus, tmp_path, 2, "torchrun", strategy="deepspeed", zero_stage=2)
    shutil.rmtree(latest_checkpoint(tmp_path / "ckpt"))
    with pytest.raises(RuntimeError, match="world size 2"):
        launched(corpus, tmp_path, 1, "torchrun", strategy="deepspeed", zero_stage=2, grad_accum=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def one_node_of_two(corpus, tmp_path_factory) -> dict[int, float]:
    return launched(corpus, tmp_path_factory.mktemp("one_node"), 2, "torchrun")[0]


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_two_nodes_of_one_process_follow_one_node_of_two(corpus, one_node_of_two, tmp_path, monkeypatch, launcher):
    """Two launches on loopback, node_rank 0 and 1, each of one process, rendezvous at node 0's port (deepspeed: a
    hostfile of two hosts, each node launching its own part): the same global batch as one node with two processes,
    and the same losses."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "hostfile").write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port, losses = free_port(), {}
    shared_ckpt = tmp_path / "ckpt"  # the nodes share the artifact folder, as on a shared filesystem

    def node(rank: int) -> dict:
        cfg = TrainConfig(**{**BASE, "steps": STEPS, "nproc": 1, "nnodes": 2, "node_rank": rank,
                             "master_addr": "127.0.0.1", "master_port": port, "launcher": launcher,
                             "hostfile": str(tmp_path / "hostfile") if launcher == "deepspeed" else None})
        job = launch.Job(builder="model.jobs:pretrain_job", args=job_args(corpus), train=cfg,
                         ckpt_dir=str(shared_ckpt))
        return launch.run(job, tmp_path, on_log=lambda step, m: losses.__setitem__(step, m["loss"]))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(node, [0, 1]))
    assert sorted(losses) == sorted(one_node_of_two) == list(range(1, STEPS + 1))
    for step, loss in losses.items():
        assert abs(loss - one_node_of_two[step]) <= 1e-5, (step, loss, one_node_of_two[step])
    for result in results:  # each node's caller gets a result, node 1's from its own first rank
        assert result["steps"] == STEPS and result["tokens"] == STEPS * 2 * 4 * MODEL.seq_len
    assert results[0]["final_val_loss"] is not None and results[1]["final_val_loss"] is None  # rank 0 evaluates
    assert (tmp_path / "node1" / "job.json").exists()  # node 1's files do not overwrite node 0's
    assert latest_checkpoint(shared_ckpt).name == f"ckpt_{STEPS:06d}"


# --- one process, killed or stopped -------------------------------------------------------------------------------

LONG = dict(BASE, steps=300, ckpt_every=20, eval_every=0, keep_checkpoints=2)


def start(corpus: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    out.mkdir(parents=True, exist_ok=True)
    job = launch.Job(builder="model.jobs:pretrain_job", args=job_args(corpus), train=TrainConfig(**LONG),
                     ckpt_dir=str(out / "ckpt"))
    (out / "job.json").write_text(job.model_dump_json())
    proc = subprocess.Popen([sys.executable, "-m", "model.launch", str(out / "job.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, out / "metrics.jsonl"


def losses_in(metrics: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows}


def wait_for_step(proc: subprocess.Popen, metrics: Path, step: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and max(losses_in(metrics) or [0]) >= step:
            return
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.005)
    raise AssertionError(f"step {step} not reached")


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> dict[int, float]:
    proc, metrics = start(corpus, tmp_path_factory.mktemp("whole"))
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    return losses_in(metrics)


def test_sigkill_mid_training_then_rerun_gives_the_same_loss_at_every_later_step(corpus, uninterrupted, tmp_path):
    proc, metrics = start(corpus, tmp_path)
    wait_for_step(proc, metrics, 75)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(losses_in(metrics))
    assert killed_at < LONG["steps"]
    metrics.unlink()

    proc, metrics = start(corpus, tmp_path)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    resumed = losses_in(metrics)
    first = min(resumed)
    assert first > 1 and first <= killed_at + 1 and (first - 1) % LONG["ckpt_every"] == 0  # from the last checkpoint
    assert max(resumed) == LONG["steps"]
    for step, loss in resumed.items():
        assert loss == uninterrupted[step], step  # bitwise: weights, Adam moments, data position and RNG restored


def test_sigterm_checkpoints_the_current_step_and_exits_then_the_rerun_finishes(corpus, uninterrupted, tmp_path):
    proc, metrics = start(corpus, tmp_path)
    wait_for_step(proc, metrics, 45)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    stopped_at = max(losses_in(metrics))
    assert latest_checkpoint(tmp_path / "ckpt").name == f"ckpt_{stopped_at:06d}"  # not just the last multiple of 20

    metrics.unlink()
    proc, metrics = start(corpus, tmp_path)
    assert proc.wait() == 0
    resumed = losses_in(metrics)
    assert min(resumed) == stopped_at + 1
    assert all(loss == uninterrupted[step] for step, loss in resumed.items())


def test_stopping_the_caller_stops_every_rank_with_a_checkpoint(corpus, tmp_path):
    """What a cancelled Prefect run does: the exception in the following process SIGTERMs the ranks' group."""
    cfg = TrainConfig(**{**LONG, "steps": 2000, "nproc": 2, "launcher": "torchrun"})
    job = launch.Job(builder="model.jobs:pretrain_job", args=job_args(corpus), train=cfg,
                     ckpt_dir=str(tmp_path / "ckpt"))

    def cancel_at_step_30(step, metrics):
        if step >= 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch.run(job, tmp_path, on_log=cancel_at_step_30)
    saved = latest_checkpoint(tmp_path / "ckpt")
    assert saved is not None and int(saved.name.removeprefix("ckpt_")) >= 30
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "job.json")], capture_output=True).stdout == b""


# --- the caller dies without a word -------------------------------------------------------------------------------

CALLER = """
import sys
from model import launch
launch.run(launch.Job.model_validate_json(open(sys.argv[1]).read()), sys.argv[2])
"""


def processes_of(job_file: Path) -> set[int]:
    """The launcher and ranks of a run: every process with its job file on the command line."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(job_file).encode() in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_sigkill_of_the_caller_takes_the_launcher_and_every_rank_with_it(corpus, tmp_path, launcher):
    # far more steps than the test waits for: only a stop can end the ranks in time
    cfg = TrainConfig(**{**LONG, "steps": 10**7, "ckpt_every": 10**6, "nproc": 2, "launcher": launcher})
    job = launch.Job(builder="model.jobs:pretrain_job", args=job_args(corpus), train=cfg,
                     ckpt_dir=str(tmp_path / "ckpt"))
    (tmp_path / "spec.json").write_text(job.model_dump_json())
    work = tmp_path / "work"
    caller = subprocess.Popen([sys.executable, "-c", CALLER, str(tmp_path / "spec.json"), str(work)],
                              cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE)
    wait_for_step(caller, work / "metrics.jsonl", 3)
    started = processes_of(work / "job.json")
    assert len(started) >= 3, started  # the launcher and two ranks (deepspeed: its runner and launch too)

    caller.send_signal(signal.SIGKILL)
    caller.wait()
    killed_at = time.time()
    try:
        while time.time() - killed_at < 30 and any(alive(pid) for pid in started | processes_of(work / "job.json")):
            time.sleep(0.2)
        left = [pid for pid in started | processes_of(work / "job.json") if alive(pid)]
        assert left == [], f"still running {time.time() - killed_at:.0f} s after the caller died: {left}"
    finally:  # a failure leaves nothing behind either
        for pid in started | processes_of(work / "job.json"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    # they stopped the way SIGTERM stops them: with a checkpoint of the step they were at
    stopped_at = max(losses_in(work / "metrics.jsonl"))
    assert int(latest_checkpoint(tmp_path / "ckpt").name.removeprefix("ckpt_")) >= stopped_at
