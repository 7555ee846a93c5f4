"""`factory serve`: the server's model comes from the MLflow registry (NAME@ALIAS, followed when the alias moves, or
NAME/VERSION) or from a model folder; keys come from the environment or a file; uvicorn runs it in the foreground."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serve.engine import ModelSource

log = logging.getLogger("factory.serve")


def registry_resolver(workdir: Path, ref: str):
    """A function giving the ModelSource that `ref` names now: a folder, NAME@ALIAS or NAME/VERSION."""
    folder = Path(ref).expanduser()
    if (folder / "config.json").exists():
        source = ModelSource(folder.resolve().name, "local", folder.resolve())
        return lambda: source

    from mlflow.exceptions import MlflowException

    from tasks.core import model_registry
    from tasks.core.lineage import parse_ref
    from tasks.core.tracking import client

    name, alias, number = parse_ref(ref)
    c = client(workdir)
    paths: dict[str, Path] = {}

    def resolve() -> ModelSource:
        try:
            version = model_registry.alias_version(c, name, alias) if alias else c.get_model_version(name, number)
        except MlflowException:
            version = None
        if version is None:
            raise LookupError(f"no model {ref} in the registry of {workdir}: build it first "
                              f"(`factory run all --workdir {workdir}`)")
        if version.version not in paths:
            paths[version.version] = model_registry.model_dir(version)
        return ModelSource(name, str(version.version), paths[version.version], alias)

    return resolve


def read_keys(env: str, file: Path | None) -> dict[str, str]:
    """API keys as {key: client name}: `FACTORY_API_KEYS=name:key,other:key2` and/or a file of `name: key` lines
    (a bare key is named by its first 6 characters)."""
    entries = [e for e in os.environ.get(env, "").split(",") if e.strip()]
    if file is not None:
        entries += [line for line in Path(file).read_text().splitlines() if line.strip() and not line.startswith("#")]
    keys = {}
    for entry in entries:
        name, _, key = entry.rpartition(":")
        key = key.strip()
        if len(key) < 8:
            raise ValueError(f"API key {key[:3]!r}...: keys must be at least 8 characters")
        keys[key] = name.strip() or key[:6]
    return keys


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(workdir: Path, ref: str, settings, store_url: str | None = None, poll_s: float = 5.0):
    from serve.app import create_app
    from serve.engine import Served
    from serve.store import Store, default_url

    served = Served(registry_resolver(workdir, ref), max_batch=settings.max_batch, poll_s=poll_s)
    store = Store(store_url or os.environ.get("FACTORY_STORE_URL") or default_url(workdir))
    return create_app(served, store, settings)


@contextmanager
def running(app, timeout: float = 60.0) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free 127.0.0.1 port (bound before uvicorn starts, so nothing else can
    take it in between); yields the base URL; stops the server, its model workers and its store after."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the server did not start on 127.0.0.1:{sock.getsockname()[1]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        app.state.served.close()
        app.state.store.close()
        sock.close()


def run(workdir: Path, ref: str, host: str, port: int, settings, store_url: str | None = None,
        poll_s: float = 5.0, threads: int | None = None) -> None:
    import uvicorn

    if not is_loopback(host) and not settings.api_keys:
        raise ValueError(f"--host {host} is reachable from other machines: set FACTORY_API_KEYS (or --api-keys-file) "
                         "so that only key holders can use it")
    from serve.engine import set_threads

    set_threads(threads)  # this process only serves: the engine may take the cores but one
    app = build_app(workdir, ref, settings, store_url, poll_s)
    served = app.state.served
    print(f"serving {served.name} v{served.current.version} ({ref}) on http://{host}:{port}  "
          f"(web chat /, API /v1, metrics /metrics); requests -> {app.state.store.url}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        served.close()
        app.state.store.close()
