"""Run training as one process per rank, started by a launcher, and follow it from the calling process.

The caller (the `pretrain` or `finetune` task) describes the run as a `Job`: a builder ("module:function" that returns
a `TrainJob`: model, batches, sampler) with its JSON arguments, the TrainConfig, and the checkpoint folder. `run()`
writes it to job.json and starts

    torchrun --standalone --nproc_per_node N -m model.launch job.json        (launcher "torchrun")
    deepspeed --num_gpus N --module model.launch job.json                    (launcher "deepspeed")

or, with nnodes > 1, the same on every node with the node's rank and node 0's address (torchrun --nnodes --node_rank
--master_addr --master_port; deepspeed --hostfile --no_ssh --node_rank ...): each node's caller starts its own ranks.
Every rank builds the same model and data from the job, joins torch.distributed (nccl on cuda, gloo on cpu) and runs
model.trainer.train, which wraps the model in DDP or a DeepSpeed engine by `strategy`. Rank 0 appends its per-step
metrics to metrics.jsonl, which run() streams back to the caller's on_log as they come, and logs (the other ranks log
warnings only); the first rank of each node writes result.json for its caller. Stopping the caller SIGTERMs the
ranks: they checkpoint and exit, and the next run resumes. If the caller dies without a word (SIGKILL), the launcher
gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and the ranks stop the same way: they watch the caller and the
launcher and stop with a checkpoint when either is gone, and exit regardless STOP_GRACE_S later.
`python -m model.launch job.json` alone runs one process.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, field_validator

from model.files import atomic_write_text
from model.gpt import GPT
from model.trainer import TrainConfig, TrainingInterrupted, peak_flops, train

log = logging.getLogger(__name__)

LAUNCHERS = ("torchrun", "deepspeed")
STOP_GRACE_S = 120  # how long the ranks get to checkpoint after SIGTERM before SIGKILL
_ERROR_LINE = re.compile(r"^(\[rank\d+\]: )?(?!torch\.distributed\.elastic)[\w.]*(Error|Exception|BadLoss)\b")


@dataclass
class TrainJob:
    """What a builder returns: everything train() needs besides the config."""
    model: GPT
    train_batches: Callable
    val_batches: Callable | None = None
    sample_fn: Callable[[GPT], str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Job(BaseModel):
    """A training run as the ranks read it from job.json; the launch fields (nproc, launcher, nodes) are the
    TrainConfig's."""

    model_config = ConfigDict(extra="forbid")

    builder: str  # "module:function", called with `args`, returning a TrainJob
    args: dict[str, Any]
    train: TrainConfig
    ckpt_dir: str

    @field_validator("train", mode="before")
    @classmethod
    def _training_fields(cls, value: Any) -> Any:
        # a PretrainConfig or FinetuneConfig (or the pipeline's section) travels as its TrainConfig fields
        return TrainConfig.of(value) if isinstance(value, BaseModel) else value


def build(builder: str, args: dict[str, Any]) -> TrainJob:
    module, sep, name = builder.partition(":")
    if not sep:
        raise ValueError(f"builder {builder!r}: expected 'module:function'")
    return getattr(importlib.import_module(module), name)(args)


def command(job_file: Path, cfg: TrainConfig) -> list[str]:
    """The launcher's command line for this node: one node standalone, or this node's part of nnodes."""
    if cfg.launcher == "torchrun":
        nodes = ["--standalone"] if cfg.nnodes == 1 else [
            f"--nnodes={cfg.nnodes}", f"--node_rank={cfg.node_rank}", f"--master_addr={cfg.master_addr}",
            f"--master_port={cfg.master_port}"]  # static rendezvous: global rank = node_rank * nproc + local rank
        return [sys.executable, "-m", "torch.distributed.run", *nodes, f"--nproc_per_node={cfg.nproc}",
                "-m", "model.launch", str(job_file)]
    if cfg.launcher == "deepspeed":
        exe = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
        nodes = [f"--master_port={cfg.master_port or _free_port()}"]
        if cfg.hostfile:
            nodes = [f"--hostfile={cfg.hostfile}", f"--num_nodes={cfg.nnodes}", f"--master_addr={cfg.master_addr}",
                     *nodes]
            if cfg.nnodes > 1:  # every node's caller starts its own part, as with torchrun (no pdsh/ssh)
                nodes += ["--no_ssh", f"--node_rank={cfg.node_rank}"]
        return [exe, *nodes, f"--num_gpus={cfg.nproc}", "--no_local_rank", "--module", "model.launch", str(job_file)]
    raise ValueError(f"launcher must be one of {LAUNCHERS}, got {cfg.launcher!r}")


# Runs in the launcher's process before it execs the launcher: the kernel SIGTERMs it when its parent (the caller)
# dies, whatever killed the caller; torchrun and deepspeed pass a SIGTERM on to their ranks. It adds its own pid to
# the ones the ranks watch (a launcher SIGKILLed in turn leaves ranks that notice by themselves).
_DIE_WITH_CALLER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("the caller exited before the launcher started")
os.environ[sys.argv[2]] += f",{os.getpid()}"
os.execv(sys.argv[3], sys.argv[3:])
"""
WATCH_ENV = "MODEL_LAUNCH_WATCH_PIDS"  # processes a rank stops with: the caller and the launcher


def _dying_with_caller(cmd: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return cmd
    exe = cmd[0] if os.path.isabs(cmd[0]) else (shutil.which(cmd[0]) or cmd[0])
    return [sys.executable, "-c", _DIE_WITH_CALLER, str(os.getpid()), WATCH_ENV, exe, *cmd[1:]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(job: Job) -> dict[str, str]:
    env = dict(os.environ)
    env[WATCH_ENV] = str(os.getpid())
    # the workers import this project by module name, from wherever the caller runs
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(STOP_GRACE_S))  # torchrun's wait before SIGKILLing ranks
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's CPU path, with the gloo backend
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // job.train.nproc)))
    return env


class _Tail:
    """Reads the JSON lines appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path) as f:
            f.seek(self.offset)
            text = f.read()
        complete = text[:text.rfind("\n") + 1]  # a line still being written waits for the next call
        self.offset += len(complete.encode())
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def run(job: Job, work_dir: Path, on_log: Callable[[int, dict], None] | None = None,
        on_output: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start this node's processes, stream rank 0's metrics to on_log and every output line to on_output, and return
    the result of this node's first rank (rank 0's on node 0). Raises RuntimeError with the last output lines if a
    rank fails. Nodes other than 0 work in work_dir/node<N>, so callers that share a folder do not collide."""
    cfg = job.train
    work_dir = Path(work_dir) if cfg.node_rank == 0 else Path(work_dir) / f"node{cfg.node_rank}"
    work_dir.mkdir(parents=True, exist_ok=True)
    job_file, metrics_file, result_file = work_dir / "job.json", work_dir / "metrics.jsonl", work_dir / "result.json"
    for stale in (metrics_file, result_file):
        stale.unlink(missing_ok=True)
    job_file.write_text(job.model_dump_json(indent=2) + "\n")
    cmd = command(job_file, cfg)
    log.info("launching %d processes%s: %s", cfg.nproc,
             f" on node {cfg.node_rank} of {cfg.nnodes}" if cfg.nnodes > 1 else "", " ".join(cmd))
    tail_lines: list[str] = []

    with open(work_dir / "launch.log", "a") as log_file:
        proc = subprocess.Popen(_dying_with_caller(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=_environment(job), start_new_session=True)

        def pump() -> None:
            for line in proc.stdout:
                log_file.write(line)
                log_file.flush()
                tail_lines.append(line.rstrip())
                del tail_lines[:-400]
                if on_output is not None:
                    on_output(line.rstrip())

        reader = threading.Thread(target=pump, name="launch-output", daemon=True)
        reader.start()
        metrics = _Tail(metrics_file)
        previous = None
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # so a SIGTERM here stops the ranks too
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            while proc.poll() is None:
                for row in metrics.new():
                    if on_log is not None:
                        on_log(row.pop("step"), row)
                time.sleep(0.5)
        except BaseException:
            stop(proc)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            reader.join(timeout=10)
        for row in metrics.new():
            if on_log is not None:
                on_log(row.pop("step"), row)
    if proc.returncode != 0:
        # the launchers end with their own summary: name the rank's exception first
        cause = next((line for line in reversed(tail_lines) if _ERROR_LINE.match(line)), "")
        raise RuntimeError(f"training processes exited with code {proc.returncode}: {cause}\n({' '.join(cmd)}); "
                           f"last output:\n" + "\n".join(tail_lines[-20:]))
    if not result_file.exists():
        raise RuntimeError(f"training processes exited cleanly but wrote no {result_file}")
    return json.loads(result_file.read_text())


def _ranks(proc: subprocess.Popen) -> list[int]:
    """The processes the launcher started: its process group, less the launcher itself."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != proc.pid:
            try:
                if os.getpgid(int(entry)) == proc.pid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the ranks (they checkpoint and exit; the launcher follows), SIGKILL to all after STOP_GRACE_S.

    The launcher itself is not signalled first: the deepspeed launcher would SIGKILL its ranks after 30 s."""
    if proc.poll() is not None:
        return
    try:
        for pid in _ranks(proc) or [proc.pid]:
            os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), None once it is gone or a zombie: with
    the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


class _StopWithout:
    """In a rank (Linux): SIGTERM on the parent's death (the launcher), and a thread that watches `pids` (the caller,
    the launcher) and the parent. When one is gone the rank SIGTERMs itself, which the trainer turns into a checkpoint
    and a clean stop agreed with the other ranks; if that has not ended the process STOP_GRACE_S later (a peer died
    mid-collective), it exits hard. So no rank outlives the process that started the run, however that one died.
    Leaving the block ends the thread: one still running while the interpreter shuts down can abort the process."""

    def __init__(self, pids: list[int]):
        self.pids, self._done, self._thread = pids, threading.Event(), None

    def __enter__(self) -> _StopWithout:
        if sys.platform.startswith("linux"):
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            self._thread = threading.Thread(target=self._watch, args=(os.getppid(),), name="watch-caller",
                                            daemon=True)
            self._thread.start()
        return self

    def _watch(self, parent: int) -> None:
        started = {pid: _start_time(pid) for pid in self.pids}
        while os.getppid() == parent and all(_start_time(pid) == t for pid, t in started.items()):
            if self._done.wait(0.5):
                return
        log.warning("the process that started this run is gone: stopping with a checkpoint")
        os.kill(os.getpid(), signal.SIGTERM)
        if not self._done.wait(STOP_GRACE_S):
            os._exit(128 + signal.SIGTERM)

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


def main(job_file: str) -> int:
    """One rank: join the process group if launched with several, build the job, train."""
    job_file = Path(job_file)
    job = Job.model_validate_json(job_file.read_text())
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    if "RANK" not in os.environ:
        return _rank(job_file, job, rank, local_rank)
    with _StopWithout([int(pid) for pid in os.environ.get(WATCH_ENV, "").split(",") if pid]):
        return _rank(job_file, job, rank, local_rank)


def _rank(job_file: Path, job: Job, rank: int, local_rank: int) -> int:
    cfg = job.train.resolved()
    if cfg.device.startswith("cuda"):
        cfg = cfg.model_copy(update={"device": f"cuda:{local_rank}"})
        torch.cuda.set_device(local_rank)
    if "RANK" in os.environ:  # started by a launcher (even with one rank: DeepSpeed needs a process group)
        backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
        if cfg.strategy == "deepspeed":
            import deepspeed
            deepspeed.init_distributed(dist_backend=backend)
        else:
            dist.init_process_group(backend)
    built = build(job.builder, job.args)
    metrics_file = job_file.parent / "metrics.jsonl"

    def on_log(step: int, metrics: dict) -> None:
        with open(metrics_file, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    try:
        result = train(built.model, cfg, built.train_batches, built.val_batches, Path(job.ckpt_dir),
                       on_log=on_log, sample_fn=built.sample_fn, peak_flops=peak_flops(cfg.device))
    except TrainingInterrupted as e:
        log.warning("%s", e)
        return 128 + signal.SIGTERM
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if local_rank == 0:  # rank 0's result on node 0; each other node's caller gets its first rank's
        atomic_write_text(job_file.parent / "result.json", json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
