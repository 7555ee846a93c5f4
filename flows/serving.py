"""`factory serve`: the server's model comes from the MLflow registry (NAME@ALIAS, followed when the alias moves, or
NAME/VERSION) or from a model folder; its search index from the version's `index_path` tag (or --index); keys come
from the environment or a file; assistants from their files (serve/assistants.py), their own files indexed here;
uvicorn runs it in the foreground."""

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


def registry_resolver(workdir: Path, ref: str, index: Path | None = None):
    """A function giving the ModelSource that `ref` names now: a folder, NAME@ALIAS or NAME/VERSION, with its search
    index: `index` if given, else the registered version's `index_path` tag (deploy sets it), else none."""
    folder = Path(ref).expanduser()
    if (folder / "config.json").exists():
        source = ModelSource(folder.resolve().name, "local", folder.resolve(), index=index)
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
        tagged = (version.tags or {}).get("index_path")
        return ModelSource(name, str(version.version), paths[version.version], alias,
                           index if index is not None else Path(tagged) if tagged else None)

    return resolve


def served_names(ref: str) -> set[str]:
    """The model ids that name what `ref` serves, as far as they are known before it is loaded."""
    folder = Path(ref).expanduser()
    if (folder / "config.json").exists():
        return {folder.resolve().name}
    return {ref, ref.split("@")[0].split("/")[0]}


def search_files(k: int):
    """A function giving a search tool over a folder of a user's own files, and how many documents it found."""

    def build(folder: Path):
        from data.search import SearchIndex, SearchTool

        index = SearchIndex.from_folder(folder)
        if index.documents == 0:
            skipped = "; ".join(f"{path}: {why}" for path, why in index.skipped[:3])
            raise ValueError(f"no document to search in {folder}" + (f" ({skipped})" if skipped else ""))
        return SearchTool(index, k=k), index.documents

    return build


def load_assistants(paths: list[Path], ref: str, settings) -> dict:
    """The assistants of `paths` (serve/assistants.py), checked and their files indexed, before any model loads."""
    from serve.assistants import load_assistants as load

    return load(paths, ref, served_names(ref), search_files(settings.tools.search_k))


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


def build_app(workdir: Path, ref: str, settings, store_url: str | None = None, poll_s: float = 5.0,
              assistants: list[Path] | dict | None = None, index: Path | None = None):
    """The app serving `ref`, with `assistants` (files, or assistants loaded by `load_assistants`) beside it."""
    from serve.app import create_app
    from serve.assistants import AssistantError
    from serve.engine import Served
    from serve.store import Store, default_url

    if not isinstance(assistants, dict):
        assistants = load_assistants(list(assistants or []), ref, settings)
    served = Served(registry_resolver(workdir, ref, index), max_batch=settings.max_batch, poll_s=poll_s,
                    tools=settings.tools)
    blind = [a for a in assistants.values() if "search" in a.tools and a.search is None
             and "search" not in served.current.tools]
    if blind:
        served.close()
        raise AssistantError(f"assistant file {blind[0].source}: tools: search has nothing to search: give the "
                             f"assistant files, or serve a model with a search index (--index)")
    store = Store(store_url or os.environ.get("FACTORY_STORE_URL") or default_url(workdir))
    return create_app(served, store, settings, assistants)


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
        poll_s: float = 5.0, threads: int | None = None, assistants: list[Path] | None = None,
        index: Path | None = None) -> None:
    import uvicorn

    if not is_loopback(host) and not settings.api_keys:
        raise ValueError(f"--host {host} is reachable from other machines: set FACTORY_API_KEYS (or --api-keys-file) "
                         "so that only key holders can use it")
    loaded = load_assistants(list(assistants or []), ref, settings)  # a bad file stops here, before the model loads
    from serve.engine import set_threads

    set_threads(threads)  # this process only serves: the engine may take the cores but one
    app = build_app(workdir, ref, settings, store_url, poll_s, loaded, index)
    served = app.state.served
    print(f"serving {served.name} v{served.current.version} ({ref}) on http://{host}:{port}  "
          f"(web chat /, API /v1, metrics /metrics); requests -> {app.state.store.url}", flush=True)
    tools = [n for n in settings.tools.enabled if n in served.current.tools]
    print(f"tools: {', '.join(tools) or 'none'}", flush=True)
    for note in served.current.notes:
        print(f"note: {note}", flush=True)
    for a in loaded.values():
        files = f", {a.documents} documents from {a.files}" if a.search is not None else ""
        print(f"assistant {a.id} ({a.source}): tools {', '.join(a.tools) or 'none'}{files}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        served.close()
        app.state.store.close()
