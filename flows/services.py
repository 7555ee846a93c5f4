"""The local stack behind `factory up` / `factory down`: a Prefect server (UI + API), an MLflow server, the
deployments of prefect.yaml and a worker for them, and the chat server (`factory serve`, once there is a production
model), as background processes owned by one workdir.

Each service runs in its own process group, logs to <workdir>/logs/<name>.log and has its pid in
<workdir>/run/<name>.pid; `down` stops exactly the process groups named there (Linux: it reads /proc).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from model.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]  # prefect.yaml; deployments and the worker run from here
BIN = Path(sys.executable).parent
# What each service's command line holds, so that a recycled pid is never taken for one of ours.
COMMANDS = {"prefect": ("prefect", "server"), "mlflow": ("mlflow", "server"), "worker": ("prefect", "worker"),
            "serve": ("factory", "serve")}


def up(
    workdir: Path,
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    host: str = "127.0.0.1",
    deploy: bool = True,
    worker: bool = True,
    timeout: float = 180,
    serve_port: int = 8000,
    serve: bool = True,
) -> dict[str, str]:
    """Start the stack of `workdir` (or find it running) and return its URLs, also written to run/urls.json."""
    workdir = Path(workdir).expanduser().resolve()
    running = status(workdir)
    saved = workdir / "run" / "urls.json"
    if running and all(running.values()) and saved.exists():
        urls = json.loads(saved.read_text())
        _say(f"the stack of {workdir} is already running: Prefect {urls['prefect_ui']}, MLflow {urls['mlflow']}")
        return urls
    if any(running.values()):
        gone = ", ".join(name for name, alive in running.items() if not alive)
        _say(f"{gone} of the stack of {workdir} stopped: stopping the rest to start it again")
    down(workdir)  # also clears pid files left by processes that are gone
    if prefect_port == mlflow_port:
        raise ValueError(f"the Prefect and MLflow ports are both {prefect_port}: pass two different ports")
    serve = serve and _has_production(workdir)
    ports = [(prefect_port, "--prefect-port"), (mlflow_port, "--mlflow-port")] + [(serve_port, "--serve-port")] * serve
    if len({p for p, _ in ports}) < len(ports):
        raise ValueError(f"two services on one port ({', '.join(f'{o} {p}' for p, o in ports)}): pass different ports")
    for port, option in ports:
        if _port_busy(host, port):
            raise RuntimeError(f"port {port} on {host} is in use: stop what uses it or pass {option}")

    api = f"http://{host}:{prefect_port}/api"
    urls = {"prefect_ui": f"http://{host}:{prefect_port}", "prefect_api": api, "mlflow": f"http://{host}:{mlflow_port}",
            "chat": f"http://{host}:{serve_port}" if serve else None}
    env = {
        **os.environ,
        "PREFECT_HOME": str(workdir / "prefect"),  # where `factory run` keeps its runs, so the UI shows them
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    in_repo = {**env, "PWD": str(ROOT)}  # prefect.yaml's pull step sets the flow runs' directory to {{ $PWD }}
    prefect = str(BIN / "prefect")
    deadline = time.monotonic() + timeout
    try:
        server_cmd = [prefect, "server", "start", "--host", host, "--port", str(prefect_port)]
        server = _start(workdir, "prefect", server_cmd, env)
        # The runs' artifacts (plots) are file:// paths under <workdir>/mlartifacts: the server reads them for the UI.
        mlflow_cmd = [str(BIN / "mlflow"), "server", "--host", host, "--port", str(mlflow_port), "--workers", "1",
                      "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db",
                      "--artifacts-destination", str(workdir / "mlartifacts")]  # fmt: skip
        # MLflow's job runner (7 consumer processes) runs nothing of ours: keep 2 cores for the pipeline
        tracking = _start(workdir, "mlflow", mlflow_cmd, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        _wait(workdir, "prefect", server, lambda: _answers(f"{api}/health"), deadline, timeout)
        _wait(workdir, "mlflow", tracking, lambda: _answers(f"{urls['mlflow']}/health"), deadline, timeout)
        if deploy:
            if not _answers(f"{api}/work_pools/local"):
                pool_cmd = [prefect, "work-pool", "create", "local", "--type", "process"]
                _run(workdir, "deploy", pool_cmd, in_repo, deadline)
            _run(workdir, "deploy", [prefect, "--no-prompt", "deploy", "--all"], in_repo, deadline)
        if serve:
            serve_cmd = [str(BIN / "factory"), "serve", "--workdir", str(workdir), "--host", host,
                         "--port", str(serve_port)]
            chat = _start(workdir, "serve", serve_cmd, env)
            _wait(workdir, "serve", chat, lambda: _answers(f"{urls['chat']}/health"), deadline, timeout)
        if worker:
            since = datetime.now(UTC) - timedelta(seconds=1)
            polling = _start(workdir, "worker", [prefect, "worker", "start", "--pool", "local"], in_repo)
            _wait(workdir, "worker", polling, lambda: _worker_online(api, since), deadline, timeout)
    except BaseException:
        down(workdir)  # nothing of this workdir ran before, so this stops exactly what was started here
        raise
    _write(saved, json.dumps(urls, indent=2) + "\n")
    return urls


def _has_production(workdir: Path) -> bool:
    """Whether the registry has a model for the chat server (assistant@production); if not, say how to get one."""
    from tasks.core import model_registry
    from tasks.core.tracking import client

    has_store = (workdir / "mlflow.db").exists() or "MLFLOW_TRACKING_URI" in os.environ
    if has_store and model_registry.alias_version(client(workdir), "assistant", "production") is not None:
        return True
    _say(f"no assistant@production in {workdir} yet: the chat server starts with the next `factory up` after a "
         "weekly cycle (or run `factory serve` then)")
    return False


def down(workdir: Path) -> list[str]:
    """Stop the processes named in <workdir>/run/*.pid (the worker first) and return their names."""
    run = Path(workdir).expanduser().resolve() / "run"
    stopped: dict[str, int] = {}
    for pid_file in sorted(run.glob("*.pid"), key=lambda p: p.stem != "worker"):
        pid = _read_pid(pid_file)
        # Or a leader that died while its group lives on (a crashed `mlflow server` leaves its workers holding
        # the port): the kernel never reuses a pid that still names a process group, so that group is ours.
        if pid and (_ours(pid_file.stem, pid) or (pid not in (members := _group_members(pid)) and members)):
            stopped[pid_file.stem] = pid
    if "worker" in stopped:  # while the API still answers, so it can leave cleanly
        _stop_groups([stopped["worker"]])
    _stop_groups([pid for name, pid in stopped.items() if name != "worker"])
    for pid_file in run.glob("*.pid"):  # stopped, or stale: its process is gone or is no longer ours
        pid_file.unlink()
    return list(stopped)


def status(workdir: Path) -> dict[str, bool]:
    """Each service with a pid file in <workdir>/run -> whether it is alive and still the process we started."""
    run = Path(workdir).expanduser().resolve() / "run"
    return {p.stem: _ours(p.stem, _read_pid(p)) for p in sorted(run.glob("*.pid"))}


def _say(message: str) -> None:
    print(f"factory: {message}", file=sys.stderr, flush=True)


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)  # a reader never sees half a file


def _port_busy(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT leftovers are no owner
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise RuntimeError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    return False


def _start(workdir: Path, name: str, args: list[str], env: dict) -> subprocess.Popen:
    log = workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    _say(f"starting {name}: {' '.join(args[1:])} (log: {log})")
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    _write(workdir / "run" / f"{name}.pid", f"{proc.pid}\n")
    return proc


def _wait(workdir, name, proc, ready: Callable[[], bool], deadline: float, timeout: float) -> None:
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} while starting; {_tail(workdir, name)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not come up within {timeout:.0f} s; {_tail(workdir, name)}")
        time.sleep(0.5)


def _run(workdir: Path, name: str, args: list[str], env: dict, deadline: float) -> None:
    command = "prefect " + " ".join(args[1:])
    _say(f"running {command}")
    with (workdir / "logs" / f"{name}.log").open("a") as out:
        out.write(f"$ {command}\n")
        out.flush()
        try:
            done = subprocess.run(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=max(1.0, deadline - time.monotonic()))  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`{command}` did not finish in time; {_tail(workdir, name)}") from None
    if done.returncode:
        raise RuntimeError(f"`{command}` failed with code {done.returncode}; {_tail(workdir, name)}")


def _tail(workdir: Path, name: str, lines: int = 30) -> str:
    log = workdir / "logs" / f"{name}.log"
    text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
    return f"the end of {log}:\n" + "\n".join(text)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def _worker_online(api: str, since: datetime) -> bool:
    """A worker of the `local` pool has sent a heartbeat since we started ours (older records are stale)."""
    request = urllib.request.Request(f"{api}/work_pools/local/workers/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            workers = json.load(response)
    except OSError:
        return False
    beats = [w.get("last_heartbeat_time") for w in workers]
    return any(beat and datetime.fromisoformat(beat) >= since for beat in beats)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _ours(name: str, pid: int | None) -> bool:
    """Alive (not a zombie) and running the command we started under this name."""
    if not pid or name not in COMMANDS:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    executable, subcommand = COMMANDS[name]
    return state != "Z" and str(BIN / executable) in args and subcommand in args


def _group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies left to a parent that does not reap them do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _stop_groups(pgids: list[int], grace: float = 20.0) -> None:
    """SIGTERM each process group, SIGKILL what is left after `grace` seconds, and wait until they are gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        left = [g for g in pgids if _alive_group(g)]
        for pgid in left:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while (left := [g for g in left if _alive_group(g)]) and time.monotonic() < end:
            time.sleep(0.2)
        if not left:
            return


def _alive_group(pgid: int) -> bool:
    if _group_members(pgid):
        return True
    try:  # the leader is dead: reap it if it is our own child (up() ran in this process), so no zombie is left
        os.waitpid(pgid, 0)
    except ChildProcessError:
        pass
    return False
